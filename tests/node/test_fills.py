"""Fractional funding on in-process nodes over real libp2p and LevelDB (issue 11): an
offer is taken in parts, each its own contract; several takers at once never fill more
than its amount; every book shows what is funded and what remains."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from framework.inprocess import lending, make_node, start, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.errors import ApiError

pytestmark = pytest.mark.trio

OFFER = {"side": "lend", "min_amount": "100.00", "max_amount": "1000.00", "currency": "EUR", "rate": "8%",
         "term": "6m"}


def fill_on(node, oid: str) -> dict | None:
    o = lending(node).book.get(bytes.fromhex(oid))
    if o is None:
        return None
    from p2pnode.lending.fills import fill_now

    return fill_now(lending(node).ctx, o).to_json()


async def test_three_takers_at_once_fill_the_offer_in_parts_and_never_past_its_amount(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False))
        takers = [await start(nursery, make_node(tmp_path / f"t{i}", f"t{i}", pex=False)) for i in range(4)]
        for t in takers:
            await t.connect(lender.listen_addrs()[0])
        everyone = [lender, *takers]
        await sync_all(everyone)
        oid = (await lender.call("offer.create", OFFER))["id"]
        await wait_for(lambda: all(fill_on(t, oid) is not None for t in takers), 10, "the offer in every book")

        answers: list[dict] = []

        async def take(node) -> None:
            answers.append(await node.call("loan.propose", {"offer": oid, "amount": "400.00"}))

        async with trio.open_nursery() as at_once:  # three proposals of 400 on 1000, in flight together
            for t in takers[:3]:
                at_once.start_soon(take, t)
        states = sorted(a["state"] for a in answers)
        assert states == ["agreed", "agreed", "refused"], answers
        refused = next(a for a in answers if a["state"] == "refused")
        assert refused["code"] == "offer_exhausted" and "remain" in refused["reason"], refused

        await sync_all(everyone)
        shown = (await takers[3].call("offer.show", {"id": oid}))["fill"]
        assert (shown["funded"], shown["remaining"], shown["parts"]) == (800_00, 200_00, 2), shown
        listed = (await lender.call("offer.list", {}))["offers"]
        assert [o["fill"]["remaining"] for o in listed if o["id"] == oid] == [200_00]

        # a part below the minimum that would strand the rest is refused before anything is sent;
        # the last 200 (below no minimum: it takes all that remains) is agreed and the offer leaves every book
        with pytest.raises(ApiError) as e:
            await takers[3].call("loan.propose", {"offer": oid, "amount": "50.00"})
        assert e.value.code == "below_minimum"
        last = await takers[3].call("loan.propose", {"offer": oid})  # (default: all that remains)
        assert last["state"] == "agreed" and last["principal"] == 200_00, last
        await wait_for(lambda: all(fill_on(n, oid) is None for n in everyone), 15, "the used-up offer to leave every book")
        agreements = [e for e in lending(lender).ctx.chains.chain(lender.key.public_key) if b"loan.agreement" in e]
        assert len(agreements) == 3
        await stop_all(everyone)


async def test_a_held_part_is_admitted_again_when_its_owner_accepts_it(tmp_path: Path):
    """Nothing is reserved for a proposal held for review: if other parts used the offer
    up meanwhile, accepting it is refused with offer_exhausted and nothing is signed."""
    async with trio.open_nursery() as nursery:
        lender = await start(nursery, make_node(tmp_path / "l", "l", pex=False, review=True))
        a = await start(nursery, make_node(tmp_path / "a", "a", pex=False))
        b = await start(nursery, make_node(tmp_path / "b", "b", pex=False))
        for t in (a, b):
            await t.connect(lender.listen_addrs()[0])
        await sync_all([lender, a, b])
        oid = (await lender.call("offer.create", OFFER))["id"]
        await wait_for(lambda: fill_on(a, oid) is not None and fill_on(b, oid) is not None, 10, "the offer")
        held_a = await a.call("loan.propose", {"offer": oid, "amount": "700.00"})
        held_b = await b.call("loan.propose", {"offer": oid, "amount": "600.00"})
        assert held_a["state"] == held_b["state"] == "held"
        await lender.call("loan.accept", {"loan": held_a["loan"]})
        with pytest.raises(ApiError) as e:
            await lender.call("loan.accept", {"loan": held_b["loan"]})
        assert e.value.code == "offer_exhausted"
        assert fill_on(lender, oid)["remaining"] == 300_00
        await stop_all([lender, a, b])
