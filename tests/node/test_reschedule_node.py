"""Reschedules between in-process nodes over real libp2p and LevelDB (loan.reschedule,
p2pnode/lending/amendments.py): no node signs an amendment on its own, a stranger can
neither propose nor be asked, other terms are a counter-proposal, and an amendment
agreed is recorded in both chains and seen alike by a third node.
(tests/net/test_reschedule_cli.py runs the story through separate processes.)"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import trio

from framework.inprocess import lending, start_mesh, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.errors import ApiError
from protocol.lending import agree
from protocol.lending.amendment import make_amendment, propose_amendment

from test_loans import offer, seen_offer

pytestmark = pytest.mark.trio

START = (date.today() - timedelta(days=40)).isoformat()


def amendment_entries(node, loan: str) -> list:
    return [e for e in lending(node).documents.read(bytes.fromhex(loan)).entries
            if e.kind == "loan.amendment" and e.author == node.key.public_key]


async def disbursed(lender, borrower, nodes) -> str:
    oid = await offer(lender)
    await seen_offer(nodes, oid)
    loan = (await borrower.call("loan.propose", {"offer": oid, "start": START}))["loan"]
    await lender.call("loan.disburse", {"loan": loan, "date": START})
    await sync_all(nodes)
    await borrower.call("loan.confirm", {"loan": loan})
    await sync_all(nodes)
    return loan


async def test_both_owners_must_run_it_and_a_stranger_can_do_nothing(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower, stranger = nodes = await start_mesh(nursery, tmp_path, 3)
        loan = await disbursed(lender, borrower, nodes)
        with pytest.raises(ApiError) as e:
            await stranger.call("loan.reschedule", {"loan": loan, "rate": "6%", "term": "6m"})
        assert e.value.code == "not_party"
        # A stranger's proposal, sent straight to the borrower's node, is refused.
        doc = make_amendment(loan=bytes.fromhex(loan), borrower=borrower.key.public_key,
                             holder=stranger.key.public_key, after=1, day=date.today(), rate_bp=0, term="6m",
                             kind="annuity")
        answer = await lending(stranger).countersigning.ask(borrower.key.public_key,
                                                            agree.Amend(propose_amendment(stranger.key, doc).raw))
        assert isinstance(answer, agree.Refused) and answer.code in ("not_party", "bad_proposal"), answer

        asked = await borrower.call("loan.reschedule", {"loan": loan, "rate": "6%", "term": "6m"})
        assert asked["state"] == "proposed"
        shown = await lender.call("loan.show", {"loan": loan})
        assert shown["amendment_pending"]["theirs"]["amendment"] == asked["amendment"]
        assert shown["amendments"] == [] and amendment_entries(lender, loan) == []  # nothing signed on its own
        # The lender's other terms are a counter-proposal: nothing is signed yet either.
        counter = await lender.call("loan.reschedule", {"loan": loan, "rate": "8%", "term": "6m"})
        assert counter["state"] == "proposed" and counter["amendment"] != asked["amendment"]
        theirs = (await borrower.call("loan.show", {"loan": loan}))["amendment_pending"]["theirs"]
        assert theirs["rate_bp"] == 800
        agreed = await borrower.call("loan.reschedule", {"loan": loan, "rate": "8%", "term": "6m"})
        assert agreed["state"] == "agreed" and agreed["amendment"] == counter["amendment"]
        await sync_all(nodes)
        await wait_for(lambda: len(amendment_entries(lender, loan)) == 1, 10, "the lender to record the amendment")
        assert len(amendment_entries(borrower, loan)) == 1
        views = [await x.call("loan.show", {"loan": loan}) for x in nodes]
        assert all(len(v["amendments"]) == 1 and v["amendments"][0]["rate_bp"] == 800 for v in views)
        for v in views:
            for k in ("role", "shown_state", "amendment_pending"):
                v.pop(k)
        assert views[0] == views[1] == views[2]
        # One amendment per receipt: a second one now would not count.
        with pytest.raises(ApiError) as e:
            await lender.call("loan.reschedule", {"loan": loan, "rate": "5%", "term": "3m"})
        assert e.value.code == "conflict"
        await stop_all(nodes)


async def test_owners_who_run_it_at_once_with_the_same_terms_agree(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower, observer = nodes = await start_mesh(nursery, tmp_path, 3)
        loan = await disbursed(lender, borrower, nodes)
        params = {"loan": loan, "rate": "4.5%", "term": "12w", "period_days": 14, "schedule": "equal-principal"}
        answers = []

        async def run(node) -> None:
            answers.append(await node.call("loan.reschedule", params))

        async with trio.open_nursery() as both:
            both.start_soon(run, lender)
            both.start_soon(run, borrower)
        assert "agreed" in {a["state"] for a in answers}, answers
        await sync_all(nodes)
        await wait_for(lambda: all(len(amendment_entries(x, loan)) == 1 for x in (lender, borrower)), 10,
                       "both chains to record one amendment")
        v = await observer.call("loan.show", {"loan": loan})
        (a,) = v["amendments"]
        assert a["period_days"] == 14 and a["schedule"] == "equal-principal" and v["state"] == "current"
        await stop_all(nodes)
