"""Credit on in-process nodes over real libp2p and LevelDB (p2pnode/lending/credit.py): a
repaid loan grades its borrower in its lender's eyes, `loan pending` shows the proposer's
credit, `offer list` the grade of each author, and what credit keeps survives a restart
(or is built once for a store made before it)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import trio

from framework.inprocess import again, lending, make_node, start, start_mesh, start_watched, stop_all, stop_watched, sync_all
from framework.wait import wait_for

pytestmark = pytest.mark.trio

START = (date.today() - timedelta(days=45)).isoformat()
TERMS = {"amount": "300.00", "currency": "EUR", "rate": "10%", "term": "1m"}


async def repaid_loan(lender, borrower, accept: bool = False) -> str:
    """A one-month loan from ``lender`` to ``borrower`` taken from a lend offer, repaid."""
    loan = await disbursed_loan(lender, borrower, accept)
    await repay(lender, borrower, loan)
    return loan


async def disbursed_loan(lender, borrower, accept: bool = False) -> str:
    """A one-month loan from ``lender`` to ``borrower`` taken from a lend offer, disbursed
    and confirmed, nothing repaid."""
    oid = (await lender.call("offer.create", dict(TERMS, side="lend")))["id"]
    await wait_for(lambda: lending(borrower).book.get(bytes.fromhex(oid)) is not None, 10, "the offer")
    p = await borrower.call("loan.propose", {"offer": oid, "start": START})
    if accept:
        assert p["state"] == "held"
        await lender.call("loan.accept", {"loan": p["loan"]})
    loan = p["loan"]
    await sync_all([lender, borrower])
    await lender.call("loan.disburse", {"loan": loan, "date": START})
    await sync_all([lender, borrower])
    await borrower.call("loan.confirm", {"loan": loan})
    await sync_all([lender, borrower])
    return loan


async def repay(lender, borrower, loan: str) -> None:
    """Every installment of ``loan`` repaid, each receipt countersigned by the lender."""
    for row in (await borrower.call("loan.show", {"loan": loan}))["rows"]:
        amount = f"{row['payment'] // 100}.{row['payment'] % 100:02d}"
        await borrower.call("loan.repay", {"loan": loan, "amount": amount, "date": row["due"]})
        await sync_all([lender, borrower])
        await lender.call("loan.receipt", {"loan": loan, "amount": amount, "date": row["due"]})
    await sync_all([lender, borrower])


async def test_a_repaid_loan_grades_its_borrower_in_pending_offer_list_and_credit_show(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False, review=True))
        borrower = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        fresh = await lender.call("credit.show", {"peer": borrower.peer_id})
        assert fresh["grade"] == "none" and "factors" not in fresh

        await repaid_loan(lender, borrower, accept=True)
        p = await wait_for_grade(lender, borrower.peer_id)
        assert p["repaid"] == p["repaid_on_time"] == 1 and p["trusted_repaid_pm"] == 1000 and p["owed"] == {}
        assert lending(lender).standing(borrower.key.public_key) == 2

        # the borrower asks again: the lender's owner sees its credit in the review
        oid = (await lender.call("offer.create", dict(TERMS, side="lend")))["id"]
        await wait_for(lambda: lending(borrower).book.get(bytes.fromhex(oid)) is not None, 10, "the offer")
        held = await borrower.call("loan.propose", {"offer": oid})
        pending = (await lender.call("loan.pending"))["pending"]
        assert [x["loan"] for x in pending] == [held["loan"]]
        assert pending[0]["proposer_credit"]["grade"] == p["grade"] and pending[0]["proposer_credit"]["repaid"] == 1
        # and a request to borrow shows its author's grade in the lender's book
        rid = (await borrower.call("offer.create", dict(TERMS, side="borrow")))["id"]
        await wait_for(lambda: lending(lender).book.get(bytes.fromhex(rid)) is not None, 10, "the request")
        listed = {o["id"]: o for o in (await lender.call("offer.list", {"side": "borrow"}))["offers"]}
        assert listed[rid]["grade"] == p["grade"]
        assert (await lender.call("offer.show", {"id": rid}))["grade"] == p["grade"]
        # its debt shows as soon as it owes: the held proposal accepted and disbursed
        await lender.call("loan.accept", {"loan": held["loan"]})
        await sync_all([lender, borrower])
        await lender.call("loan.disburse", {"loan": held["loan"]})
        await sync_all([lender, borrower])
        await borrower.call("loan.confirm", {"loan": held["loan"]})
        await sync_all([lender, borrower])
        owing = await lender.call("credit.show", {"peer": borrower.peer_id, "explain": True})
        assert owing["owed"] == {"EUR": 30000} and owing["owed_by_lender"] == {lender.peer_id: {"EUR": 30000}}
        assert owing["factors"][0]["name"] == "repaid"
        await stop_all([lender, borrower])


async def wait_for_grade(viewer, peer: str) -> dict:
    got: dict = {}

    async def graded() -> bool:
        got.update(await viewer.call("credit.show", {"peer": peer}))
        return got["grade"] != "none"

    for _ in range(100):
        if await graded():
            return got
        await trio.sleep(0.1)
    raise AssertionError(f"no grade: {got}")


async def test_what_credit_keeps_survives_a_restart_and_is_built_once_for_an_older_store(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, lender_ended = await start_watched(nursery, make_node(tmp_path / "l", "l", pex=False))
        borrower = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        await repaid_loan(lender, borrower)
        before = await wait_for_grade(lender, borrower.peer_id)
        await stop_watched(lender, lender_ended)
        with lender.home.open_store() as store:  # as a store made before credit: none of its records
            records = store.records("lending")
            kept = [k for k in records.keys(b"c")]
            assert any(k.startswith(b"cR") for k in kept) and any(k.startswith(b"cF") for k in kept)
            records.write([], kept, sync=True)
        lender, lender_ended = await start_watched(nursery, again(lender))
        after = await lender.call("credit.show", {"peer": borrower.peer_id})
        assert (after["grade"], after["repaid"], after["trusted_repaid_pm"]) == (before["grade"], 1, 1000)
        await stop_all([lender, borrower])


async def test_the_grade_mapping_is_read_from_the_credit_section(tmp_path: Path):
    """``[credit] grade_scores`` and ``min_rates`` decide the grade and the rate one history
    earns: the same repaid loan grades its borrower E under the defaults and A under a
    lender whose A needs a score of 5."""
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False, grade_scores="A=5 B=3 C=1",
                                                min_rates="A=3.5% none=30%"))
        borrower = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        assert (await lender.call("credit.show", {"peer": borrower.peer_id}))["min_rate_bp"] == 3000
        await repaid_loan(lender, borrower)
        p = await wait_for_grade(lender, borrower.peer_id)
        assert (p["grade"], p["min_rate_bp"]) == ("A", 350), p
        default = await borrower.call("credit.show", {"peer": lender.peer_id})  # (the defaults elsewhere)
        assert default["grade"] == "none" and default["min_rate_bp"] == 2400
        await stop_all([lender, borrower])


async def test_a_credit_setting_that_is_not_a_mapping_is_refused_naming_it():
    from p2pnode.lending.settings import credit_params_of

    for bad, says in (("A=10 C=5", "without a gap"), ("A=10 B=20", "higher score"), ("Z=1", "Z=1"),
                      ("A=x", "whole number")):
        with pytest.raises(ValueError, match=says):
            credit_params_of({"grade_scores": bad})
    with pytest.raises(ValueError, match="percentage"):
        credit_params_of({"amount_factors": "A=3"})
    with pytest.raises(ValueError, match="min_rates"):
        credit_params_of({"min_rates": "A"})


async def test_a_profile_reuses_the_histories_of_loans_that_did_not_change(tmp_path: Path):
    """Each loan's history is kept per day and set of its documents (credit.py ``_history``):
    a profile after a new walk re-reads no unchanged loan, one after a second loan reads
    that loan alone, and every profile equals the one made with nothing kept."""
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False))
        borrower = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        await repaid_loan(lender, borrower)
        credit = lending(lender).credit
        me, them = lender.key.public_key, borrower.key.public_key
        today = lender.clock.today()
        reads = []
        read = credit._history.__func__

        def counted(self, loan, author, day):  # (counts the loans read again, not the kept ones)
            before = dict(self._kept)
            h = read(self, loan, author, day)
            if before.get(loan) is not self._kept.get(loan):
                reads.append(loan)
            return h

        credit._history = counted.__get__(credit)
        first = credit.histories(them, today)
        assert len(first) == 1 and len(reads) == 1
        assert credit.histories(them, today) == first and len(reads) == 1  # nothing new: nothing read
        await repaid_loan(lender, borrower)
        second = credit.histories(them, today)
        assert len(second) == 2 and len(reads) == 2  # the new loan alone
        credit._kept.clear()
        assert credit.histories(them, today) == second  # the same as made afresh
        assert credit.profile(them) == credit.profile(them) and me != them
        await stop_all([lender, borrower])


async def test_a_loan_history_kept_is_made_again_once_an_entry_about_the_loan_is_stored(tmp_path: Path):
    """``_history`` keeps a loan's history without reading the loan index again; what drops
    it is ``take`` seeing a stored entry about that loan (credit.py). A loan read while
    disbursed reads as repaid once its repayments are stored, the same as made afresh."""
    async with trio.open_nursery() as nursery:
        lender, borrower = await start_mesh(nursery, tmp_path, 2)
        loan = await disbursed_loan(lender, borrower)
        credit = lending(lender).credit
        them, today = borrower.key.public_key, lender.clock.today()
        (before,) = credit.histories(them, today)
        kept = credit._kept[bytes.fromhex(loan)]
        entries = lending(lender).documents.read(bytes.fromhex(loan)).entries
        agreements = [e for e in entries if e.kind == "loan.agreement"]
        assert len(agreements) == 2
        credit.take(agreements)  # (an agreement again: its contract is the one kept, nothing changes)
        assert credit._kept[bytes.fromhex(loan)] is kept
        credit.take([e for e in entries if e.kind == "loan.receipt"][:1])  # a receipt: made again
        assert bytes.fromhex(loan) not in credit._kept
        assert credit.histories(them, today) == [before]
        await repay(lender, borrower, loan)
        (after,) = credit.histories(them, today)
        assert after != before and after.state.repaid_on is not None and before.state.repaid_on is None
        credit._kept.clear()
        assert credit.histories(them, today) == [after]
        await stop_all([lender, borrower])
