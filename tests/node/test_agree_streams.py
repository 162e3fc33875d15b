"""The agree protocol's streams are kept between requests (p2pnode/lending/ask.py), on
in-process nodes over real libp2p and LevelDB: contracts in a row share one stream; a kept
stream the other side ended is replaced by a new one, and the request still answered."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from framework.inprocess import lending, start_mesh, stop_all
from framework.wait import wait_for

pytestmark = pytest.mark.trio

TERMS = {"side": "lend", "currency": "EUR", "rate": "8%", "term": "6m"}


async def _offer(lender, borrower, amount: str) -> str:
    oid = (await lender.call("offer.create", dict(TERMS, amount=amount)))["id"]
    await wait_for(lambda: lending(borrower).book.get(bytes.fromhex(oid)) is not None, 10, "the offer at the borrower")
    return oid


async def test_contracts_in_a_row_share_one_agree_stream(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower = await start_mesh(nursery, tmp_path, 2)
        for k in range(3):
            oid = await _offer(lender, borrower, f"{500 + k}.00")
            assert (await borrower.call("loan.propose", {"offer": oid}))["state"] == "agreed"
        assert borrower.counters["agree.streams_opened"] == 1
        assert borrower.counters["agree.streams_reused"] == 2
        await stop_all([lender, borrower])


async def test_a_kept_stream_the_other_side_ended_is_replaced_and_the_proposal_answered(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower = await start_mesh(nursery, tmp_path, 2)
        oid = await _offer(lender, borrower, "500.00")
        assert (await borrower.call("loan.propose", {"offer": oid}))["state"] == "agreed"
        asker = lending(borrower).countersigning._asker
        [(_, kept)] = asker._idle[lender.key.public_key]
        await kept.raw.reset()  # the stream ends under the borrower, as an idle end or an older node would
        oid = await _offer(lender, borrower, "501.00")
        assert (await borrower.call("loan.propose", {"offer": oid}))["state"] == "agreed"
        assert borrower.counters["agree.streams_reused"] == 1
        assert borrower.counters["agree.streams_opened"] == 2
        assert lender.key.public_key in asker._single  # its streams are not kept again
        await stop_all([lender, borrower])
