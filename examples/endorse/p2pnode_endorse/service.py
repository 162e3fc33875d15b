"""Endorsements on a running node: the service the declaration (``__init__.py``) routes
the kind's reaction, the topic, the stream protocol, the methods and the task to. Built
as ``Endorse(context)``; it reaches the node through its ``Context`` and nothing else.

What a stranger can make it spend: an ask is one signature check (in the topic's
validator) and at most one record per peer, ``max_asks`` peers in all; a stream is one
want and one answer of at most ``MAX_ANSWER`` entries, two streams per peer at once; an
endorsement of this node is one small record, beside the entry the core stored anyway.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any, Iterator

import trio

from protocol.entry import Entry
from protocol.errors import ProtocolError
from protocol.keys import peer_id, public_key_from_peer_id

from p2pnode.context import Context
from p2pnode.errors import ApiError
from p2pnode.net.streams import FramedStream, PeerGone, PeerMisbehaved

from p2pnode_endorse import rules
from p2pnode_endorse.records import P_ASK, P_OWN_ASK, ask_key, ms, ms_of, received_key
from p2pnode_endorse.settings import SETTINGS

# Under the node's "p2pnode" logger, so that `p2pnode start --log-level` applies to it.
log = logging.getLogger("p2pnode.endorse")

UPKEEP_S = 30.0  # between passes of the background task
JOIN_DELAY_S = 1.0  # after a peer connects, so that the gossip mesh includes it
FETCH_TIMEOUT = 10.0  # for the whole exchange with the peer asked


class Endorse:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = {s.name: s.default for s in SETTINGS} | dict(ctx.settings)
        self.asks_held = 0  # peers whose ask is kept (b"a" records): counted once in start
        self._republishing = False

    async def start(self) -> None:
        """Called once, before anything is routed here."""
        self.asks_held = sum(1 for _ in self.ctx.records.keys(P_ASK))

    # -- the kind's reaction ------------------------------------------------------------

    async def on_entries(self, entries: list[Entry]) -> None:
        """New stored endorsements (own or foreign; bodies valid): record those of us."""
        ours = [e for e in entries if e.body["peer"] == self.ctx.me]
        if not ours:
            return
        now = ms(self.ctx.clock.now_ms())
        self.ctx.records.write([(received_key(e.author, e.seq), now) for e in ours])
        self.ctx.count("endorse.received", len(ours))
        for e in ours:
            log.info("endorsed by %s: %s", peer_id(e.author), e.body["text"])

    def check_append(self, kind: str, body: Any) -> None:
        """Before any append of our kind (``endorse.add`` and ``ledger append`` alike),
        under the write lock: refuse to say the same thing of the same peer twice."""
        try:
            rules.check_body(body, self.ctx.me)
        except ProtocolError:
            return  # the kind's own rules refuse it, with their reason
        for e in self._endorsements(body["peer"], author=self.ctx.me):
            if e.body["text"] == body["text"]:
                raise ApiError(f"this node endorsed {peer_id(body['peer'])} with these words already (seq {e.seq})",
                               code="duplicate_endorsement")

    # -- gossip ---------------------------------------------------------------------------

    async def on_ask(self, data: bytes, sender: bytes | None) -> None:
        """An ask that passed the topic's validator: keep it if it is fresh and fits."""
        ask = rules.parse_ask(data)
        if ask.author == self.ctx.me:
            return
        if not self.settings["accept_asks"]:
            self.ctx.count("endorse.asks.ignored")
            return
        if not rules.is_fresh(ask, self.ctx.clock.now_ms(), self.settings["ask_ttl_s"] * 1000):
            self.ctx.count("endorse.asks.stale")
            return
        old = self.ctx.records.get(ask_key(ask.author))
        if old is not None and rules.parse_ask(old).ts >= ask.ts:
            return  # the same ask again, or an older one
        if old is None and self.asks_held >= self.settings["max_asks"]:
            self.ctx.count("endorse.asks.full")
            return
        self.ctx.records.write([(ask_key(ask.author), ask.raw)])
        self.asks_held += old is None
        self.ctx.count("endorse.asks.kept")

    async def republish(self) -> None:
        """Gossip our own ask again while it lives (gossip is best effort)."""
        own = self.ctx.records.get(P_OWN_ASK)
        if own is not None and rules.is_fresh(rules.parse_ask(own), self.ctx.clock.now_ms(), self._ttl_ms()):
            await self.ctx.publish(rules.TOPIC, own)

    async def on_peer_connected(self, peer: bytes) -> None:
        """A new peer may have missed our ask: republish it shortly, once for a burst of peers."""
        if self._republishing:
            return
        self._republishing = True
        try:
            await trio.sleep(JOIN_DELAY_S)
        finally:
            self._republishing = False
        await self.republish()

    # -- the stream protocol -------------------------------------------------------------

    async def serve_want(self, stream: FramedStream, peer: bytes) -> None:
        """One want, one answer: the endorsements of ``of`` this node holds."""
        msg = await stream.recv()
        if msg["t"] != "want":
            raise PeerMisbehaved("an endorse stream opens with a want", "bad_message")
        held = [e.envelope for e in self._endorsements(msg["of"], limit=msg["limit"])]
        await stream.send(rules.have(held))
        self.ctx.count("endorse.wants.served")

    # -- the background task -----------------------------------------------------------

    async def upkeep(self) -> None:
        """Every ``UPKEEP_S``: drop the asks that expired, republish our own."""
        while True:
            await trio.sleep(UPKEEP_S)
            try:
                self.prune()
                await self.republish()
            except Exception:  # one bad pass must not end the task
                log.exception("endorse upkeep failed")

    def prune(self) -> int:
        """Delete the kept asks that are no longer fresh (at most ``max_asks`` to read)."""
        now, ttl = self.ctx.clock.now_ms(), self._ttl_ms()
        gone = []
        for key, value in self.ctx.records.items(P_ASK):
            try:
                fresh = rules.is_fresh(rules.parse_ask(value), now, ttl)
            except ProtocolError:
                fresh = False  # damage: `ledger verify` reports it; the record goes
            if not fresh:
                gone.append(key)
        if gone:
            self.ctx.records.write(deletes=gone)
            self.asks_held -= len(gone)
        return len(gone)

    # -- control methods -------------------------------------------------------------------

    async def endorse_add(self, peer: str, text: str) -> dict:
        body = rules.body(public_key_from_peer_id(peer), text)
        try:
            rules.check_body(body, self.ctx.me)
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None
        entry = await self.ctx.writer.append_one(rules.KIND, body, check=lambda: self.check_append(rules.KIND, body))
        return endorsement_view(entry)

    async def endorse_list(self, peer: str | None, limit: int) -> dict:
        pk = self.ctx.me if peer is None else public_key_from_peer_id(peer)
        found = list(self._endorsements(pk, limit=limit + 1))
        views = []
        for e in found[:limit]:
            received = self.ctx.records.get(received_key(e.author, e.seq)) if pk == self.ctx.me else None
            views.append(dict(endorsement_view(e), received_ms=ms_of(received) if received else None))
        return {"peer": peer_id(pk), "endorsements": views, "more": len(found) > limit}

    async def endorse_ask(self, note: str) -> dict:
        ask = rules.make_ask(self.ctx.key, note, self.ctx.clock.now_ms())
        self.ctx.records.write([(P_OWN_ASK, ask.raw)], sync=True)
        await self.ctx.publish(rules.TOPIC, ask.raw)
        return ask_view(ask)

    async def endorse_asks(self) -> dict:
        now, ttl = self.ctx.clock.now_ms(), self._ttl_ms()
        asks = []
        for _, value in self.ctx.records.items(P_ASK):
            try:
                ask = rules.parse_ask(value)
            except ProtocolError:
                continue  # damage: `ledger verify` reports it
            if rules.is_fresh(ask, now, ttl):
                asks.append(ask)
        asks.sort(key=lambda a: -a.ts)
        return {"accepting": self.settings["accept_asks"], "asks": [ask_view(a) for a in asks]}

    async def endorse_fetch(self, peer: str, of: str | None, limit: int) -> dict:
        pk = public_key_from_peer_id(peer)
        target = pk if of is None else public_key_from_peer_id(of)
        if not self.ctx.peers.is_connected(pk):
            raise ApiError(f"{peer} is not connected to this node", code="not_connected")
        answer = None
        with trio.move_on_after(FETCH_TIMEOUT):
            answer = await self._want(pk, target, limit)
        if answer is None:
            raise ApiError(f"{peer} did not answer within {FETCH_TIMEOUT:g} s", code="unreachable")
        try:
            entries = rules.endorsements_in(answer, target, limit)
        except ProtocolError as e:
            raise ApiError(f"{peer} answered with {e.message}", code="bad_answer") from None
        self.ctx.count("endorse.wants.asked")
        return {"peer": peer, "of": peer_id(target),
                "endorsements": [dict(endorsement_view(e), held=self.ctx.chains.locate(e.id) is not None)
                                 for e in entries]}

    async def _want(self, pk: bytes, target: bytes, limit: int) -> dict:
        """Open a stream to ``pk``, send a want, read the answer; ``ApiError`` if that fails."""
        try:
            stream = await self.ctx.open_stream(pk, rules.PROTOCOL)
        except Exception as e:  # libp2p says "no" in many ways
            raise ApiError(f"cannot open a stream to {peer_id(pk)}: {e}", code="unreachable") from None
        try:
            await stream.send(rules.want(target, limit))
            return await stream.recv()
        except PeerGone as e:
            raise ApiError(f"{peer_id(pk)} went away: {e}", code="unreachable") from None
        except PeerMisbehaved as e:
            raise ApiError(f"{peer_id(pk)} broke the protocol: {e}", code="bad_answer") from None
        finally:
            await stream.close()

    # -- reading ----------------------------------------------------------------------------

    def _endorsements(self, peer: bytes, *, author: bytes | None = None, limit: int | None = None) -> Iterator[Entry]:
        """The stored endorsements of ``peer`` (by ``author`` only, if given), in index
        order: one prefix scan of the index, stopped after ``limit``."""
        keys = self.ctx.index.keys(peer + (author or b""))
        try:
            for key in islice(keys, limit):
                _, who, seq = rules.split_index_key(key)
                entry = self.ctx.chains.entry(who, seq)
                if entry is not None:
                    yield entry
        finally:
            keys.close()  # release the store's iterator now, not when collected

    def _ttl_ms(self) -> int:
        return self.settings["ask_ttl_s"] * 1000


def endorsement_view(e: Entry) -> dict:
    return {"author": peer_id(e.author), "peer": peer_id(e.body["peer"]), "seq": e.seq, "ts": e.ts,
            "text": e.body["text"], "id": e.id.hex()}


def ask_view(ask: rules.Ask) -> dict:
    return {"author": peer_id(ask.author), "ts": ask.ts, "note": ask.note}
