"""``p2pnode ledger ...``: append to, show, verify, export and import signed chains."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .main import Ctx, handles_errors, json_option, pass_ctx, passphrase_option, read_passphrase
from .output import FAILED, emit_json, fail, iso_ms, short, table

DEFAULT_SHOW_LIMIT = 100


def _author(value: str | None, c: Ctx) -> bytes:
    """The public key named by a peer ID option, or this node's own."""
    from protocol.keys import KeyFormatError, public_key_from_peer_id

    if value is None:
        return c.home.public_key()
    try:
        return public_key_from_peer_id(value)
    except KeyFormatError as e:
        raise click.BadParameter(str(e), param_hint="--author") from None


@click.group()
def ledger() -> None:
    """The signed, hash-chained ledger: this node's own chain and the chains it holds."""


@ledger.command()
@click.option("--kind", required=True, help="Entry kind, e.g. note (see `p2pnode ledger kinds`).")
@click.option("--body", required=True, metavar="JSON", help='Entry body as JSON, e.g. \'{"text": "hello"}\'.')
@passphrase_option
@json_option
@pass_ctx
@handles_errors
def append(c: Ctx, kind: str, body: str, passphrase_file: Path | None, as_json: bool) -> None:
    """Sign and append an entry to this node's own chain.

    The body is converted to canonical MessagePack: integers stay exact, {"$bin": "hex"}
    is binary, and floats are refused (amounts are minor units, rates basis points).
    A body of a registered kind must satisfy that kind's rules; other kinds are stored
    as they are.
    """
    from p2pnode.home import now_ms
    from p2pnode.ledger import entry_json
    from protocol import jsonform
    from protocol.errors import ProtocolError

    try:
        value = jsonform.parse(body)
    except ProtocolError as e:
        fail(f"--body refused: {e.message}", code=e.code)
    key = c.home.signing_key(read_passphrase(passphrase_file))
    with c.home.open_store() as store:
        try:
            entry = store.append_one(key, kind, value, now_ms=now_ms(), registry=c.registry)
        except ProtocolError as e:
            fail(f"entry refused: {e.message}", code=e.code)
    view = entry_json(entry)
    if as_json:
        emit_json(view)
    else:
        click.echo(f"appended seq {entry.seq} ({entry.kind}) id {view['id']}")


@ledger.command()
@click.option("--author", metavar="PEER", help="Whose chain (peer ID); default this node's.")
@click.option("--from", "from_seq", type=click.IntRange(min=1), default=1, show_default=True, help="First seq.")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_SHOW_LIMIT, show_default=True, help="At most this many entries.")
@json_option
@pass_ctx
@handles_errors
def show(c: Ctx, author: str | None, from_seq: int, limit: int, as_json: bool) -> None:
    """List the entries of a chain, oldest first."""
    from p2pnode.ledger import entry_json
    from protocol.entry import parse_entry
    from protocol.keys import peer_id

    pk = _author(author, c)
    with c.home.open_store() as store:
        head = store.head(pk)
        forked = pk in store.forked_authors()
        entries = [parse_entry(d) for d in store.chain(pk, start=from_seq, limit=limit)]
    registry = c.registry
    if as_json:
        emit_json(
            {
                "author": peer_id(pk),
                "head_seq": head.seq if head else 0,
                "forked": forked,
                "entries": [dict(entry_json(e), known_kind=e.kind in registry) for e in entries],
            }
        )
        return
    if head is None:
        fail(f"no chain of {peer_id(pk)} is stored", code="unknown_author")
    title = f"{peer_id(pk)}: {head.seq} entries" + ("  FORKED: this author signed two histories" if forked else "")
    rows = [
        [
            str(e.seq),
            iso_ms(e.ts),
            e.kind + ("" if e.kind in registry else " (unknown)"),
            e.id.hex()[:16],
            short(json.dumps(entry_json(e)["body"], ensure_ascii=False), 60),
        ]
        for e in entries
    ]
    table(title, ["seq", "time (UTC)", "kind", "id", "body"], rows)
    last = entries[-1].seq if entries else from_seq - 1
    if last < head.seq:
        click.echo(f"... {head.seq - last} more: use --from {last + 1}")


@ledger.command()
@json_option
@pass_ctx
@handles_errors
def heads(c: Ctx, as_json: bool) -> None:
    """List every chain held, with its last seq, id and time."""
    from protocol.keys import peer_id

    with c.home.open_store() as store:
        hs = sorted(store.heads().values(), key=lambda h: peer_id(h.author))
        forked = store.forked_authors()
        own = c.home.public_key()
    rows = [
        {"author": peer_id(h.author), "seq": h.seq, "id": h.id.hex(), "ts": h.ts, "own": h.author == own, "forked": h.author in forked}
        for h in hs
    ]
    if as_json:
        emit_json(rows)
        return
    table(
        None,
        ["author", "seq", "last entry", "time (UTC)", ""],
        [[r["author"], str(r["seq"]), r["id"][:16], iso_ms(r["ts"]), ("own " if r["own"] else "") + ("FORKED" if r["forked"] else "")] for r in rows],
    )


@ledger.command()
@json_option
@pass_ctx
@handles_errors
def verify(c: Ctx, as_json: bool) -> None:
    """Re-check every stored chain and index: signatures, seq, links, timestamps, bytes.

    Exits 0 if all is sound, 1 naming each damaged author and seq otherwise.
    """
    from p2pnode.store import StoreError, StoreLocked, StoreMissing
    from p2pnode.verify import verify_store
    from protocol.keys import peer_id

    try:
        store = c.home.open_store()
    except (StoreLocked, StoreMissing):
        raise
    except StoreError as e:
        # Corrupt or truncated files (LevelDB reports some as I/O errors): damage, not a crash.
        _report_unopenable(str(e), as_json, e.code)
        return
    with store:
        progress = None
        if not as_json and sys.stderr.isatty():
            progress = lambda n: click.echo(f"\r  {n} entries checked", nl=False, err=True)  # noqa: E731
        report = verify_store(store, c.registry, progress)
        if progress:
            click.echo("", err=True)
    problems = [
        {"code": p.code, "message": p.message, "author": peer_id(p.author) if p.author and len(p.author) == 32 else None, "seq": p.seq}
        for p in report.problems
    ]
    summary = {
        "ok": report.ok,
        "authors": report.authors,
        "entries": report.entries,
        "unknown_kinds": report.unknown_kinds,
        "fork_proofs": report.fork_proofs,
        "problems": problems,
        "problems_truncated": report.truncated,
    }
    if as_json:
        emit_json(summary)
    elif report.ok:
        click.echo(
            f"ok: {report.entries} entries in {report.authors} chains verified"
            + (f", {report.unknown_kinds} of unknown kinds (signatures and links checked)" if report.unknown_kinds else "")
            + (f", {report.fork_proofs} fork proofs" if report.fork_proofs else "")
        )
    else:
        table(
            f"DAMAGED: {len(problems)} problem(s) in {report.entries} entries",
            ["author", "seq", "problem", "detail"],
            [[p["author"] or "-", str(p["seq"] or "-"), p["code"], p["message"]] for p in problems],
        )
    if not report.ok:
        sys.exit(FAILED)


def _report_unopenable(message: str, as_json: bool, code: str = "store_corrupt") -> None:
    if as_json:
        emit_json({"ok": False, "problems": [{"code": code, "message": message, "author": None, "seq": None}]})
    else:
        click.echo(f"DAMAGED: {message}", err=True)
    sys.exit(FAILED)


@ledger.command()
@click.option("--author", metavar="PEER", help="Export only this chain (peer ID); default all chains.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE (default stdout).")
@pass_ctx
@handles_errors
def export(c: Ctx, author: str | None, output: Path | None) -> None:
    """Write chains as JSON lines: one entry a line, with its exact envelope in hex."""
    from p2pnode.ledger import export_lines

    with c.home.open_store() as store:
        authors = [_author(author, c)] if author else sorted(store.heads())
        if output is None:
            n = 0
            for line in export_lines(store, authors):
                click.echo(line)
                n += 1
            return
        tmp = output.with_name(output.name + ".partial")
        n = 0
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for line in export_lines(store, authors):
                    f.write(line + "\n")
                    n += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)  # only left if the export failed
    click.echo(f"exported {n} entries of {len(authors)} chain(s) to {output}", err=True)


@ledger.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@json_option
@pass_ctx
@handles_errors
def import_(c: Ctx, file: Path, as_json: bool) -> None:
    """Verify a JSON-lines export and store its chains. Stores nothing of a bad file.

    Entries already held are skipped. An entry that differs from a held one at the same
    author and seq is a fork: the import is refused and the fork proof is recorded.
    """
    from p2pnode.ledger import read_export
    from p2pnode.store import IngestRefused

    try:
        if str(file) == "-":
            envelopes = read_export(sys.stdin)
        else:
            with open(file, encoding="utf-8") as f:
                envelopes = read_export(f)
    except UnicodeDecodeError:
        fail(f"{file} is not UTF-8 text", code="bad_export_file")
    with c.home.open_store() as store:
        try:
            report = store.ingest(envelopes, registry=c.registry, strict=True)
        except IngestRefused as e:
            _refuse_import(e.report)
    summary = {"added": len(report.added), "duplicates": report.duplicates, "lines": len(envelopes)}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"imported {summary['added']} entries ({summary['duplicates']} already held)")


def _refuse_import(report) -> None:
    from protocol.keys import peer_id

    if report.errors:
        errs = [
            {"author": peer_id(x.author) if len(x.author) == 32 else None, "seq": x.seq, "code": x.code, "message": x.message}
            for x in report.errors
        ]
        first = errs[0]
        fail(
            f"import refused, nothing stored: {first['author'] or 'an entry'} seq {first['seq']}: {first['message']}",
            code="import_refused",
            details=errs,
        )
    f0 = report.forks[0]
    fail(
        f"import refused, nothing stored: {peer_id(f0.author)} forked at seq {f0.seq} "
        "(the file's entry differs from the one held); the fork proof was recorded",
        code="fork",
        details=[{"author": peer_id(p.author), "seq": p.seq} for p in report.forks],
    )


@ledger.command()
@json_option
@pass_ctx
@handles_errors
def kinds(c: Ctx, as_json: bool) -> None:
    """List the entry kinds this node knows (core and extensions)."""
    rows = [{"kind": k.name, "description": k.description} for k in c.registry]
    if as_json:
        emit_json(rows)
    else:
        table(None, ["kind", "description"], [[r["kind"], r["description"]] for r in rows])
