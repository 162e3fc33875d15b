"""Loans end to end over separate node processes (`p2pnode testnet`), driven and checked
through the CLI only. Every process is ended by its pid at teardown."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from framework.loans import wait_takeable
from framework.network import Network
from p2pnode.extensions import load
from p2pnode.testnet import prepare

pytestmark = pytest.mark.slow

START = (date.today() - timedelta(days=130)).isoformat()


def offer(net: Network, k: int, *extra: str, side: str = "offer") -> str:
    args = [side, "create", "--amount", "1200.00", "--currency", "EUR", "--rate", "12%", "--term", "3m",
            "--grace-days", "5", "--late-fee", "15.00", "--default-days", "60", *extra]
    return net.json(k, *args)["id"]


def sees_offer(net: Network, k: int, oid: str) -> None:
    wait_takeable(net, k, oid)  # (polled through the nodes' API: a wait, not a check)


def show(net: Network, k: int, loan: str) -> dict:
    return net.json(k, "loan", "show", loan)


def first_state(answer: dict | None) -> str | None:
    """The state of the first loan of a ``loan list`` answer (None if there is none)."""
    loans = (answer or {}).get("loans") or [{}]
    return loans[0].get("state")


def money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def test_the_story_offer_to_final_repayment_seen_alike_by_a_third_node(net: Network):
    net.up(3)
    oid = offer(net, 1)
    sees_offer(net, 2, oid)
    p = net.json(2, "loan", "propose", oid, "--start", START)
    assert p["state"] == "agreed", p
    loan = p["loan"]
    net.json(1, "loan", "disburse", loan, "--date", START)
    net.wait(lambda: show(net, 2, loan)["declared"], 20, "the declaration on node2")
    assert net.json(2, "loan", "confirm", loan)["n"] == 1
    rows = show(net, 2, loan)["rows"]
    for i, row in enumerate(rows):
        day = date.fromisoformat(row["due"]) + timedelta(days=10 if i == 1 else 0)
        amount = money(row["payment"] + (1500 if i == 1 else 0))
        net.json(2, "loan", "repay", loan, "--amount", amount, "--date", day.isoformat())
        net.json(1, "loan", "receipt", loan, "--amount", amount, "--date", day.isoformat())
    net.wait(lambda: show(net, 3, loan)["state"] == "repaid", 30, "node3 to see the loan repaid")
    views = [show(net, k, loan) for k in (1, 2, 3)]
    for v in views:
        v.pop("role"), v.pop("shown_state")
    assert views[0] == views[1] == views[2]
    assert views[0]["fees_charged"] == views[0]["fees_paid"] == 1500
    # text output, as a person reads it
    text = net.cli(3, "loan", "show", loan)[1]
    assert "repaid" in text and "1200.00 EUR" in text
    listed = net.json(2, "loan", "list", "--role", "borrower")
    assert [x["state"] for x in listed["loans"]] == ["repaid"]


def test_borrower_killed_between_proposal_and_countersignature_then_restarted(net: Network):
    prepare(net.dir, 2, load())  # the homes as `testnet up` makes them, before any node starts
    cfg = net.home(2) / "config.toml"  # node 2 reviews proposals by hand
    cfg.write_text(cfg.read_text().replace("review = false", "review = true"))
    net.up(2)
    rid = offer(net, 2, side="request")  # node 2 asks to borrow; node 1 lends
    sees_offer(net, 1, rid)
    p = net.json(1, "loan", "propose", rid)
    assert p["state"] == "held"
    pending = net.json(2, "loan", "pending")["pending"]
    assert [x["loan"] for x in pending] == [p["loan"]]
    net.node(2).kill()  # SIGKILL, before its owner decides
    net.up(2)
    pending = net.json(2, "loan", "pending")["pending"]
    assert [x["loan"] for x in pending] == [p["loan"]], "the pending proposal survived kill -9"
    net.json(2, "loan", "accept", p["loan"][:12])
    net.wait(lambda: net.json(1, "loan", "list")["loans"][0]["state"] == "awaiting_disbursement", 30,
             "node1 to record the agreement")
    # both chains hold it; proposing again is answered the same way (idempotent)
    for k in (1, 2):
        assert show(net, k, p["loan"])["state"] == "awaiting_disbursement"


def test_a_proposal_that_arrives_after_its_expiry_is_never_agreed(net: Network):
    net.up(2)
    oid = offer(net, 1)
    sees_offer(net, 2, oid)
    lender = net.peer_id(1)
    net.cli(1, "stop")
    p = net.json(2, "loan", "propose", oid, "--ttl", "2")
    assert p["state"] == "proposed"  # the lender is unreachable: it stays proposed, to be asked again
    # (polled through the node's API while the 2 s go by, then checked through the CLI)
    net.wait(lambda: first_state(net.ask(2, "loan.list")) == "expired", 20, "the proposal to expire")
    net.wait(lambda: net.json(2, "loan", "list")["loans"][0]["state"] == "expired", 20, "the proposal to expire")
    net.up(2)
    net.wait(lambda: any(h["author"] == lender and h["seq"] >= 1 for h in net.json(2, "status")["heads"]), 20,
             "the nodes to reconnect")
    rc, out, err = net.cli(1, "loan", "show", p["loan"], "--json", ok=False)
    assert rc != 0 and "unknown_loan" in out + err
    # a held proposal that expires cannot be accepted either
    cfg = net.home(1) / "config.toml"
    net.cli(1, "stop")
    cfg.write_text(cfg.read_text().replace("review = false", "review = true"))
    net.up(2)
    oid2 = offer(net, 1)
    sees_offer(net, 2, oid2)
    p2 = net.json(2, "loan", "propose", oid2, "--ttl", "2")
    assert p2["state"] == "held"
    net.wait(lambda: (a := net.ask(1, "loan.pending")) is not None and not a["pending"], 20,
             "the held proposal to expire")  # (polled through the node's API, then checked through the CLI)
    net.wait(lambda: not net.json(1, "loan", "pending")["pending"], 20, "the held proposal to expire")
    rc, out, err = net.cli(1, "loan", "accept", p2["loan"], "--json", ok=False)
    assert rc != 0


def test_forged_and_replayed_receipts_sale_and_default(net: Network):
    from p2pnode.home import Home
    from protocol.lending.contract import make_receipt

    net.up(3)
    oid = offer(net, 1)
    sees_offer(net, 2, oid)
    loan = net.json(2, "loan", "propose", oid, "--start", START)["loan"]
    net.json(1, "loan", "disburse", loan, "--date", START)
    net.wait(lambda: show(net, 2, loan)["declared"], 20, "the declaration on node2")
    net.json(2, "loan", "confirm", loan)
    first = show(net, 2, loan)["rows"][0]
    amount = money(first["payment"])
    net.json(2, "loan", "repay", loan, "--amount", amount, "--date", first["due"])
    r = net.json(1, "loan", "receipt", loan, "--amount", amount, "--date", first["due"])
    net.wait(lambda: len(show(net, 3, loan)["counted"]) == 2, 20, "node3 to count two receipts")
    before = show(net, 3, loan)

    # replayed: the lender's receipt appended again (by the borrower, who recorded it already) is refused
    raw = next(e for e in net.json(2, "ledger", "show", "--limit", "1000")["entries"]
               if e["kind"] == "loan.receipt")["body"]["receipt"]
    rc, out, err = net.cli(2, "ledger", "append", "--kind", "loan.receipt", "--body", json.dumps({"receipt": raw}),
                           "--json", ok=False)
    assert rc != 0 and "duplicate_document" in out + err
    # forged: the borrower signs a "receipt" as if the lender had been paid 900.00; it is stored (its
    # signature is the borrower's own) but counts for nothing on any node
    key = Home(net.home(2)).signing_key(None)
    forged = make_receipt(key, loan=bytes.fromhex(loan), n=3, what="repayment", amount=90000,
                          day=date.today(), payer=bytes.fromhex(net.json(1, "id")["public_key"]))
    net.json(2, "ledger", "append", "--kind", "loan.receipt", "--body",
             json.dumps({"receipt": {"$bin": forged.raw.hex()}}))
    net.wait(lambda: any(x["id"] == forged.id.hex() for x in show(net, 3, loan)["rejected"]), 20,
             "node3 to see and reject the forged receipt")
    net.wait(lambda: all(show(net, k, loan)["principal_paid"] == before["principal_paid"] for k in (1, 2, 3)), 10,
             "the totals to stay")
    after = show(net, 3, loan)
    assert after["counted"] == before["counted"]
    assert r["n"] == 2

    # sold to node 3; the old lender can no longer sign receipts; node 3 declares the default
    listed = net.json(1, "loan", "sell", loan, "--price", "700.00")
    net.wait(lambda: net.json(3, "market", "list")["listings"], 20, "node3 to see the listing")
    t = net.json(3, "loan", "buy", listed["id"])
    assert t["after"] == 2 and t["price"] == 70000
    net.wait(lambda: show(net, 2, loan)["terms"]["holder"] == net.peer_id(3), 20, "node2 to learn the new lender")
    rc, out, err = net.cli(1, "loan", "receipt", loan, "--amount", "1.00", "--json", ok=False)
    assert rc != 0 and "not_holder" in out + err
    assert net.json(1, "loan", "list")["loans"][0]["state"] == "transferred"
    d = net.json(3, "loan", "default", loan)
    assert d["days_past_due"] >= 60
    net.wait(lambda: all(show(net, k, loan)["state"] == "defaulted" for k in (1, 2, 3)), 20, "every node to agree")


def test_a_default_before_the_threshold_is_refused(net: Network):
    net.up(2)
    oid = offer(net, 1)
    sees_offer(net, 2, oid)
    loan = net.json(2, "loan", "propose", oid)["loan"]  # starts today: nothing is due yet
    net.json(1, "loan", "disburse", loan)
    net.wait(lambda: show(net, 2, loan)["declared"], 20, "the declaration on node2")
    net.json(2, "loan", "confirm", loan)
    rc, out, err = net.cli(1, "loan", "default", loan, "--json", ok=False)
    assert rc != 0 and "default_not_allowed" in out + err
    assert show(net, 1, loan)["state"] == "current"


def test_a_proposal_committing_to_a_wrong_head_is_refused_by_a_node_process(net: Network):
    """The proposer here is this test's own libp2p host (built like a node's); the acceptor
    is a node process. The proposal commits a head the acceptor's chain never had."""
    import hashlib

    import multiaddr
    import trio
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from p2pnode.net.host import build_host
    from protocol.lending import agree
    from protocol.lending.contract import Terms, contract_from, propose
    from protocol.entry import ZERO_ID, make_entry
    from protocol.keys import SigningKey, public_key_from_peer_id
    from protocol.kinds import genesis_body

    net.up(1)
    oid = offer(net, 1)
    o = net.json(1, "offer", "show", oid)
    st = net.json(1, "status")
    lender = public_key_from_peer_id(st["peer_id"])
    own_head = next(h for h in st["heads"] if h["author"] == st["peer_id"])
    me = SigningKey.from_seed(hashlib.sha256(b"wrong-head-proposer").digest())
    genesis = make_entry(me, seq=1, prev=ZERO_ID, ts=1, kind="genesis", body=genesis_body("taker"))
    terms = Terms("lend", lender, "EUR", o["min_amount"], o["max_amount"], o["rate_bp"], o["term"], None,
                  o["schedule"], o["grace_days"], o["late_fee"], o["default_days"])
    answers = {}

    async def main() -> None:
        local = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
        host = build_host(me, [local])
        async with host.run(listen_addrs=[local]):
            with trio.fail_after(30):
                peer = info_from_p2p_addr(multiaddr.Multiaddr(st["listen"][0]))
                await host.connect(peer)
                now = int(__import__("time").time() * 1000)
                for name, head in (("wrong", (own_head["seq"], bytes(32))), ("ahead", (own_head["seq"] + 3, bytes(32))),
                                   ("right", (own_head["seq"], bytes.fromhex(own_head["id"])))):
                    doc = contract_from(bytes.fromhex(oid), terms, taker=me.public_key, principal=o["max_amount"],
                                        start=date.today(), lender_head=head, borrower_head=(1, genesis.id),
                                        created=now, expires=now + 60_000)
                    stream = await host.new_stream(peer.peer_id, [agree.AGREE_PROTOCOL])
                    await stream.write(agree.encode(agree.Propose(propose(me, doc).raw, (genesis.envelope,))))
                    header = await stream.read(4)
                    payload = b""
                    while len(payload) < int.from_bytes(header, "big"):
                        payload += await stream.read(65536)
                    answers[name] = agree.decode(payload)
                    await stream.close()
            with trio.move_on_after(3):
                await host.close()

    trio.run(main)
    assert isinstance(answers["wrong"], agree.Refused) and answers["wrong"].code == "bad_head"
    assert isinstance(answers["ahead"], agree.Refused) and answers["ahead"].code == "bad_head"
    assert isinstance(answers["right"], agree.Accepted), answers["right"]
    loans = net.json(1, "loan", "list")["loans"]
    assert [x["state"] for x in loans if x["state"] == "awaiting_disbursement"] == ["awaiting_disbursement"]
