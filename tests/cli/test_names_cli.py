"""`p2pnode name set|rm|list`: petnames in HOME/names.toml, with no node running, shown by
listings, accepted as PEER; a bad file is refused naming its line. Real console script."""

from __future__ import annotations

import json
import stat

import pytest

from cli.output import short_peer
from framework.console import run_cli

OTHER = "12D3KooWQzS4uWYL8LN11Ehdsxi6UMGs6mEJ6r367u2ugpyLLXgf"
ADDR = f"/ip4/127.0.0.1/tcp/9/p2p/{OTHER}"


def ok(*args, home) -> str:
    rc, out, err = run_cli(*args, home=home)
    assert rc == 0, (args, rc, err)
    return out


def names(home) -> list[dict]:
    return json.loads(ok("name", "list", "--json", home=home))["names"]


def test_set_list_rename_and_remove_without_a_node(node):
    home, info = node
    me = info["peer_id"]
    assert "no names set" in ok("name", "list", home=home)
    assert "alice is now the name of " + OTHER in ok("name", "set", OTHER, "alice", home=home)
    assert json.loads(ok("name", "set", ADDR, "bob", "--json", home=home)) == {
        "name": "bob", "peer_id": OTHER, "addr": ADDR, "replaced": "alice"}  # one name a peer: renamed
    ok("name", "set", me, "Me", home=home)
    assert names(home) == [{"name": "bob", "peer_id": OTHER, "addr": ADDR},
                           {"name": "Me", "peer_id": me, "addr": None}]
    table = ok("name", "list", home=home)
    assert "bob" in table and short_peer(OTHER) in table and "/ip4/127.0.0.1/tcp/9" in table
    path = home / "names.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in home.iterdir() if p.name.startswith(".names-")] == []  # no temporary file left
    # a name is unique without regard to case; it cannot be taken from another peer silently
    rc, _, err = run_cli("name", "set", OTHER, "me", home=home)
    assert rc == 1 and "Me names " + me in err and "name rm Me" in err
    rc, _, err = run_cli("name", "set", OTHER, "me", "--json", home=home)
    assert rc == 1 and json.loads(err)["error"]["code"] == "name_taken"
    # removed by name (any case) or by peer ID
    assert "forgot the name bob" in ok("name", "rm", "BOB", home=home)
    assert json.loads(ok("name", "rm", me, "--json", home=home))["removed"]["name"] == "Me"
    assert names(home) == []
    rc, _, err = run_cli("name", "rm", "carol", home=home)
    assert rc == 1 and "no name carol" in err


@pytest.mark.parametrize("args,where", [
    ([OTHER, "9lives"], "NAME"),
    ([OTHER, "a" * 33], "NAME"),
    ([OTHER, "a b"], "NAME"),
    (["12D3KooWnotapeer", "alice"], "PEER"),
    (["/ip4/127.0.0.1/tcp/9", "alice"], "PEER"),
    ([f"/p2p/{OTHER}", "alice"], "PEER"),
])
def test_bad_names_and_peers_exit_2_naming_the_argument(node, args, where):
    home, _ = node
    rc, out, err = run_cli("name", "set", *args, home=home)
    assert rc == 2 and where in err and out == "", err
    assert not (home / "names.toml").exists()


def test_names_need_an_initialised_home(home):
    rc, _, err = run_cli("name", "list", home=home)
    assert rc == 3 and "init" in err


@pytest.mark.parametrize("text,line,says", [
    ('[names]\nalice = "12D3KooWbad"\n', 2, "not an Ed25519 peer ID"),
    (f'alice = "{OTHER}"\n', 1, "under a [names] line"),
    (f'# mine\n[names]\n\nalice = "{OTHER}"\nbob: "{OTHER}"\n', 5, 'expected NAME = "PEER ID"'),
    (f'[names]\nalice = "{OTHER}"\nALICE = "{ADDR}"\n', 3, "given already on line 2"),
    (f'[names]\nalice = "{OTHER}"\nbob = "{ADDR}"\n', 3, "named already on line 2"),
    (f'[names]\n"9x" = "{OTHER}"\n', 2, "is not a name"),
    ('[names]\nbob = "/ip4/127.0.0.1/tcp/9"\n', 2, "ending in /p2p/<peer ID>"),
])
def test_a_bad_names_file_is_refused_naming_file_and_line(node, text, line, says):
    home, info = node
    path = home / "names.toml"
    path.write_text(text)
    for args in (["name", "list"], ["ledger", "heads"], ["ledger", "show", "--author", "alice"]):
        rc, out, err = run_cli(*args, home=home)
        assert rc == 3 and f"{path}, line {line}: " in err and says in err, (args, err)
    # JSON output and full peer IDs need no names: they work whatever the file holds
    assert run_cli("ledger", "heads", "--json", home=home)[0] == 0
    assert run_cli("ledger", "show", "--author", info["peer_id"], "--json", home=home)[0] == 0


def test_a_hand_written_file_in_plain_toml_is_read(node):
    home, _ = node
    bob = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWHH5gYSujoRuUtbq9R9Zi1QzjpKkiLprmvvTrV6bWjTeX"
    (home / "names.toml").write_text(f"# by hand\n[names]  # the table\nalice = '{OTHER}'  # a friend\n"
                                     f'"bob-2" = "{bob}"\n')
    assert [n["name"] for n in names(home)] == ["alice", "bob-2"]


def test_listings_show_names_and_peer_options_take_them(node):
    home, info = node
    me = info["peer_id"]
    assert "me" not in ok("ledger", "heads", home=home).split()
    ok("name", "set", me, "me", home=home)
    heads = ok("ledger", "heads", home=home)
    assert "name" in heads.splitlines()[0] and "me" in heads.split()
    shown = ok("ledger", "show", "--author", "me", home=home)
    assert f"me ({me}): 1 entries" in shown
    assert json.loads(ok("ledger", "show", "--author", "ME", "--json", home=home))["author"] == me
    assert ok("ledger", "export", "--author", "me", home=home) == ok("ledger", "export", "--author", me, home=home)
    rc, _, err = run_cli("ledger", "show", "--author", "nobody", home=home)
    assert rc == 2 and "neither a peer ID" in err and "--author" in err


def test_peer_options_of_a_running_node_take_names(node_process):
    home, info = node_process
    me = info["peer_id"]
    ok("name", "set", me, "me", home=home)
    ok("name", "set", OTHER, "far", home=home)  # named, but no address saved
    created = json.loads(ok("offer", "create", "--amount", "10", "--currency", "EUR", "--rate", "5%", "--term", "1m",
                            "--json", home=home))
    assert [o["id"] for o in json.loads(ok("offer", "list", "--author", "me", "--json", home=home))["offers"]] == [
        created["id"]]
    assert json.loads(ok("offer", "list", "--author", "far", "--json", home=home))["offers"] == []
    book = ok("offer", "list", home=home)
    assert created["id"][:16] in book and " me " in book and me not in book
    assert f"me ({me})" in ok("offer", "show", created["id"][:8], home=home)
    assert "me" in ok("status", home=home).split()
    rc, _, err = run_cli("connect", "far", home=home)
    assert rc == 2 and "no address is saved with the name far" in err
    rc, _, err = run_cli("connect", "nobody", home=home)
    assert rc == 2 and "neither an address" in err
    rc, _, err = run_cli("offer", "list", "--author", "nobody", home=home)
    assert rc == 2 and "--author" in err
    # a name with an address is dialled at that address (nothing listens there: the node says so)
    ok("name", "set", "/ip4/127.0.0.1/tcp/9/p2p/" + OTHER, "far", home=home)
    rc, _, err = run_cli("connect", "far", "--json", home=home)
    assert rc == 1 and json.loads(err)["error"]["code"] == "dial_failed"
