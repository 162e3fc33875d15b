"""The secondary market between in-process nodes over real libp2p on 127.0.0.1 and real
LevelDB (p2pnode/lending/market.py): a loan listed at a price and bought, two buyers of
one listing, and the transfers a holder's node never signs on its own.
(tests/net/test_market_cli.py runs a sale through separate processes.)"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import trio

from framework.inprocess import lending, start_mesh, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.errors import ApiError
from protocol.envelope import seal
from protocol.lending import agree

pytestmark = pytest.mark.trio

START = (date.today() - timedelta(days=40)).isoformat()


async def disbursed_loan(lender, borrower, nodes) -> str:
    """A 1,200 EUR loan at 12 % over 3 months from ``lender`` to ``borrower``, started 40
    days ago, disbursed and confirmed, its first installment repaid and receipted."""
    oid = (await lender.call("offer.create", {"side": "lend", "amount": "1200.00", "currency": "EUR", "rate": "12%",
                                               "term": "3m", "grace_days": 5, "default_days": 30}))["id"]
    await wait_for(lambda: lending(borrower).book.get(bytes.fromhex(oid)) is not None, 10, "the offer")
    loan = (await borrower.call("loan.propose", {"offer": oid, "start": START}))["loan"]
    await lender.call("loan.disburse", {"loan": loan, "date": START})
    await sync_all(nodes)
    await borrower.call("loan.confirm", {"loan": loan, "date": START})
    await sync_all(nodes)
    first = (await borrower.call("loan.show", {"loan": loan}))["rows"][0]
    amount = f"{first['payment'] // 100}.{first['payment'] % 100:02d}"
    await lender.call("loan.receipt", {"loan": loan, "amount": amount, "date": first["due"]})
    await sync_all(nodes)
    return loan


async def listed_everywhere(seller, nodes, loan: str, price: str) -> dict:
    listing = await seller.call("loan.sell", {"loan": loan, "price": price})
    await wait_for(lambda: all(any(x.id.hex() == listing["id"] for x in lending(n).market.live()) for n in nodes), 10,
                   "the listing to reach every node")
    return listing


async def test_a_loan_sold_at_a_price_moves_its_claim_and_receipts_to_the_buyer(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower, buyer = nodes = await start_mesh(nursery, tmp_path, 3)
        loan = await disbursed_loan(lender, borrower, nodes)
        with pytest.raises(ApiError) as e:
            await buyer.call("loan.sell", {"loan": loan, "price": "1.00"})
        assert e.value.code == "not_holder"
        listing = await listed_everywhere(lender, nodes, loan, "790.00")
        view = (await buyer.call("market.list", {}))["listings"]
        assert [x["id"] for x in view] == [listing["id"]]
        shown = view[0]
        assert shown["price"] == 79000 and shown["days_past_due"] == 0 and shown["state"] == "current"
        assert shown["remaining_principal"] == (await buyer.call("loan.show", {"loan": loan}))["outstanding_principal"]
        assert shown["ytm_bp"] is not None and shown["ytm_bp"] > 1200  # bought below the principal: more than 12 %
        assert shown["grade"] is not None and not shown["mine"]

        bought = await buyer.call("loan.buy", {"listing": listing["id"]})
        assert bought["price"] == 79000 and bought["after"] == 2 and bought["from"] == lender.peer_id
        await sync_all(nodes)
        await wait_for(lambda: lending(borrower).documents.read(bytes.fromhex(loan)).recorded_by(
            borrower.key.public_key) >= {bytes.fromhex(bought["transfer"])}, 10, "the borrower to record the sale")
        for n in nodes:  # every node: the buyer holds the claim; the transfer records its price
            v = await n.call("loan.show", {"loan": loan})
            assert v["holder"] == buyer.peer_id, n
        assert (await buyer.call("market.list", {}))["listings"] == []  # sold: it stands no more
        assert lending(lender).market.own == {}

        # the next installment is the buyer's to receipt, never the seller's
        second = (await borrower.call("loan.show", {"loan": loan}))["rows"][1]
        amount = f"{second['payment'] // 100}.{second['payment'] % 100:02d}"
        with pytest.raises(ApiError) as e:
            await lender.call("loan.receipt", {"loan": loan, "amount": amount})
        assert e.value.code == "not_holder"
        await buyer.call("loan.receipt", {"loan": loan, "amount": amount})
        await sync_all(nodes)
        for n in nodes:
            v = await n.call("loan.show", {"loan": loan})
            assert len(v["counted"]) == 3 and v["holder"] == buyer.peer_id
        mine = (await buyer.call("portfolio.show", {}))["lender"]["EUR"]
        assert mine["loans"] == 1 and mine["outstanding"] == (await buyer.call("loan.show", {"loan": loan}))[
            "outstanding_principal"]
        await stop_all(nodes)


async def test_two_buyers_of_one_listing_never_both_get_the_claim(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower, b1, b2 = nodes = await start_mesh(nursery, tmp_path, 4)
        loan = await disbursed_loan(lender, borrower, nodes)
        listing = await listed_everywhere(lender, nodes, loan, "800.00")
        outcomes: dict[str, object] = {}

        async def buy(node) -> None:
            try:
                outcomes[node.peer_id] = await node.call("loan.buy", {"listing": listing["id"]})
            except ApiError as e:
                outcomes[node.peer_id] = e.code

        async with trio.open_nursery() as buyers:
            buyers.start_soon(buy, b1)
            buyers.start_soon(buy, b2)
        won = [k for k, v in outcomes.items() if isinstance(v, dict)]
        lost = [v for v in outcomes.values() if not isinstance(v, dict)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert lost[0] in ("not_listed", "not_holder"), outcomes
        await sync_all(nodes)
        for n in nodes:
            assert (await n.call("loan.show", {"loan": loan}))["holder"] == won[0]
        await stop_all(nodes)


async def test_a_holder_signs_no_transfer_without_a_price_or_off_its_listing(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender, borrower, buyer = nodes = await start_mesh(nursery, tmp_path, 3)
        loan = await disbursed_loan(lender, borrower, nodes)
        ask = lending(buyer).countersigning.ask
        base = {"type": "transfer", "loan": bytes.fromhex(loan), "from": lender.key.public_key,
                "to": buyer.key.public_key, "after": 2, "date": date.today().isoformat()}
        # not listed at all
        answer = await ask(lender.key.public_key, agree.Transfer(seal(dict(base, price=80000), buyer.key).raw))
        assert isinstance(answer, agree.Refused) and answer.code == "not_listed"
        await listed_everywhere(lender, nodes, loan, "800.00")
        cases = {
            "no_price": seal(base, lender.key),  # the old push, signed by from: never accepted on its own
            "wrong_price": seal(dict(base, price=1), buyer.key),
            "stale_after": seal(dict(base, price=80000, after=1), buyer.key),
            "bad_date": seal(dict(base, price=80000, date=START), buyer.key),
        }
        for code, env in cases.items():
            answer = await ask(lender.key.public_key, agree.Transfer(env.raw))
            assert isinstance(answer, agree.Refused) and answer.code == code, (code, answer)
        # a transfer pushed to the buyer with no price is refused there too
        push = seal(dict(base), lender.key)
        answer = await lending(lender).countersigning.ask(buyer.key.public_key, agree.Transfer(push.raw))
        assert isinstance(answer, agree.Refused) and answer.code in ("no_price", "not_party")
        for n in nodes:
            assert (await n.call("loan.show", {"loan": loan}))["holder"] == lender.peer_id
        # the borrower cannot buy its own loan; a withdrawn listing cannot be bought
        with pytest.raises(ApiError) as e:
            await borrower.call("loan.buy", {"listing": lending(lender).market.live()[0].id.hex()})
        assert e.value.code == "bad_peer"
        listing = lending(lender).market.live()[0].id.hex()
        assert (await lender.call("loan.sell", {"loan": loan, "withdraw": True}))["withdrawn"] == [listing]
        with pytest.raises(ApiError) as e:
            await buyer.call("loan.buy", {"listing": listing})
        assert e.value.code == "not_listed"
        await stop_all(nodes)
