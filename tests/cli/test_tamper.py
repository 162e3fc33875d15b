"""`p2pnode ledger verify` on a store made as the CLI makes it and then damaged with plyvel
(or at the file level) while no process holds it: every kind of damage exits 1 and names
the author, seq and reason; damaged files give a clear message, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import plyvel
import pytest

from framework.console import run_cli as run

N = 20  # entries in the base chain: genesis and 19 notes


def entry_key(author: bytes, seq: int) -> bytes:
    return b"E" + author + seq.to_bytes(8, "big")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, str, bytes]:
    """A home made by `p2pnode init`, with N entries: (path, peer id, public key). The notes
    are appended by what `ledger append` runs when no node is up (``ops.ledger_append`` on
    the home's store, with its key), in this process: a CLI process each was 8 s of set-up.
    """
    from p2pnode.extensions import load
    from p2pnode.home import Home, now_ms
    from p2pnode.ledger import ops

    home = tmp_path_factory.mktemp("tamper") / "base"
    rc, out, err = run("init", "--json", home=home)
    assert rc == 0, err
    info = json.loads(out)
    loaded, h = load(), Home(home)
    key = h.signing_key(None)
    with h.open_store() as store:
        loaded.prepare(store)  # (as `ledger append` readies a store it opens itself)
        for i in range(2, N + 1):
            assert ops.ledger_append(store, key, loaded.registry, "note", {"text": f"note {i}"}, now_ms())["seq"] == i
    return home, info["peer_id"], bytes.fromhex(info["public_key"])


@pytest.fixture
def damaged(base, tmp_path):
    """A copy of the base home, and a way to edit its store with plyvel (no process holds it)."""
    src, peer, author = base
    home = tmp_path / "home"
    shutil.copytree(src, home)

    class Damaged:
        path = home
        store = home / "store"

        @staticmethod
        def edit(fn) -> None:
            db = plyvel.DB(str(home / "store"))
            try:
                fn(db)
            finally:
                db.close()

    Damaged.peer, Damaged.author = peer, author
    return Damaged


def verify(home: Path) -> tuple[int, str, str, dict | None]:
    """`ledger verify` in text and in JSON: (exit, text stdout+stderr, JSON stderr, report)."""
    rc, out, err = run("ledger", "verify", home=home)
    rc2, jout, jerr = run("ledger", "verify", "--json", home=home)
    assert rc == rc2
    assert "Traceback" not in err and "Traceback" not in jerr
    return rc, out + err, jerr, (json.loads(jout) if jout else None)


def problems_at(report: dict, peer: str) -> dict[int | None, list[str]]:
    by_seq: dict[int | None, list[str]] = {}
    for p in report["problems"]:
        assert p["message"]
        if p["author"] == peer:
            by_seq.setdefault(p["seq"], []).append(p["code"])
    return by_seq


def assert_named_in_text(text: str, peer: str, seq: int, code: str) -> None:
    """The human table has a row with this author, seq and problem code."""
    rows = [line.split() for line in text.splitlines()]
    assert any(r[:3] == [peer, str(seq), code] for r in rows if len(r) >= 3), text


def test_clean_store_verifies(base):
    home, peer, _ = base
    rc, text, jerr, report = verify(home)
    assert rc == 0
    assert f"ok: {N} entries in 1 chains verified" in text
    assert report["ok"] is True and report["entries"] == N and report["problems"] == []


@pytest.mark.parametrize("where", ["signature", "payload-text", "payload-structure"])
def test_changed_byte_in_an_entry(damaged, where):
    seq = 7

    def flip(db):
        value = bytearray(db.get(entry_key(damaged.author, seq)))
        if where == "signature":
            i = len(value) - 20  # inside the 64-byte signature at the end
        elif where == "payload-text":
            i = bytes(value).index(b"note 7") + 5  # "note 7" -> "note 6": still canonical
        else:
            i = 3  # the payload's first byte: its map header
        value[i] ^= 0x01
        db.put(entry_key(damaged.author, seq), bytes(value))

    damaged.edit(flip)
    rc, text, _, report = verify(damaged.path)

    assert rc == 1 and report["ok"] is False
    at = problems_at(report, damaged.peer)
    assert min(s for s in at if s is not None) == seq
    expected = {"signature": "bad_signature", "payload-text": "bad_signature"}.get(where)
    if expected:
        assert at[seq] == [expected]
    assert_named_in_text(text, damaged.peer, seq, at[seq][0])
    # The head record claims seq N, past the break: that is named too, with where the
    # valid chain really ends.
    assert "bad_head" in at[N]
    [head_problem] = [p for p in report["problems"] if p["code"] == "bad_head"]
    assert f"ends at seq {seq - 1}" in head_problem["message"]


def test_deleted_entry(damaged):
    seq = 9
    damaged.edit(lambda db: db.delete(entry_key(damaged.author, seq)))
    rc, text, _, report = verify(damaged.path)

    assert rc == 1
    at = problems_at(report, damaged.peer)
    assert at[seq][0] == "missing_entry"
    assert min(s for s in at if s is not None) == seq
    assert "bad_head" in at[N]  # the head still says N
    assert "bad_index" in at[seq]  # the index still points at the deleted entry
    assert_named_in_text(text, damaged.peer, seq, "missing_entry")


def test_deleted_last_entry(damaged):
    damaged.edit(lambda db: db.delete(entry_key(damaged.author, N)))
    rc, text, _, report = verify(damaged.path)
    assert rc == 1
    at = problems_at(report, damaged.peer)
    assert sorted(at) == [N] and sorted(at[N]) == ["bad_head", "bad_index"]


def test_swapped_entries(damaged):
    def swap(db):
        a, b = db.get(entry_key(damaged.author, 5)), db.get(entry_key(damaged.author, 6))
        db.put(entry_key(damaged.author, 5), b)
        db.put(entry_key(damaged.author, 6), a)

    damaged.edit(swap)
    rc, text, _, report = verify(damaged.path)

    assert rc == 1
    at = problems_at(report, damaged.peer)
    assert min(s for s in at if s is not None) == 5
    assert at[5] == ["bad_seq"]
    assert "misplaced" in at[6]
    assert_named_in_text(text, damaged.peer, 5, "bad_seq")


def test_deleted_head_record(damaged):
    damaged.edit(lambda db: db.delete(b"H" + damaged.author))
    rc, text, _, report = verify(damaged.path)
    assert rc == 1
    # (the change feed still names the chain whose head record is gone: I8 says so too)
    assert problems_at(report, damaged.peer) == {N: ["bad_head"], None: ["bad_change_feed"]}
    assert_named_in_text(text, damaged.peer, N, "bad_head")


def test_head_record_pointing_back(damaged):
    def rewind(db):
        value = db.get(b"H" + damaged.author)
        db.put(b"H" + damaged.author, (N - 3).to_bytes(8, "big") + value[8:])

    damaged.edit(rewind)
    rc, text, _, report = verify(damaged.path)
    assert rc == 1
    assert problems_at(report, damaged.peer) == {N - 3: ["bad_head"]}


def test_malformed_head_record(damaged):
    damaged.edit(lambda db: db.put(b"H" + damaged.author, b"\x00\x01\x02"))
    rc, text, _, report = verify(damaged.path)
    assert rc == 1
    assert problems_at(report, damaged.peer) == {None: ["bad_head"]}
    # Commands that read heads refuse clearly instead of crashing.
    for args in (("ledger", "heads"), ("ledger", "show"), ("ledger", "export"),
                 ("ledger", "append", "--kind", "note", "--body", '{"text": "x"}')):
        rc, out, err = run(*args, home=damaged.path)
        assert rc == 1 and "Traceback" not in err, (args, err)
        assert "head record" in err and "malformed" in err


@pytest.mark.parametrize("target", ["another-entry", "no-entry", "malformed"])
def test_stray_index_record(damaged, target):
    value = {
        "another-entry": damaged.author + (3).to_bytes(8, "big"),
        "no-entry": damaged.author + (N + 5).to_bytes(8, "big"),
        "malformed": b"\x01\x02\x03",
    }[target]
    damaged.edit(lambda db: db.put(b"I" + b"\x5a" * 32, value))
    rc, text, _, report = verify(damaged.path)

    assert rc == 1
    assert [p["code"] for p in report["problems"]] == ["bad_index"]
    p = report["problems"][0]
    assert "5a5a5a5a" in p["message"]
    if target == "another-entry":
        assert (p["author"], p["seq"]) == (damaged.peer, 3)
    elif target == "no-entry":
        assert (p["author"], p["seq"]) == (damaged.peer, N + 5)
    assert "bad_index" in text


def _compact(store: Path) -> None:
    db = plyvel.DB(str(store))
    db.compact_range()  # writes what the log holds into .ldb table files
    db.close()


def _truncate(paths: list[Path]) -> None:
    assert paths
    for p in paths:
        os.truncate(p, p.stat().st_size // 2)


def assert_clear_failure(home: Path) -> None:
    rc, text, jerr, report = verify(home)
    assert rc == 1
    assert "DAMAGED" in text and str(home / "store") in text
    assert report is not None and report["ok"] is False  # --json still prints a report
    [p] = report["problems"]
    assert p["code"] in ("store_corrupt", "store_error") and str(home / "store") in p["message"]
    assert "b'" not in p["message"]
    # Other commands fail as clearly.
    for args in (("ledger", "heads"), ("ledger", "show"), ("ledger", "export")):
        rc, out, err = run(*args, home=home)
        assert rc == 1 and "Traceback" not in err and "p2pnode: error:" in err, (args, err)


def test_truncated_table_files(damaged):
    _compact(damaged.store)
    _truncate(list(damaged.store.glob("*.ldb")))
    assert_clear_failure(damaged.path)


def test_truncated_manifest(damaged):
    _compact(damaged.store)
    _truncate(list(damaged.store.glob("MANIFEST-*")))
    assert_clear_failure(damaged.path)


def test_truncated_log_loses_whole_batches_only(damaged, base):
    """A log cut short looks exactly like a crash during a write, and LevelDB recovers it so:
    the batches in the cut-off tail are dropped whole. The store stays consistent (verify
    exits 0) and holds the chain as it was before the lost write. An acknowledged write
    that the disk lost cannot be detected from the store alone."""
    home = damaged.path
    before = json.loads(run("ledger", "heads", "--json", home=home)[1])
    rc, out, err = run("ledger", "append", "--kind", "note", "--body", '{"text": "lost"}', home=home)
    assert rc == 0, err
    logs = [p for p in damaged.store.glob("*.log") if p.stat().st_size > 0]
    assert len(logs) == 1, "setup: the last append's batch should be in the log"
    _truncate(logs)

    rc, text, jerr, report = verify(home)
    assert rc == 0, text
    assert report["ok"] is True and report["entries"] == N
    assert json.loads(run("ledger", "heads", "--json", home=home)[1]) == before
    rc, out, err = run("ledger", "append", "--kind", "note", "--body", '{"text": "again"}', "--json", home=home)
    assert rc == 0 and json.loads(out)["seq"] == N + 1
    assert verify(home)[0] == 0
