"""The portfolio on in-process nodes over real libp2p and LevelDB (issue 11): a lender's
totals agree with `loan list` to the minor unit, a loan 90+ days past due is its NPL, and
the borrower sees what it owes."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
import trio

from framework.inprocess import lending, make_node, start, stop_all, sync_all
from framework.wait import wait_for

pytestmark = pytest.mark.trio


def days_ago(n: int) -> str:
    return (date.today() - timedelta(days=n)).isoformat()


async def loan(lender, borrower, amount: str, start: str, repay: bool) -> str:
    oid = (await lender.call("offer.create", {"side": "lend", "amount": amount, "currency": "EUR", "rate": "10%",
                                              "term": "3m"}))["id"]
    await wait_for(lambda: lending(borrower).book.get(bytes.fromhex(oid)) is not None, 10, "the offer")
    p = await borrower.call("loan.propose", {"offer": oid, "start": start})
    assert p["state"] == "agreed", p
    await sync_all([lender, borrower])
    await lender.call("loan.disburse", {"loan": p["loan"], "date": start})
    await sync_all([lender, borrower])
    await borrower.call("loan.confirm", {"loan": p["loan"]})
    if repay:
        for row in (await borrower.call("loan.show", {"loan": p["loan"]}))["rows"]:
            text = f"{row['payment'] // 100}.{row['payment'] % 100:02d}"
            await borrower.call("loan.repay", {"loan": p["loan"], "amount": text, "date": row["due"]})
            await sync_all([lender, borrower])
            await lender.call("loan.receipt", {"loan": p["loan"], "amount": text, "date": row["due"]})
    await sync_all([lender, borrower])
    return p["loan"]


async def test_a_lenders_totals_agree_with_loan_list_and_a_late_loan_is_its_npl(tmp_path: Path, capsys):
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False))
        good = await start(nursery, make_node(tmp_path / "g", "g", pex=False))
        late = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        for n in (good, late):
            await n.connect(lender.listen_addrs()[0])
        await sync_all([lender, good, late])
        await loan(lender, good, "300.00", days_ago(120), repay=True)
        bad = await loan(lender, late, "1000.00", days_ago(200), repay=False)  # every installment 100+ days late
        await loan(lender, good, "500.00", days_ago(10), repay=False)  # current

        p = await lender.call("portfolio.show", {})
        eur = p["lender"]["EUR"]
        listed = (await lender.call("loan.list", {"role": "lender"}))["loans"]
        assert eur["outstanding"] == sum(x["outstanding"] for x in listed)  # to the minor unit
        assert eur["loans"] == len(listed) == 3
        assert sum(eur["by_borrower"].values()) == sum(eur["by_grade"].values()) == eur["outstanding"]
        shown_bad = await lender.call("loan.show", {"loan": bad})
        assert shown_bad["days_past_due"] >= 90
        assert eur["npl"] == next(x["outstanding"] for x in listed if x["loan"] == bad)
        assert eur["npl_bp"] == eur["npl"] * 10_000 // eur["outstanding"]
        assert eur["expected_loss"]["outstanding"] == eur["outstanding"]
        assert eur["interest_received"] > 0 and eur["nar_bp"] is not None
        assert sum(eur["cash_flows"].values()) > 0

        owes = (await late.call("portfolio.show", {}))["borrower"]["EUR"]
        mine = (await late.call("loan.list", {"role": "borrower"}))["loans"]
        assert owes["outstanding"] == sum(x["outstanding"] for x in mine) == 1000_00
        assert owes["due_now"] > 0 and owes["payoff"] >= owes["outstanding"]
        assert (await late.call("portfolio.show", {}))["lender"] == {}

        from cli.lending.portfolio import _borrower, _lender  # the text `p2pnode portfolio` prints of them

        capsys.readouterr()
        _lender("EUR", eur, None)
        _borrower("EUR", owes)
        text = capsys.readouterr().out
        from cli.lending.portfolio_plot import terminal_chart, write_png

        png = tmp_path / "portfolio.png"  # --plot: allocation and cash flows, drawn from the same answer
        assert write_png(p, png) == 3 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        chart = terminal_chart(p)  # --chart: the same in the terminal, each point listed with its value
        for month, minor in eur["cash_flows"].items():
            assert f"{month} {minor / 100:,.2f}" in chart
        assert "as a lender, EUR" in text and "NPL" in text and "as a borrower, EUR" in text and "1000.00 EUR" in text
        await stop_all([lender, good, late])


async def test_the_lenders_own_reserve_sets_aside_interest_follows_provisions_and_is_in_its_chain(tmp_path: Path):
    """Issue 11's reserve: each lender keeps its own, in its own chain (no pooled fund).
    Interest received sets aside its share; the reserve follows the provisions a late loan
    requires; a second update with nothing new appends nothing; another node replays the
    same balance from the lender's chain alone."""
    from protocol.entry import parse_entry
    from protocol.lending.reserve import replay

    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False))
        good = await start(nursery, make_node(tmp_path / "g", "g", pex=False))
        late = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        for n in (good, late):
            await n.connect(lender.listen_addrs()[0])
        await sync_all([lender, good, late])
        await loan(lender, good, "300.00", days_ago(120), repay=True)  # the receipts set interest aside
        shown = await lender.call("reserve.show", {})
        eur = shown["reserves"]["EUR"]
        assert eur["set_aside"] > 0 and eur["balance"] >= eur["set_aside"]
        await loan(lender, late, "1000.00", days_ago(200), repay=False)  # doubtful: 50% required
        updated = await lender.call("reserve.update", {})
        eur = updated["reserves"]["EUR"]
        assert eur["required"] == 500_00 and eur["balance"] == eur["required"] and eur["shortfall"] == 0
        assert eur["coverage_bp"] == 10_000 and [b["kind"] for b in updated["appended"]] == ["top_up"]
        again = await lender.call("reserve.update", {})
        assert again["appended"] == [] and again["reserves"] == updated["reserves"]

        await sync_all([lender, good, late])  # anyone holding the chain replays the same balance
        me = lender.key.public_key
        held = [parse_entry(raw) for raw in lending(good).ctx.chains.chain(me)]  # the lender's chain, on another node
        bodies = [e.body for e in held if e.kind == "reserve.entry"]
        assert len(bodies) >= 2 and replay(bodies, "EUR").balance == eur["balance"]
        await stop_all([lender, good, late])


async def test_a_second_portfolio_reuses_what_did_not_change_and_equals_a_fresh_one(tmp_path: Path):
    """The node keeps each loan's holding per day and documents (statecache.py): asked
    again with nothing new, a cache derives no loan; after a new receipt and a new loan, it
    derives those two only; and every answer of the node (whose own cache the background
    pass of keep_holdings also fills) is the one computed afresh (cache cleared)."""
    from p2pnode.lending import loanview
    from p2pnode.lending.statecache import StateCache
    from protocol.lending.loanstate import loan_evaluation

    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False))
        borrower = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        await borrower.connect(lender.listen_addrs()[0])
        await sync_all([lender, borrower])
        first = await loan(lender, borrower, "300.00", days_ago(100), repay=False)
        await loan(lender, borrower, "200.00", days_ago(40), repay=False)
        loans = lending(lender).loans
        # a cache of the test's own, on the node's store (the node's is also filled in the background)
        cache, day = StateCache(), loans.today()

        def derive_all() -> list:
            return cache.each(loans.ctx.chains, loans.ctx.index, day, lambda rec: loans._holding(rec, day))

        async def fresh() -> dict:
            loans._states.clear()
            loanview._evaluated.clear()
            return await lender.call("portfolio.show", {})

        def evaluations() -> dict:
            """Each loan's evaluation as kept (asked twice: the same values), checked
            against one made afresh from the same record."""
            out = {}
            for loan_id in loanview.loan_ids(loans.ctx.index):
                rec = loanview.read_loan(loans.ctx.chains, loans.ctx.index, loan_id)
                kept = rec.evaluated(day)
                assert loanview.read_loan(loans.ctx.chains, loans.ctx.index, loan_id).evaluated(day) is kept
                assert kept == loan_evaluation(loan_id, rec.contract, list(rec.receipts.values()),
                                               list(rec.transfers.values()), rec.notices, day,
                                               list(rec.amendments.values()))
                assert replace(rec, receipts={}).source is None  # (another record: evaluated afresh)
                out[loan_id] = kept
            return out

        p1 = await lender.call("portfolio.show", {})
        assert p1 == await fresh()
        held = derive_all()
        derived = cache.derived
        assert derive_all() == held and cache.derived == derived  # nothing new: nothing derived
        before = evaluations()
        row = (await borrower.call("loan.show", {"loan": first}))["rows"][0]
        await lender.call("loan.receipt", {"loan": first, "amount": f"{row['payment'] // 100}.{row['payment'] % 100:02d}",
                                           "date": row["due"]})
        await loan(lender, borrower, "100.00", days_ago(10), repay=False)
        await sync_all([lender, borrower])
        derive_all()
        assert cache.derived - derived == 2  # the loan with a new receipt, and the new loan
        after = evaluations()  # (loanview._Evaluated: a new receipt is a new key, never the old value)
        assert len(after) == 3 and after[bytes.fromhex(first)] != before[bytes.fromhex(first)]
        assert all(after[k] is v for k, v in before.items() if k != bytes.fromhex(first))
        p2 = await lender.call("portfolio.show", {})
        assert p2 != p1 and p2["lender"]["EUR"]["loans"] == 3
        assert p2 == await fresh()
        owes = await borrower.call("portfolio.show", {})  # the borrower's side: the same
        lending(borrower).loans._states.clear()
        assert owes == await borrower.call("portfolio.show", {}) and owes["borrower"]["EUR"]["outstanding"] > 0
        await stop_all([lender, borrower])
