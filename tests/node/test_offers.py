"""The offer book across in-process nodes over real libp2p and real LevelDB."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from framework.inprocess import LOADED, LOCAL, lending, make_node, start, start_line, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.errors import ApiError
from p2pnode.home import Home
from p2pnode.node import Node, NodeSettings
from protocol.envelope import open_envelope, seal
from protocol.keys import SigningKey
from protocol.lending.book import Limits
from protocol.lending.offer import MAX_OFFER_MS, TOPIC_OFFERS, make_cancel, make_offer

pytestmark = pytest.mark.trio

TERMS = {"side": "lend", "amount": "500.00", "currency": "EUR", "rate": "8%", "term": "6m"}


def held(node, oid: str) -> bool:
    return lending(node).book.get(bytes.fromhex(oid)) is not None


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
        stored = open_envelope(lending(a).book.get(bytes.fromhex(o["id"])).envelope).document
        forged = seal(dict(stored, rate_bp=1), b.key)  # a's offer, altered and signed by b
        for data in (b"\x00garbage", forged.raw):
            await a.gossip.publish(TOPIC_OFFERS, data)
        await trio.sleep(0.5)
        assert len(lending(b).book.all()) == 1
        assert (await b.call("node.status"))["peer_id"] == b.peer_id
        # an expired offer is purged
        lending(a).book.limits = Limits(max_per_author=3)
        # (two offers alike made in the same millisecond are one offer: the amounts differ)
        short = await a.call("offer.create", dict(TERMS, expires_in_s=1, amount="501.00"))
        await a.call("offer.create", dict(TERMS, amount="502.00"))  # a's third live offer, with `o`
        with pytest.raises(ApiError) as e:
            await a.call("offer.create", dict(TERMS, amount="503.00"))
        assert e.value.code == "too_many_offers"
        await trio.sleep(1.1)
        assert lending(a).book.purge() >= 1 and not held(a, short["id"])
        with pytest.raises(ApiError) as e:
            await a.call("offer.create", dict(TERMS, rate="abc"))
        assert e.value.code == "bad_rate"
        await stop_all([a, b])


K, S = SigningKey.from_seed(b"k" * 32), SigningKey.from_seed(b"s" * 32)  # an author, a stranger
DAY = 24 * 3600 * 1000


def an_offer(created: int, n: int = 100, ttl: int = 3600_000):
    return make_offer(K, side="borrow", currency="EUR", min_amount=n, max_amount=n, rate_bp=500, term="3m",
                      created=created, expires=created + ttl)


def refusal(node, data: bytes) -> str:
    with pytest.raises(ApiError) as e:
        lending(node).book.add(data)
    return e.value.code


def records(node) -> dict[bytes, int]:
    return {p: len(node.store.records("lending").items(p)) for p in (b"O", b"X", b"C")}


async def test_the_book_rules_on_a_node_and_across_a_restart(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_node(tmp_path / "a", "a", pex=False))
        now = lending(a).book.now_ms()
        o1, o2, o3 = (an_offer(now, n) for n in (100, 200, 300))
        # a cancellation before its offer is kept, and the offer is then refused
        assert lending(a).book.add(make_cancel(S, o1.id, now).raw) == "cancelled"  # a stranger's, first
        assert lending(a).book.add(make_cancel(K, o1.id, now).raw) == "cancelled"  # the author's replaces it
        assert lending(a).book.add(make_cancel(K, o1.id, now).raw) == "duplicate"
        assert refusal(a, o1.raw) == "offer_cancelled"
        # a stranger's cancellation before the offer does not cancel it, nor block the author's
        assert lending(a).book.add(make_cancel(S, o2.id, now).raw) == "cancelled"
        assert lending(a).book.add(o2.raw) == "added" and lending(a).book.add(o2.raw) == "refreshed"
        assert lending(a).book.add(make_cancel(K, o2.id, now + 1).raw) == "cancelled" and lending(a).book.get(o2.id) is None
        # a held offer: a stranger cannot cancel it
        assert lending(a).book.add(o3.raw) == "added"
        assert refusal(a, make_cancel(S, o3.id, now).raw) == "not_yours"
        # time: expired, from the future, a cancellation too old to cancel anything
        assert refusal(a, an_offer(now - 2 * DAY, ttl=DAY).raw) == "offer_expired"
        assert refusal(a, an_offer(now + 2 * DAY).raw) == "bad_time"
        assert refusal(a, make_cancel(K, b"\x01" * 32, now - MAX_OFFER_MS).raw) == "stale_cancel"
        assert refusal(a, make_cancel(K, b"\x01" * 32, now + 2 * DAY).raw) == "bad_time"
        assert records(a) == {b"O": 1, b"X": 3, b"C": 4}  # o3; o1, o2 and o3 due; two cancellations each of o1 and o2 (the stranger's kept apart)
        a.stop()
    async with trio.open_nursery() as nursery:  # the same home again: the book is as it was
        home = Home(tmp_path / "a")
        a = await start(nursery, Node(home, home.signing_key(None), NodeSettings(listen=[LOCAL], pex=False), LOADED))
        assert lending(a).book.get(o3.id).max_amount == 300 and lending(a).book.get(o2.id) is None
        assert refusal(a, o1.raw) == "offer_cancelled"
        assert lending(a).book.purge() == 0
        later = now + MAX_OFFER_MS + 1
        lending(a).book.now_ms = lambda: later  # every record is due by then: purging leaves nothing
        assert lending(a).book.purge(limit=2) == 2 and lending(a).book.purge() == 1
        assert records(a) == {b"O": 0, b"X": 0, b"C": 0} and lending(a).book.all() == []
        a.stop()


async def test_ledger_verify_checks_the_offer_book(tmp_path: Path):
    from p2pnode.home import Home
    from p2pnode.ledger.verify import verify_store

    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(tmp_path / "n", "n", pex=False))
        kept = await node.call("offer.create", dict(TERMS, amount="501.00"))
        gone = await node.call("offer.create", dict(TERMS, amount="502.00"))
        await node.call("offer.cancel", {"id": gone["id"]})
        node.stop()
    with Home(tmp_path / "n").open_store() as store:
        book = store.records("lending")
        assert verify_store(store, LOADED.registry, checks=LOADED.verify_checks()).ok
        xkey = next(k for k, _ in book.items(b"X") if k[9:].hex() == kept["id"])
        store.db.delete(book.prefix + xkey)  # damage: an offer the purge would never reach
        store.db.put(book.prefix + b"X" + bytes(8) + bytes(32), b"")  # and an index key naming nothing
        codes = [p.code for p in verify_store(store, LOADED.registry, checks=LOADED.verify_checks()).problems]
    assert codes == ["bad_offer_book", "bad_offer_book"]


async def test_free_keys_cannot_squat_a_full_book_against_a_peer_with_loans(tmp_path: Path):
    """Issue 9, item 4: 120 free keys filled every node's book and honest `offer create`
    got book_full. A full book takes the offer of an author with standing (here: one that
    signed a loan with the node) in place of a stranger's; strangers among themselves are
    first come, first served, and each has a smaller cap."""
    async with trio.open_nursery() as nursery:
        viewer, peer = await start_line(nursery, tmp_path, 2, pex=False)
        await sync_all([viewer, peer])
        oid = (await peer.call("offer.create", dict(TERMS, expires_in_s=3600)))["id"]
        await wait_for(lambda: held(viewer, oid), 10, "the offer")
        assert (await viewer.call("loan.propose", {"offer": oid}))["state"] == "agreed"  # an edge: both signed
        await wait_for(lambda: lending(viewer).book.standing.of(peer.key.public_key) == 2, 10, "standing")
        await wait_for(lambda: not held(viewer, oid), 10, "the taken offer to leave the book")
        book = lending(viewer).book
        book.limits = Limits(max_book=20, max_per_author=100, max_orphans=10, max_per_stranger=5)
        now = book.now_ms()
        squatters = [SigningKey.from_seed(bytes([n]) * 32) for n in range(1, 6)]
        outcomes = []
        for k in squatters:
            for n in range(1, 7):
                squat = make_offer(k, side="lend", currency="EUR", min_amount=n, max_amount=n, rate_bp=1, term="3m",
                                   created=now, expires=now + DAY)
                try:
                    outcomes.append(book.add(squat.raw))
                except ApiError as e:
                    outcomes.append(e.code)
        # each squatter's sixth is over its cap; once the book is full, no stranger finds a slot
        # weaker than its own
        assert outcomes == (["added"] * 5 + ["too_many_offers"]) * 3 + ["added"] * 5 + ["book_full"] * 7
        assert len(book.all()) == 20
        mine = await peer.call("offer.create", dict(TERMS, amount="600.00"))
        await wait_for(lambda: held(viewer, mine["id"]), 10, "the peer's offer to take a squatter's slot")
        assert len(book.all()) == 20 and (await viewer.call("node.status"))["counters"]["offers.evicted"] == 1
        assert (await viewer.call("ledger.verify"))["ok"]  # the book's records stay whole (I7)
        await stop_all([viewer, peer])



async def test_offers_taken_in_full_hold_no_place_of_their_author_when_their_cancellation_is_lost(tmp_path: Path):
    """A taken offer is cancelled by gossip, which may lose the cancellation. The taker's
    book then still holds it, until BOOK_TTL_MS; before, it also kept one of its author's
    places, and the author's next offers were refused there (``too_many_offers``)."""
    async with trio.open_nursery() as nursery:
        lender, borrower = await start_line(nursery, tmp_path, 2, pex=False)
        await sync_all([lender, borrower])

        async def lost(offer_id: bytes) -> None:  # the lender's cancellations of taken offers never go out
            return None

        lending(lender).countersigning._consume_offer = lost
        lending(borrower).book.limits = Limits(max_per_author=2, max_per_stranger=2)
        taken = []
        for amount in ("500.00", "501.00"):
            oid = (await lender.call("offer.create", dict(TERMS, amount=amount)))["id"]
            await wait_for(lambda: held(borrower, oid), 10, "the offer in the borrower's book")
            assert (await borrower.call("loan.propose", {"offer": oid}))["state"] == "agreed"
            taken.append(oid)
        assert all(held(borrower, oid) for oid in taken)  # no cancellation came
        fresh = (await lender.call("offer.create", dict(TERMS, amount="502.00")))["id"]
        await wait_for(lambda: held(borrower, fresh), 10, "the author's next offer in the borrower's book")
        assert lending(borrower).book.taken_in_full(lending(borrower).book.get(bytes.fromhex(taken[0])))
        await stop_all([lender, borrower])
