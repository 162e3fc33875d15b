"""The offer book across in-process nodes over real libp2p and real LevelDB."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from nodenet import make_node, start, start_line, stop_all, wait_for
from p2pnode import offers as offers_mod
from p2pnode.control import ApiError
from protocol import wire
from protocol.envelope import open_envelope, seal

pytestmark = pytest.mark.trio

TERMS = {"side": "lend", "amount": "500.00", "currency": "EUR", "rate": "8%", "term": "6m"}


def held(node, oid: str) -> bool:
    return node.offers.get(bytes.fromhex(oid)) is not None


async def test_offers_and_cancellations_reach_every_book_and_late_joiners(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        nodes = await start_line(nursery, tmp_path, 3, pex=False)
        o = await nodes[0].call("offer.create", TERMS)
        await wait_for(lambda: held(nodes[2], o["id"]), 10, "the offer at the far end")
        listed = await nodes[2].call("offer.list", {"side": "lend", "currency": "EUR", "amount": "500.00"})
        assert [x["id"] for x in listed["offers"]] == [o["id"]]
        assert (await nodes[2].call("offer.list", {"max_rate": "7%"}))["offers"] == []
        with pytest.raises(ApiError) as e:
            await nodes[2].call("offer.cancel", {"id": o["id"]})
        assert e.value.code == "not_yours"
        # a node that connects after the offer went out gets it: offers are published again on connect
        late = await start(nursery, make_node(tmp_path / "late", "late", pex=False))
        await late.connect(nodes[2].listen_addrs()[0])
        await wait_for(lambda: held(late, o["id"]), 15, "the late joiner to get the offer")
        await nodes[0].call("offer.cancel", {"id": o["id"][:10]})
        await wait_for(lambda: not any(held(x, o["id"]) for x in nodes + [late]), 10, "the cancel everywhere")
        await stop_all(nodes + [late])


async def test_bad_offer_gossip_is_refused_and_the_book_is_bounded(tmp_path: Path, monkeypatch):
    async with trio.open_nursery() as nursery:
        a, b = await start_line(nursery, tmp_path, 2, pex=False)
        # garbage and a wrongly signed offer, published raw on the topic: b drops them, keeps running
        o = await a.call("offer.create", TERMS)
        await wait_for(lambda: held(b, o["id"]), 10, "the good offer")
        stored = open_envelope(a.offers.get(bytes.fromhex(o["id"])).envelope).document
        forged = seal(dict(stored, rate_bp=1), b.key)  # a's offer, altered and signed by b
        for data in (b"\x00garbage", forged.raw):
            await a._publish(wire.TOPIC_OFFERS, data)
        await trio.sleep(0.5)
        assert len(b.offers.all()) == 1
        assert (await b.call("node.status"))["peer_id"] == b.peer_id
        # an expired offer is purged
        monkeypatch.setattr(offers_mod, "MAX_PER_AUTHOR", 3)
        short = await a.call("offer.create", dict(TERMS, expires_in_s=1))
        await a.call("offer.create", TERMS)  # a's second live offer besides `o`
        with pytest.raises(ApiError) as e:
            await a.call("offer.create", TERMS)
        assert e.value.code == "too_many_offers"
        await trio.sleep(1.1)
        assert a.offers.purge() >= 1 and not held(a, short["id"])
        with pytest.raises(ApiError) as e:
            await a.call("offer.create", dict(TERMS, rate="abc"))
        assert e.value.code == "bad_rate"
        await stop_all([a, b])
