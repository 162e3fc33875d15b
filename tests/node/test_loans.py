"""Loans between in-process nodes over real libp2p on 127.0.0.1 and real LevelDB: an offer
taken, countersigned, disbursed and repaid; review, expiry, wrong heads, transfers and
defaults. (tests/net/test_loans_cli.py runs the same story through separate processes.)"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import trio

from framework.inprocess import (again, lending, make_node, start, start_mesh, start_watched, stop_all, stop_watched,
                                 sync_all)
from framework.wait import wait_for
from p2pnode.errors import ApiError
from p2pnode.node import Node
from protocol.keys import peer_id
from protocol.lending.agree import Record

pytestmark = pytest.mark.trio

START = (date.today() - timedelta(days=130)).isoformat()


async def offer(node, **over) -> str:
    params = {"side": "lend", "amount": "1200.00", "currency": "EUR", "rate": "12%", "term": "3m",
              "grace_days": 5, "late_fee": "15.00", "default_days": 30}
    params.update(over)
    view = await node.call("offer.create", params)
    return view["id"]


async def seen_offer(nodes, offer_id: str) -> None:
    await wait_for(lambda: all(lending(x).book.get(bytes.fromhex(offer_id)) is not None for x in nodes), 10,
                   "the offer to reach every book")


def recorded(node, loan: str) -> set[str]:
    return {peer_id(e.author) for e in lending(node).documents.read(bytes.fromhex(loan)).entries
            if e.kind == "loan.agreement"}


async def test_an_offer_taken_countersigned_disbursed_and_repaid_looks_the_same_everywhere(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower, observer = nodes = await start_mesh(nursery, tmp_path, 3)
        oid = await offer(lender)
        await seen_offer(nodes, oid)
        p = await borrower.call("loan.propose", {"offer": oid, "start": START})
        assert p["state"] == "agreed", p
        loan = p["loan"]
        both = {lender.peer_id, borrower.peer_id}
        assert lender.peer_id in recorded(lender, loan) and borrower.peer_id in recorded(borrower, loan)
        await wait_for(lambda: recorded(lender, loan) == recorded(borrower, loan) == both, 10,
                       "each node to hold both agreement entries")
        # the offer is taken once: it leaves every book
        await wait_for(lambda: all(lending(x).book.get(bytes.fromhex(oid)) is None for x in nodes), 10, "the offer to go")
        await sync_all(nodes)
        with pytest.raises(ApiError) as e:
            await observer.call("loan.disburse", {"loan": loan})
        assert e.value.code == "not_lender"
        await lender.call("loan.disburse", {"loan": loan, "date": START})
        await sync_all(nodes)
        await borrower.call("loan.confirm", {"loan": loan})
        await sync_all(nodes)
        view = await borrower.call("loan.show", {"loan": loan})
        assert view["state"] == "current" or view["state"] in ("late", "delinquent")
        rows = view["rows"]
        for i, row in enumerate(rows):
            due = date.fromisoformat(row["due"])
            late = i == 1
            paid_on = due + timedelta(days=10 if late else 0)
            amount = row["payment"] + (1500 if late else 0)
            text = f"{amount // 100}.{amount % 100:02d}"
            await borrower.call("loan.repay", {"loan": loan, "amount": text, "date": paid_on.isoformat()})
            r = await lender.call("loan.receipt", {"loan": loan, "amount": text, "date": paid_on.isoformat()})
            assert r["n"] == i + 2  # the disbursement receipt is #1
        await sync_all(nodes)
        await wait_for(lambda: len(lending(borrower).documents.read(bytes.fromhex(loan)).recorded_by(
            borrower.key.public_key)) == 5, 10, "the borrower to record every receipt")
        await sync_all(nodes)
        views = [await x.call("loan.show", {"loan": loan}) for x in nodes]
        for v in views:
            v.pop("role"), v.pop("shown_state")
        assert views[0] == views[1] == views[2]
        v = views[2]
        assert v["state"] == "repaid" and v["fees_charged"] == v["fees_paid"] == 1500
        assert v["outstanding_principal"] == 0
        listed = await observer.call("loan.list", {})
        assert [x["state"] for x in listed["loans"]] == ["repaid"] and listed["loans"][0]["role"] is None
        await stop_all(nodes)


async def test_review_holds_a_proposal_until_the_owner_accepts(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False, review=True))
        borrower = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        oid = await offer(lender)
        await seen_offer([borrower], oid)
        p = await borrower.call("loan.propose", {"offer": oid})
        assert p["state"] == "held"
        pending = (await lender.call("loan.pending"))["pending"]
        assert [x["loan"] for x in pending] == [p["loan"]]
        again = await borrower.call("loan.proposal", {"loan": p["loan"][:12]})
        assert again["state"] == "held"
        await lender.call("loan.accept", {"loan": p["loan"][:10]})
        await wait_for(lambda: lending(borrower).countersigning.get(bytes.fromhex(p["loan"])).state == "agreed", 10,
                       "the borrower to learn of the agreement")
        assert recorded(borrower, p["loan"]) == {lender.peer_id, borrower.peer_id}
        assert (await lender.call("loan.pending"))["pending"] == []
        # a second review, rejected: the proposer sees the reason
        oid2 = await offer(lender)
        await seen_offer([borrower], oid2)
        p2 = await borrower.call("loan.propose", {"offer": oid2})
        await lender.call("loan.reject", {"loan": p2["loan"], "reason": "too soon after the last one"})
        await wait_for(lambda: lending(borrower).countersigning.get(bytes.fromhex(p2["loan"])).state == "refused", 10, "the refusal")
        got = await borrower.call("loan.proposal", {"loan": p2["loan"]})
        assert got["code"] == "rejected" and got["reason"] == "too soon after the last one"
        await stop_all([lender, borrower])


async def test_proposals_refused_for_expiry_wrong_head_and_terms(tmp_path: Path):
    from protocol.lending.contract import contract_from, propose, terms_of
    from protocol.lending import agree

    async with trio.open_nursery() as nursery:
        lender, borrower = nodes = await start_mesh(nursery, tmp_path, 2)
        oid = await offer(lender)
        await seen_offer(nodes, oid)
        o = lending(borrower).book.get(bytes.fromhex(oid))
        me, them = borrower.store.head(borrower.key.public_key), borrower.store.head(lender.key.public_key)

        async def ask(**over):
            kw = dict(taker=borrower.key.public_key, principal=120000, start=date.today(),
                      lender_head=(them.seq, them.id), borrower_head=(me.seq, me.id),
                      created=lending(borrower).loans.now_ms(), expires=lending(borrower).loans.now_ms() + 60_000)
            kw.update(over)
            env = propose(borrower.key, contract_from(o.id, terms_of(o), **kw))
            return await lending(borrower).countersigning.ask(lender.key.public_key, agree.Propose(env.raw))

        expired = await ask(created=lending(borrower).loans.now_ms() - 120_000, expires=lending(borrower).loans.now_ms() - 1)
        assert isinstance(expired, agree.Refused) and expired.code == "expired"
        wrong = await ask(lender_head=(them.seq, bytes(32)))
        assert isinstance(wrong, agree.Refused) and wrong.code == "bad_head"
        ahead = await ask(borrower_head=(me.seq + 5, me.id))  # a head the borrower's chain never had
        assert isinstance(ahead, agree.Refused) and ahead.code == "bad_head"
        big = await ask(principal=999_999_00)
        assert isinstance(big, agree.Refused) and big.code == "terms_mismatch"
        again = await ask(lender_head=(them.seq, bytes(32)))  # the same refusal, however often asked
        assert isinstance(again, agree.Refused) and again.code == "bad_head"
        ok = await ask()
        assert isinstance(ok, agree.Accepted)
        # the offer is taken: a second taker is refused
        late = await ask(principal=110000)
        assert isinstance(late, agree.Refused) and late.code in ("offer_expired", "unknown_offer")
        await stop_all(nodes)


async def test_sale_default_and_forged_receipts(tmp_path: Path):
    from protocol.lending.contract import make_receipt

    async with trio.open_nursery() as nursery:
        lender, borrower, buyer = nodes = await start_mesh(nursery, tmp_path, 3)
        oid = await offer(lender)
        await seen_offer(nodes, oid)
        loan = (await borrower.call("loan.propose", {"offer": oid, "start": START}))["loan"]
        await lender.call("loan.disburse", {"loan": loan, "date": START})
        await sync_all(nodes)
        await borrower.call("loan.confirm", {"loan": loan})
        await sync_all(nodes)
        # a receipt the borrower signs for the lender is forged: the entry is refused outright
        forged = make_receipt(borrower.key, loan=bytes.fromhex(loan), n=2, what="repayment", amount=100,
                              day=date.today(), payer=lender.key.public_key)
        # (signed by the borrower as payee: valid on its face, but it counts for nothing)
        await borrower.call("ledger.append", {"kind": "loan.receipt", "body": {"receipt": {"$bin": forged.raw.hex()}}})
        await sync_all(nodes)
        v = await buyer.call("loan.show", {"loan": loan})
        assert v["principal_paid"] == 0 and any(r["code"] for r in v["rejected"])
        # default: past the threshold (30 days) with nothing paid since START
        assert v["default_allowed"]
        listed = await lender.call("loan.sell", {"loan": loan, "price": "900.00"})
        await wait_for(lambda: any(x.id.hex() == listed["id"] for x in lending(buyer).market.live()), 10,
                       "the buyer's node to hold the listing")
        t = await buyer.call("loan.buy", {"listing": listed["id"][:12]})
        assert t["after"] == 1 and t["price"] == 90000
        await sync_all(nodes)
        await wait_for(lambda: any(e.kind == "loan.transfer" and e.author == borrower.key.public_key
                                   for e in lending(borrower).documents.read(bytes.fromhex(loan)).entries), 10,
                       "the borrower's node to record the transfer")
        with pytest.raises(ApiError) as e:
            await lender.call("loan.receipt", {"loan": loan, "amount": "10.00"})
        assert e.value.code == "not_holder"
        assert (await lender.call("loan.list", {}))["loans"][0]["state"] == "transferred"
        d = await buyer.call("loan.default", {"loan": loan})
        assert d["days_past_due"] > 30
        await sync_all(nodes)
        states = {(await x.call("loan.show", {"loan": loan}))["state"] for x in nodes}
        assert states == {"defaulted"}
        await stop_all(nodes)


async def test_policy_cap_dispute_and_writeoff(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False))
        borrower = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        # the lender's policy, set after it offered at 12%, caps APRs at 10%: a proposal on
        # that offer is refused, the reason naming the rule and its numbers
        high = await offer(lender)
        await seen_offer([borrower], high)
        await lender.call("policy.set", {"name": "permissive", "apr_cap": "10%"})
        p = await borrower.call("loan.propose", {"offer": high})
        assert (p["state"], p["code"]) == ("refused", "policy")
        assert p["reason"].startswith("rate_cap: APR 12.68% is above the cap of 10.00%")
        oid = await offer(lender, rate="9.5%")
        await seen_offer([borrower], oid)
        loan = (await borrower.call("loan.propose", {"offer": oid, "start": START}))["loan"]
        await lender.call("loan.disburse", {"loan": loan, "date": START})
        await sync_all([lender, borrower])
        await borrower.call("loan.confirm", {"loan": loan})
        await wait_for(lambda: len(lending(lender).documents.read(bytes.fromhex(loan)).receipts) == 1, 10,
                       "the disbursement receipt")
        await sync_all([lender, borrower])
        v = await lender.call("loan.show", {"loan": loan})
        # 130 days after the start and nothing repaid, the first installment is 99 days past due
        assert v["disbursed_on"] == START and v["state"] == "delinquent" and v["bucket"] == "90+"
        # amounts out of bounds are refused by name (issue 9: a 10^16 EUR repayment of a
        # 1,200 EUR loan was accepted, and 0 was an internal error)
        for node, method, amount in ((borrower, "loan.repay", "0"), (borrower, "loan.repay", "10000000000000000.00"),
                                     (lender, "loan.receipt", "0.00"), (lender, "loan.receipt", "1300.00")):
            with pytest.raises(ApiError) as e:
                await node.call(method, {"loan": loan, "amount": amount})
            assert e.value.code == "bad_amount", (method, amount, e.value)
        with pytest.raises(ApiError) as e:
            await lender.call("loan.writeoff", {"loan": loan})
        assert e.value.code == "bad_state"  # only after a default
        await borrower.call("loan.dispute", {"loan": loan, "reason": "the first installment was paid in cash"})
        await lender.call("loan.default", {"loan": loan})
        await lender.call("loan.writeoff", {"loan": loan})
        await sync_all([lender, borrower])
        for node in (lender, borrower):
            v = await node.call("loan.show", {"loan": loan})
            assert v["state"] == "written_off"
            assert [d["reason"] for d in v["disputes"]] == ["the first installment was paid in cash"]
        listed = await borrower.call("loan.list", {"role": "borrower", "state": "written_off"})
        assert [x["loan"] for x in listed["loans"]] == [loan]
        await stop_all([lender, borrower])


def put_record(node: Node, record: Record) -> None:
    """Write a proposal record into a stopped node's store, as a node killed at the right
    moment would have left it."""
    with node.home.open_store() as store:
        store.records("lending").write([(b"P" + record.loan, record.encode())], sync=True)


async def test_open_proposals_resume_after_a_restart_and_learn_their_agreement_from_the_chain(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, lender_ended = await start_watched(nursery, make_node(tmp_path / "l", "l", pex=False))
        borrower, borrower_ended = await start_watched(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        oid = await offer(lender)
        await seen_offer([borrower], oid)
        # proposed to a stopped lender, then the borrower stops too: only its record remembers
        await stop_watched(lender, lender_ended)
        p = await borrower.call("loan.propose", {"offer": oid})
        assert p["state"] == "proposed"
        loan = bytes.fromhex(p["loan"])
        proposed = lending(borrower).countersigning.get(loan)
        await stop_watched(borrower, borrower_ended)
        lender, lender_ended = await start_watched(nursery, again(lender))
        borrower, borrower_ended = await start_watched(nursery, again(borrower))
        assert lending(borrower).countersigning.get(loan) == proposed
        await borrower.connect(lender.listen_addrs()[0])
        # the restarted borrower's retry loop asks again, and the lender countersigns
        await wait_for(lambda: lending(borrower).countersigning.get(loan).state == "agreed", 15, "the proposal to be agreed")
        assert lending(lender).countersigning.get(loan).state == "agreed"
        await wait_for(lambda: recorded(borrower, p["loan"]) == recorded(lender, p["loan"]) == {
            lender.peer_id, borrower.peer_id}, 10, "each node to hold both agreement entries")

        # Killed between the append and the persist: the chains hold the agreement, the
        # records still say proposed (borrower) and pending (lender). Restarted, each
        # learns it from its own chain before anything else (agree rule 6e), appends
        # nothing twice, and the lender's offer counts as taken.
        await stop_watched(borrower, borrower_ended)
        await stop_watched(lender, lender_ended)
        put_record(borrower, proposed)
        put_record(lender, Record(loan, "in", "pending", proposed.contract, updated=proposed.updated))
        lender, lender_ended = await start_watched(nursery, again(lender))
        borrower, borrower_ended = await start_watched(nursery, again(borrower))
        for node in (lender, borrower):  # (not connected yet: from the chain alone)
            assert lending(node).countersigning.get(loan).state == "agreed"
            assert lending(node).countersigning.get(loan).contract == lending(node).documents.our_agreement(loan)
            assert [e.kind for e in lending(node).documents.read(loan).entries
                    if e.author == node.key.public_key] == ["loan.agreement"]  # appended once
        assert (await lender.call("loan.pending"))["pending"] == []
        with pytest.raises(ApiError) as e:
            await lender.call("loan.accept", {"loan": p["loan"]})
        assert e.value.code == "unknown_proposal"
        await stop_all([lender, borrower])


async def test_a_send_cut_short_still_ends_so_the_proposal_is_asked_about_again(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower = nodes = await start_mesh(nursery, tmp_path, 2)
        oid = await offer(lender)
        await seen_offer(nodes, oid)
        loans = lending(borrower).countersigning
        async with lending(lender).countersigning._decide_lock:  # the lender cannot answer a fresh proposal now
            with trio.move_on_after(2) as waited:
                await borrower.call("loan.propose", {"offer": oid})  # the owner gives up mid-send
            assert waited.cancelled_caught
            [loan] = [k[1:] for k in loans.records.keys(b"P")]
            machine = loans._machines[loan]
            assert machine.state == "proposed" and not machine.in_flight  # it heard how its send ended
            # so the next tick asks again (a machine that still thought it waited would stay silent)
            await loans.tick()
            assert machine.in_flight
        await wait_for(lambda: loans.get(loan).state == "agreed", 15, "the proposal to be agreed")
        await stop_all(nodes)


def crashed_before_the_cancellation(node: Node, offer_id: bytes, envelope: bytes) -> None:
    """Put a stopped node's book back as a node killed between its countersignature and the
    cancellation of the offer it took would have left it: the offer held, no cancellation."""
    with node.home.open_store() as store:
        records = store.records("lending")
        records.write([(b"O" + offer_id, envelope)], list(records.keys(b"C" + offer_id)), sync=True)


def indexed_by_version_1(node: Node) -> None:
    """Make a stopped node's lending index look as lending's index version 1 left it: no
    ``T`` (offer taken) keys, marked complete for version 1."""
    from p2pnode.ledger.store import P_EXT_INDEX, space_prefix

    with node.home.open_store() as store:
        taken = space_prefix(P_EXT_INDEX, "lending") + b"T"
        store.write_batch([(b"Mindex/lending", b"1")], [k for k, _ in store.db.iterator(prefix=taken)])


async def test_an_offer_taken_before_a_crash_is_never_taken_again(tmp_path: Path):
    """Issue 9, item 5: the offer's consumption is durable in the same write as the
    countersignature (the agreement entry indexes the offer it takes), so a lender killed
    before the offer's cancellation was stored neither countersigns it again nor keeps
    offering it."""
    async with trio.open_nursery() as nursery:
        lender, lender_ended = await start_watched(nursery, make_node(tmp_path / "l", "l", pex=False))
        first = await start(nursery, make_node(tmp_path / "b1", "b1", pex=False))
        late, late_ended = await start_watched(nursery, make_node(tmp_path / "b2", "b2", pex=False))
        for b in (first, late):
            await b.connect(lender.listen_addrs()[0])
        await sync_all([lender, first, late])
        oid = await offer(lender)
        await seen_offer([first, late], oid)
        envelope = lending(lender).book.records.get(b"O" + bytes.fromhex(oid))
        await stop_watched(late, late_ended)  # it keeps the offer in its book, live
        p = await first.call("loan.propose", {"offer": oid})
        assert p["state"] == "agreed"
        await wait_for(lambda: lending(lender).book.get(bytes.fromhex(oid)) is None, 10, "the offer to be cancelled")
        await stop_watched(lender, lender_ended)
        crashed_before_the_cancellation(lender, bytes.fromhex(oid), envelope)
        indexed_by_version_1(lender)  # and by the version before: its index is rebuilt at start

        lender, lender_ended = await start_watched(nursery, again(lender))
        # restarted, it finds the offer taken in its chain and stores the cancellation now
        await wait_for(lambda: lending(lender).book.get(bytes.fromhex(oid)) is None, 10, "the offer to be cancelled again")
        late, late_ended = await start_watched(nursery, again(late))
        await late.connect(lender.listen_addrs()[0])
        assert lending(late).book.get(bytes.fromhex(oid)) is not None  # (it missed the cancellations)
        second = await late.call("loan.propose", {"offer": oid})
        loan = bytes.fromhex(second["loan"])
        await wait_for(lambda: lending(late).countersigning.get(loan).state != "proposed", 15, "an answer")
        second = lending(late).countersigning.get(loan)
        assert second.state == "refused" and second.code in ("unknown_offer", "offer_expired"), second
        agreements = [e for e in lending(lender).ctx.chains.chain(lender.key.public_key) if b"loan.agreement" in e]
        assert len(agreements) == 1
        await stop_all([lender, first, late])


async def test_a_forkers_loans_and_offers_say_so_everywhere(tmp_path: Path):
    """Issue 9: a forker's existing loans and offers carried no fork flag. Once a node
    holds a fork proof of an author, every loan it is a party to and every offer it made
    say so in their views."""
    from protocol.entry import make_entry

    async with trio.open_nursery() as nursery:
        lender, borrower = nodes = await start_mesh(nursery, tmp_path, 2)
        oid = await offer(lender)
        await seen_offer(nodes, oid)
        loan = (await borrower.call("loan.propose", {"offer": oid}))["loan"]
        other = await offer(lender, amount="900.00")
        await seen_offer(nodes, other)
        assert (await borrower.call("loan.show", {"loan": loan}))["forked"] == []
        stored = lender.store.entry(lender.key.public_key, 1)
        forged = make_entry(lender.key, seq=1, prev=stored.prev, ts=stored.ts, kind="genesis",
                            body={"protocol": "p2plend/1", "name": "someone else"})
        assert (await borrower.ledger.ingest([forged.envelope])).forks
        assert (await borrower.call("loan.show", {"loan": loan}))["forked"] == [lender.peer_id]
        [listed] = (await borrower.call("loan.list", {}))["loans"]
        assert listed["forked"] == [lender.peer_id]
        shown = await borrower.call("offer.show", {"id": other})
        assert shown["author_forked"] is True
        assert [o["author_forked"] for o in (await borrower.call("offer.list", {}))["offers"]] == [True]
        await stop_all(nodes)


async def test_an_agreement_seen_again_once_final_and_recorded_feeds_no_machine(tmp_path: Path):
    """``Countersigning.agreed_elsewhere`` feeds nothing when the proposal's record is final
    and our chain records the agreement (a final machine would only append it again, a
    no-op); it feeds the machine when either does not hold: an open record, or a chain
    that lacks the agreement (agree rule 7: the chains are the loan)."""
    async with trio.open_nursery() as nursery:
        lender, borrower = await start_mesh(nursery, tmp_path, 2)
        oid = await offer(lender)
        await seen_offer([borrower], oid)
        p = await borrower.call("loan.propose", {"offer": oid})
        assert p["state"] == "agreed", p
        loan = bytes.fromhex(p["loan"])
        await wait_for(lambda: recorded(borrower, p["loan"]) == {lender.peer_id, borrower.peer_id}, 10,
                       "the lender's agreement entry at the borrower")  # (then nothing else feeds it)
        await sync_all([lender, borrower])
        for node in (lender, borrower):  # (the short read of our own entries, as the full one)
            docs = lending(node).documents
            assert docs.recorded(loan) == docs.read(loan).recorded_by(node.key.public_key) == {loan}
        cs = lending(borrower).countersigning
        agreement = lending(borrower).documents.our_agreement(loan)
        fed: list[bytes] = []
        step = cs._step

        async def counted(loan_, *a, **kw):
            fed.append(loan_)
            return await step(loan_, *a, **kw)

        cs._step = counted
        head = borrower.store.head(borrower.key.public_key).seq
        await cs.agreed_elsewhere(agreement)
        assert fed == [] and borrower.store.head(borrower.key.public_key).seq == head
        final = cs.get(loan)

        async def noted(loan_, *a, **kw):  # (from here the records are faked: the machine is not fed)
            fed.append(loan_)

        cs._step = noted
        cs.get = lambda x: Record(final.loan, final.role, "proposed", final.contract, updated=final.updated)
        await cs.agreed_elsewhere(agreement)  # an open record: fed
        assert fed == [loan]
        cs.get = lambda x: final
        lending(borrower).documents.recorded = lambda x: set()
        await cs.agreed_elsewhere(agreement)  # a chain without the agreement: fed
        assert fed == [loan, loan] and borrower.store.head(borrower.key.public_key).seq == head
        await stop_all([lender, borrower])
