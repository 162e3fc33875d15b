"""The command line, run as the real console script in subprocesses: init, id, passphrases,
append, show, heads, exit codes, JSON errors, export and import (good, bad and forked files)."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from p2pnode.keyfile import read_key
from p2pnode.ledger.export import entry_json
from p2pnode.ledger.store import Store
from protocol.chain import Head
from protocol.entry import next_entry
from protocol.keys import public_key_from_peer_id

from framework.console import run_cli as run

OWN = 1  # entries in a fresh node's chain (its genesis)


# -- helpers ----------------------------------------------------------------------------


def ok(*args, home, **kw) -> str:
    rc, out, err = run(*args, home=home, **kw)
    assert rc == 0, f"{args}: exit {rc}\n{err}"
    assert "Traceback" not in err
    return out


def ok_json(*args, home, **kw):
    return json.loads(ok(*args, "--json", home=home, **kw))


def json_error(err: str) -> dict:
    """The one JSON error object a --json command printed on stderr."""
    doc = json.loads(err)
    assert set(doc) == {"error"}
    assert {"code", "message"} <= set(doc["error"])
    assert isinstance(doc["error"]["code"], str) and doc["error"]["message"]
    return doc["error"]


def head_seq(home: Path, **kw) -> int:
    return ok_json("ledger", "show", home=home, **kw)["head_seq"]


def heads(home: Path) -> dict[str, dict]:
    return {h["author"]: h for h in ok_json("ledger", "heads", home=home)}


def append_notes(home: Path, n: int, prefix: str = "note") -> None:
    for i in range(n):
        ok("ledger", "append", "--kind", "note", "--body", json.dumps({"text": f"{prefix} {i}"}), home=home)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- init and id ------------------------------------------------------------------------


def test_init_creates_key_config_and_store(home):
    rc, out, err = run("init", "--name", "alice", "--json", home=home)
    assert rc == 0, err
    info = json.loads(out)
    assert info["peer_id"].startswith("12D3KooW")
    assert info["encrypted"] is False
    assert Path(info["home"]) == home

    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    key_file = home / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    doc = json.loads(key_file.read_text())
    assert doc["peer_id"] == info["peer_id"] and doc["public_key"] == info["public_key"]
    assert "seed" in doc and "ciphertext" not in doc
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["node"]["name"] == "alice"
    assert (home / "store" / "CURRENT").is_file()

    chain = ok_json("ledger", "show", home=home)
    assert chain["author"] == info["peer_id"] and chain["head_seq"] == 1
    [genesis] = chain["entries"]
    assert genesis["kind"] == "genesis" and genesis["id"] == info["genesis_id"]
    assert genesis["body"] == {"protocol": "p2plend/1", "name": "alice"}
    assert ok_json("ledger", "verify", home=home)["ok"] is True


def test_init_twice_is_refused_and_changes_nothing(node):
    home, info = node
    files = {p.name: p.read_bytes() for p in (home / "node.key", home / "config.toml")}
    before = heads(home)

    rc, out, err = run("init", home=home)
    assert rc == 3
    assert "already holds a node" in err and str(home) in err
    assert "Traceback" not in err and out == ""
    rc, out, err = run("init", "--json", home=home)
    assert rc == 3 and out == ""
    assert json_error(err)["code"] == "already_initialised"

    assert {p.name: p.read_bytes() for p in (home / "node.key", home / "config.toml")} == files
    assert heads(home) == before
    assert ok_json("id", home=home)["peer_id"] == info["peer_id"]


def test_id_matches_init(node):
    home, info = node
    out = ok("id", home=home)
    assert info["peer_id"] in out and info["public_key"] in out
    doc = ok_json("id", home=home)
    assert doc["peer_id"] == info["peer_id"] and doc["peer_id"].startswith("12D3KooW")
    assert doc["public_key"] == info["public_key"]
    assert public_key_from_peer_id(doc["peer_id"]).hex() == doc["public_key"]


@pytest.mark.parametrize("via", ["file", "env"])
def test_passphrase_protects_the_key(home, tmp_path, via):
    right, wrong = tmp_path / "right.txt", tmp_path / "wrong.txt"
    right.write_text("correct horse battery\n")
    wrong.write_text("incorrect horse\n")

    def given(secret_file: Path | None) -> dict:
        if secret_file is None:
            return {}
        if via == "file":
            return {"args": ["--passphrase-file", str(secret_file)]}
        return {"env": {"P2PNODE_PASSPHRASE": secret_file.read_text().splitlines()[0]}}

    def cmd(*args, secret_file=None, json_out=False):
        g = given(secret_file)
        return run(*args, *g.get("args", []), *(["--json"] if json_out else []), home=home, env=g.get("env"))

    rc, out, err = cmd("init", secret_file=right, json_out=True)
    assert rc == 0, err
    info = json.loads(out)
    assert info["encrypted"] is True
    doc = json.loads((home / "node.key").read_text())
    assert "seed" not in doc and "ciphertext" in doc
    assert right.read_text().strip() not in (home / "node.key").read_text()
    assert ok_json("id", home=home)["peer_id"] == info["peer_id"]  # no passphrase needed

    note = ("ledger", "append", "--kind", "note", "--body", '{"text": "signed"}')
    rc, out, err = cmd(*note)
    assert rc == 5 and "--passphrase-file" in err and "Traceback" not in err
    rc, out, err = cmd(*note, json_out=True)
    assert rc == 5 and json_error(err)["code"] == "passphrase_needed"
    rc, out, err = cmd(*note, secret_file=wrong)
    assert rc == 5 and "wrong passphrase" in err
    assert head_seq(home) == 1

    rc, out, err = cmd(*note, secret_file=right, json_out=True)
    assert rc == 0, err
    assert json.loads(out)["seq"] == 2
    assert head_seq(home) == 2


# -- append -----------------------------------------------------------------------------


def test_append_note_and_unknown_kind(node):
    home, info = node
    e2 = ok_json("ledger", "append", "--kind", "note", "--body", '{"text": "hello"}', home=home)
    assert (e2["seq"], e2["kind"], e2["body"], e2["author"]) == (2, "note", {"text": "hello"}, info["peer_id"])
    assert e2["prev"] == info["genesis_id"]
    body = {"amount": 2**64 - 1, "neg": -(2**63), "raw": {"$bin": "00ff"}, "list": [1, "two", None, True]}
    e3 = ok_json("ledger", "append", "--kind", "x.custom", "--body", json.dumps(body), home=home)
    assert (e3["seq"], e3["kind"], e3["body"]) == (3, "x.custom", body)
    out = ok("ledger", "append", "--kind", "note", "--body", '{"text": "text mode"}', home=home)
    assert "appended seq 4" in out

    chain = ok_json("ledger", "show", home=home)
    assert [(e["seq"], e["kind"], e["known_kind"]) for e in chain["entries"]] == [
        (1, "genesis", True), (2, "note", True), (3, "x.custom", False), (4, "note", True)
    ]
    assert chain["entries"][2]["id"] == e3["id"] and chain["entries"][2]["envelope"] == e3["envelope"]
    report = ok_json("ledger", "verify", home=home)
    assert (report["ok"], report["entries"], report["unknown_kinds"]) == (True, 4, 1)


@pytest.mark.parametrize(
    "kind, body, reason",
    [
        ("note", '{"text": "x", "amount": 1.5}', "not an integer"),
        ("x.custom", '{"rate": 1e3}', "not an integer"),
        ("note", '{"text": "unterminated', "not valid JSON"),
        ("note", '{"txt": "no text field"}', "lacks field 'text'"),
        ("x.custom", '{"big": 18446744073709551616}', "outside"),
        ("Not A Kind", '{"text": "x"}', "kind"),
    ],
    ids=["float", "exponent", "invalid-json", "note-without-text", "int-2**64", "bad-kind"],
)
def test_append_refuses_bad_bodies(node, kind, body, reason):
    home, _ = node
    rc, out, err = run("ledger", "append", "--kind", kind, "--body", body, home=home)
    assert rc == 1, err
    assert out == ""
    assert reason in err and "Traceback" not in err
    rc, out, err = run("ledger", "append", "--kind", kind, "--body", body, "--json", home=home)
    assert rc == 1 and out == ""
    assert reason in json_error(err)["message"]
    assert head_seq(home) == OWN


# -- show, heads ------------------------------------------------------------------------


def test_show_author_from_limit(node):
    home, info = node
    append_notes(home, 5)  # seqs 2..6
    chain = ok_json("ledger", "show", "--from", "3", "--limit", "2", home=home)
    assert chain["head_seq"] == 6 and chain["forked"] is False
    assert [e["seq"] for e in chain["entries"]] == [3, 4]
    assert [e["body"]["text"] for e in chain["entries"]] == ["note 1", "note 2"]
    mine = ok_json("ledger", "show", "--author", info["peer_id"], "--limit", "100", home=home)
    assert [e["seq"] for e in mine["entries"]] == [1, 2, 3, 4, 5, 6]
    assert ok_json("ledger", "show", "--from", "7", home=home)["entries"] == []

    text = ok("ledger", "show", "--from", "2", "--limit", "2", home=home)
    assert info["peer_id"] in text and "note 0" in text and "note 1" in text and "note 2" not in text
    assert "more: use --from 4" in text

    stranger = "12D3KooWJvSiF1UptAPforjwh9Jb8mSxRZaxCAZoqdKBa7nyt4pY"
    assert ok_json("ledger", "show", "--author", stranger, home=home) == {
        "author": stranger, "head_seq": 0, "forked": False, "entries": []
    }
    rc, out, err = run("ledger", "show", "--author", stranger, home=home)
    assert rc == 1 and "no chain" in err

    [h] = ok_json("ledger", "heads", home=home)
    assert (h["author"], h["seq"], h["own"], h["forked"]) == (info["peer_id"], 6, True, False)
    assert h["id"] == mine["entries"][-1]["id"]


@pytest.mark.parametrize("args", [("--author", "notapeerid"), ("--from", "0"), ("--limit", "x")])
def test_show_bad_option_values_are_usage_errors(node, args):
    home, _ = node
    rc, out, err = run("ledger", "show", *args, home=home)
    assert rc == 2 and out == "" and "Traceback" not in err
    assert args[0] in err


def test_bad_author_with_json_is_a_json_usage_error(node):
    home, _ = node
    rc, out, err = run("ledger", "show", "--author", "notapeerid", "--json", home=home)
    assert rc == 2 and out == ""
    assert "notapeerid" in json_error(err)["message"]


# -- homes, locks, JSON errors ----------------------------------------------------------


UNINITIALISED = [
    ("id",),
    ("ledger", "show"),
    ("ledger", "heads"),
    ("ledger", "verify"),
    ("ledger", "export"),
    ("ledger", "append", "--kind", "note", "--body", '{"text": "x"}'),
]


@pytest.mark.parametrize("args", UNINITIALISED, ids=lambda a: " ".join(a[:2]))
def test_commands_on_an_uninitialised_home_exit_3(home, args):
    rc, out, err = run(*args, home=home)
    assert rc == 3 and out == ""
    assert "init" in err and str(home) in err and "Traceback" not in err
    if args[-1] != "export":  # export prints no JSON, so it has no --json
        rc, out, err = run(*args, "--json", home=home)
        assert rc == 3 and out == ""
        assert json_error(err)["code"] == "not_initialised"
    assert not home.exists()


def test_import_into_an_uninitialised_home_exits_3(node, new_home, tmp_path):
    src, _ = node
    f = tmp_path / "x.jsonl"
    ok("ledger", "export", "--output", f, home=src)
    empty = new_home("empty")
    rc, out, err = run("ledger", "import", f, home=empty)
    assert rc == 3 and "init" in err
    assert not empty.exists()


def test_home_from_environment(node):
    home, info = node
    rc, out, err = run("id", "--json", env={"P2PNODE_HOME": str(home)})
    assert rc == 0, err
    assert json.loads(out)["peer_id"] == info["peer_id"]


def test_store_held_by_another_process_exits_4(node):
    home, _ = node
    with Store(home / "store"):
        rc, out, err = run("ledger", "heads", home=home)
        assert rc == 4 and "in use" in err
        rc, out, err = run("ledger", "append", "--kind", "note", "--body", '{"text": "x"}', "--json", home=home)
        assert rc == 4 and json_error(err)["code"] == "node_running"
    assert head_seq(home) == OWN


# -- export and import ------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A node of its own identity with a few entries, and its export file:
    (home, info, file, lines). Shared by the tests of this module: read it, never change it."""
    base = tmp_path_factory.mktemp("exported")
    home = base / "src"
    info = json.loads(ok("init", "--json", home=home))
    append_notes(home, 2)
    ok("ledger", "append", "--kind", "x.custom", "--body", '{"v": [1, {"$bin": "ab"}]}', home=home)
    append_notes(home, 2, prefix="late")  # seqs 2..6
    f = base / "export.jsonl"
    rc, out, err = run("ledger", "export", "--output", f, home=home)
    assert rc == 0 and out == "" and "exported 6 entries" in err
    lines = f.read_text().splitlines()
    return home, info, f, lines


def test_export_to_stdout_and_file_agree(exported):
    home, info, f, lines = exported
    assert ok("ledger", "export", home=home).splitlines() == lines
    assert ok("ledger", "export", "--author", info["peer_id"], home=home).splitlines() == lines
    rows = [json.loads(line) for line in lines]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["author"] == info["peer_id"] for r in rows)
    assert rows[0]["id"] == info["genesis_id"]
    assert rows[3]["kind"] == "x.custom" and rows[3]["body"] == {"v": [1, {"$bin": "ab"}]}
    assert not list(f.parent.glob("*.partial"))


def test_import_into_a_fresh_home(exported, node):
    src, info, f, lines = exported
    dst, _ = node
    own_before = heads(dst)

    summary = ok_json("ledger", "import", f, home=dst)
    assert summary == {"added": 6, "duplicates": 0, "lines": 6}

    got = heads(dst)
    want = heads(src)[info["peer_id"]]
    assert got[info["peer_id"]]["seq"] == 6 and got[info["peer_id"]]["id"] == want["id"]
    assert got[info["peer_id"]]["own"] is False
    for author, h in own_before.items():
        assert got[author] == h
    report = ok_json("ledger", "verify", home=dst)
    assert (report["ok"], report["authors"], report["entries"], report["unknown_kinds"]) == (True, 2, 7, 1)
    shown = ok_json("ledger", "show", "--author", info["peer_id"], home=dst)
    assert [e["envelope"] for e in shown["entries"]] == [json.loads(line)["envelope"] for line in lines]

    again = ok_json("ledger", "import", f, home=dst)
    assert again == {"added": 0, "duplicates": 6, "lines": 6}
    text = ok("ledger", "import", "-", home=dst, input=f.read_text())
    assert "imported 0 entries (6 already held)" in text
    assert heads(dst) == got


def _refused_import(home: Path, f: Path, before: dict[str, tuple[int, str]]) -> tuple[str, dict]:
    """Import ``f`` twice (text, then --json), expecting exit 1 both times and the heads
    still ``before`` (author -> (seq, id))."""
    rc, out, err = run("ledger", "import", f, home=home)
    assert rc == 1 and out == "" and "Traceback" not in err
    rc, out, err2 = run("ledger", "import", f, "--json", home=home)
    assert rc == 1 and out == ""
    assert {a: (h["seq"], h["id"]) for a, h in heads(home).items()} == before
    return err, json_error(err2)


def _flip_envelope_byte(line: str, at: int) -> str:
    row = json.loads(line)
    env = bytearray.fromhex(row["envelope"])
    env[at if at >= 0 else len(env) + at] ^= 0x01
    row["envelope"] = env.hex()
    return json.dumps(row)


@pytest.mark.parametrize(
    "damage",
    ["signature-byte", "payload-byte", "seq-field", "id-field", "missing-middle", "garbage", "not-utf8", "no-envelope"],
)
def test_bad_import_file_stores_nothing(exported, node, tmp_path, damage):
    src, info, f, lines = exported
    dst, own = node
    before = {own["peer_id"]: (1, own["genesis_id"])}  # its genesis only
    bad = list(lines)
    if damage == "signature-byte":
        bad[2] = _flip_envelope_byte(bad[2], -10)
    elif damage == "payload-byte":
        bad[2] = _flip_envelope_byte(bad[2], 40)
    elif damage == "seq-field":
        row = json.loads(bad[2])
        row["seq"] = 4
        bad[2] = json.dumps(row)
    elif damage == "id-field":
        row = json.loads(bad[2])
        row["id"] = "00" * 32
        bad[2] = json.dumps(row)
    elif damage == "missing-middle":
        del bad[2]
    elif damage == "garbage":
        bad[2] = "this is not JSON at all"
    elif damage == "no-envelope":
        bad[2] = json.dumps({k: v for k, v in json.loads(bad[2]).items() if k != "envelope"})
    path = tmp_path / "bad.jsonl"
    if damage == "not-utf8":
        path.write_bytes(b"\xff\xfe\x00garbage\n")
    else:
        write_lines(path, bad)

    err, jerr = _refused_import(dst, path, before)

    assert "nothing stored" in err or "line 3" in err or "UTF-8" in err
    if damage == "missing-middle":
        assert jerr["code"] == "import_refused"
        assert f"{info['peer_id']} seq 3" in err
        assert jerr["details"][0]["seq"] == 3 and jerr["details"][0]["code"] == "bad_seq"
    elif damage == "not-utf8":
        assert jerr["code"] == "bad_export_file"
    else:
        assert jerr["code"] == "bad_export_file" and "line 3" in jerr["message"]
    assert ok_json("ledger", "verify", home=dst)["entries"] == 1


def test_import_of_a_fork_is_refused_and_recorded(exported, node, tmp_path):
    src, info, f, lines = exported
    author = info["peer_id"]
    dst, _ = node
    ok("ledger", "import", f, home=dst)
    before = heads(dst)

    key = read_key(src / "node.key")
    assert key.peer_id == author
    seq2 = json.loads(lines[1])
    head2 = Head(key.public_key, 2, bytes.fromhex(seq2["id"]), seq2["ts"])
    other3 = next_entry(key, head2, now_ms=seq2["ts"] + 1, kind="note", body={"text": "the other history"})
    assert other3.seq == 3 and other3.id.hex() != json.loads(lines[2])["id"]
    fork_file = write_lines(tmp_path / "fork.jsonl", [lines[0], lines[1], json.dumps(entry_json(other3))])

    rc, out, err = run("ledger", "import", fork_file, "--json", home=dst)
    assert rc == 1 and out == ""
    jerr = json_error(err)
    assert jerr["code"] == "fork"
    assert jerr["details"] == [{"author": author, "seq": 3}]
    assert heads(dst)[author]["forked"] is True
    assert {a: {k: v for k, v in h.items() if k != "forked"} for a, h in heads(dst).items()} == {
        a: {k: v for k, v in h.items() if k != "forked"} for a, h in before.items()
    }

    report = ok_json("ledger", "verify", home=dst)
    assert report["fork_proofs"] == 1 and report["ok"] is True
    shown = ok_json("ledger", "show", "--author", author, home=dst)
    assert shown["forked"] is True and shown["head_seq"] == 6
    assert shown["entries"][2]["id"] == json.loads(lines[2])["id"]  # the held entry stays
    assert "FORKED" in ok("ledger", "show", "--author", author, home=dst)

    rc, out, err = run("ledger", "import", fork_file, home=dst)  # again: same refusal, one proof
    assert rc == 1 and "forked at seq 3" in err
    assert ok_json("ledger", "verify", home=dst)["fork_proofs"] == 1


# -- help and usage ---------------------------------------------------------------------


HELP = {
    (): ["--home", "--version", "--help", "init", "id", "ledger"],
    ("init",): ["--name", "--passphrase-file", "--json"],
    ("id",): ["--json"],
    ("ledger",): ["append", "show", "heads", "verify", "export", "import", "kinds"],
    ("ledger", "append"): ["--kind", "--body", "--passphrase-file", "--json"],
    ("ledger", "show"): ["--author", "--from", "--limit", "--json"],
    ("ledger", "heads"): ["--json"],
    ("ledger", "verify"): ["--json"],
    ("ledger", "export"): ["--author", "--output"],
    ("ledger", "import"): ["FILE", "--json"],
    ("ledger", "kinds"): ["--json"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "p2pnode")
def test_help_of_every_command(command, home):
    rc, out, err = run(*command, "--help", home=home)
    assert rc == 0, err
    assert out.startswith("Usage: p2pnode")
    for word in HELP[command]:
        assert word in out, f"{word} not in help of {command}"
    assert not home.exists()


@pytest.mark.parametrize(
    "args",
    [("--bogus",), ("init", "--bogus"), ("id", "--bogus"), ("ledger", "show", "--bogus"), ("ledger", "append", "--kind", "note"),
     ("ledger", "frobnicate"), ("frobnicate",)],
    ids=["top", "init", "id", "show", "append-missing-body", "unknown-subcommand", "unknown-command"],
)
def test_usage_errors_exit_2(args, home):
    rc, out, err = run(*args, home=home)
    assert rc == 2 and out == ""
    assert "Usage:" in err and "Traceback" not in err
    assert not home.exists()


def test_kinds_lists_core_kinds(node):
    home, _ = node
    names = [k["kind"] for k in ok_json("ledger", "kinds", home=home)]
    assert {"genesis", "note"} <= set(names)
