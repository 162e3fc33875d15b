"""Ledger files and views: the JSON form of entries, JSON-lines export and import.

Export format (docs/protocol.md, "Export files"): UTF-8, one JSON object a line,

    {"author": "12D3KooW...", "seq": 1, "prev": hex, "ts": ms, "kind": "genesis",
     "body": <JSON form>, "id": hex, "envelope": hex}

in (author, seq) order. ``envelope`` is authoritative: an importer decodes and verifies it,
and refuses a line whose other fields disagree with it.
"""

from __future__ import annotations

from protocol.errors import CodedError

import json
from typing import Iterable, Iterator

from protocol.entry import Entry, parse_entry
from protocol.errors import ProtocolError
from protocol.jsonform import to_json
from protocol.keys import peer_id

from p2pnode.ledger.store import Store


class ExportFileError(CodedError):
    code = "bad_export_file"


def entry_json(entry: Entry) -> dict:
    """The JSON-ready view of an entry, with its exact envelope in hex."""
    return {
        "author": peer_id(entry.author),
        "seq": entry.seq,
        "prev": entry.prev.hex(),
        "ts": entry.ts,
        "kind": entry.kind,
        "body": to_json(entry.body),
        "id": entry.id.hex(),
        "envelope": entry.envelope.hex(),
    }


def export_lines(store: Store, authors: Iterable[bytes]) -> Iterator[str]:
    """One JSON line (without newline) per stored entry of each author, in seq order."""
    for author in authors:
        for data in store.chain(author):
            yield json.dumps(entry_json(parse_entry(data)), separators=(",", ":"))


def read_export(lines: Iterable[str]) -> list[bytes]:
    """The envelopes of an export file, each verified and matching its line's fields.

    Raises ``ExportFileError`` naming the first bad line and why.
    """
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("envelope"), str):
                raise ExportFileError('no "envelope" hex string')
            data = bytes.fromhex(obj["envelope"])
            entry = parse_entry(data)
            view = entry_json(entry)
            for k, v in obj.items():
                if k in view and view[k] != v:
                    raise ExportFileError(f"field {k!r} does not match the envelope")
        except ExportFileError as e:
            raise ExportFileError(f"line {n}: {e}") from None
        except ProtocolError as e:
            raise ExportFileError(f"line {n}: envelope invalid ({e.code}): {e.message}") from None
        except ValueError as e:
            raise ExportFileError(f"line {n}: not a JSON object with hex envelope: {e}") from None
        except RecursionError:  # json nests arrays and objects recursively, unbounded
            raise ExportFileError(f"line {n}: not a JSON object with hex envelope: it nests too deep") from None
        out.append(data)
    return out
