"""Auto-invest on in-process nodes over real libp2p and LevelDB (issue 11): the node funds
matching requests by itself within its strategy; dry-run shows the same choices; the
decisions and their reasons are in status; the budget holds across runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from framework.inprocess import lending, make_node, start, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.errors import ApiError
from p2pnode.home import Home

pytestmark = pytest.mark.trio

REQUEST = {"side": "borrow", "min_amount": "25.00", "max_amount": "1000.00", "currency": "EUR", "rate": "9%",
           "term": "12m"}


async def test_auto_invest_funds_matching_requests_within_its_budget_and_says_why(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False, budget="EUR=250.00",
                                                per_loan="EUR=100.00", max_share="50%", longest_term="24m"))
        b1 = await start(nursery, make_node(tmp_path / "b1", "b1", pex=False))
        b2 = await start(nursery, make_node(tmp_path / "b2", "b2", pex=False))
        for b in (b1, b2):
            await b.connect(lender.listen_addrs()[0])
        await sync_all([lender, b1, b2])
        ids = [(await b.call("offer.create", REQUEST))["id"] for b in (b1, b2)]
        long = (await b1.call("offer.create", dict(REQUEST, term="36m")))["id"]  # longer than the strategy takes
        await wait_for(lambda: all(lending(lender).book.get(bytes.fromhex(i)) for i in ids + [long]), 10, "the requests")

        dry = await lender.call("autoinvest.dry_run", {})
        assert await lender.call("autoinvest.dry_run", {}) == dry  # the same inputs, the same choices
        by_request = {d["request"]: (d["reason"], d["amount"]) for d in dry["decisions"]}
        assert by_request == {ids[0]: ("fund", 100_00), ids[1]: ("fund", 100_00), long: ("term", 0)}
        assert (await lender.call("loan.list", {}))["loans"] == []  # a dry run does nothing

        on = await lender.call("autoinvest.set", {"on": True})
        assert on["enabled"] and sorted(d["outcome"] for d in on["ran"] if d["reason"] == "fund") == ["agreed"] * 2
        assert Home(lender.home.path).config().sections["autoinvest"]["enabled"] is True  # kept across restarts
        await sync_all([lender, b1, b2])
        loans = (await lender.call("loan.list", {"role": "lender"}))["loans"]
        assert sorted(x["principal"] for x in loans) == [100_00, 100_00]
        assert {x["borrower"] for x in loans} == {b1.peer_id, b2.peer_id}

        # the budget (250) holds: 200 is promised, so no further part of 100 fits, whatever runs next
        again = await lender.call("autoinvest.dry_run", {})
        assert {d["reason"] for d in again["decisions"]} == {"budget", "term"}
        status = await lender.call("autoinvest.status", {})
        assert status["enabled"] and status["strategy"]["budget"] == {"EUR": 250_00}
        assert [d["reason"] for d in status["decisions"]].count("fund") == 2

        off = await lender.call("autoinvest.set", {"on": False})
        assert not off["enabled"] and off["ran"] == []
        await stop_all([lender, b1, b2])


async def test_auto_invest_without_a_strategy_cannot_be_turned_on(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(tmp_path / "n", "n", pex=False))
        with pytest.raises(ApiError) as e:
            await node.call("autoinvest.set", {"on": True})
        assert e.value.code == "no_strategy" and "budget" in e.value.message
        assert not (await node.call("autoinvest.status", {}))["enabled"]
        await stop_all([node])
