"""`p2pnode api`: the declared methods from the command line, and calls checked against
their declarations before anything is sent."""

from __future__ import annotations

import json

from framework.console import run_cli


def test_list_and_show_need_no_node(node):
    home, _ = node
    rc, out, err = run_cli("api", "list", "--json", home=home)
    assert rc == 0, err
    methods = {m["method"]: m["owner"] for m in json.loads(out)["methods"]}
    assert methods["ledger.append"] == "core" and methods["node.status"] == "core"
    assert methods["loan.propose"] == "lending" and methods["offer.create"] == "lending"
    rc, out, err = run_cli("api", "show", "ledger.show", "--json", home=home)
    shown = json.loads(out)
    assert rc == 0 and [p["name"] for p in shown["params"]] == ["author", "from", "limit"]
    assert shown["params"][2]["type"] == "int 1..10000" and shown["params"][2]["default"] == 100
    rc, out, err = run_cli("api", "show", "no.such", home=home)
    assert rc == 2 and "no method no.such" in err


def test_a_call_is_checked_against_its_declaration_before_it_is_sent(node):
    home, _ = node  # no node runs: a bad call is refused here, before any connection
    rc, out, err = run_cli("api", "call", "ledger.show", '{"limit": "many"}', home=home)
    assert rc == 2 and '"limit" must be int' in err
    rc, out, err = run_cli("api", "call", "ledger.show", '{"lmit": 5}', home=home)
    assert rc == 2 and "unknown param(s) lmit" in err
    rc, out, err = run_cli("api", "call", "ledger.show", "[1]", home=home)
    assert rc == 2
    rc, out, err = run_cli("api", "call", "ledger.show", '{"limit": 5}', home=home)
    assert rc == 6 and "no node is running" in err


def test_a_call_to_a_running_node(node_process):
    home, info = node_process
    rc, out, err = run_cli("api", "call", "node.status", home=home)
    assert rc == 0, err
    assert json.loads(out)["peer_id"] == info["peer_id"]
    rc, out, err = run_cli("api", "call", "ledger.append", '{"kind": "note", "body": {"text": "via api"}}', home=home)
    assert rc == 0 and json.loads(out)["seq"] == 2
