"""Hostile nodes: each runs the honest node's code except where it cheats.

- ``Equivocator``: signs two different entries at one seq, gossips one to half its peers
  and the other to the rest, and serves each half the history it told it.
- ``Liar``: answers sync with garbage frames, corrupted entries, answers to another
  request, or heads it does not hold; and sends garbage gossip.
- ``Overfiller``: takes an offer several times at once (valid proposals, each for another
  principal), hoping the lender countersigns more than one.

None of them counts as honest: their chains are not required to converge, and a fork
proof against the equivocator is expected, not a failure.
"""

from __future__ import annotations

from typing import Any

from protocol import codec, wire
from protocol.chain import Head
from protocol.entry import next_entry

from .node import Node


class Equivocator(Node):
    honest = False

    def _start(self) -> None:
        self.alt: dict[int, bytes] = getattr(self, "alt", {})  # seq -> the other entry (its envelope)
        self.told_other: set[int] = getattr(self, "told_other", set())  # peers served the other history
        super()._start()

    def equivocate(self) -> None:
        head = self.store.head(self.pk)
        x = next_entry(self.key, head, now_ms=self.now_ms(), kind="note", body={"text": "x"})
        y = next_entry(self.key, head, now_ms=self.now_ms(), kind="note", body={"text": "y"})
        self.store.append_own(x)
        self.alt[y.seq] = y.envelope
        peers = self.peers
        half = peers[len(peers) // 2:]
        self.told_other = set(half)
        self.world.sched.note(f"node {self.idx} equivocates at seq {x.seq}: y to {sorted(half)}")
        for p in peers:
            data = wire.entries_message([(y if p in self.told_other else x).envelope])
            self.world.net.datagram(self.idx, p, wire.TOPIC_ENTRIES, data)

    def _other(self, peer: int) -> bool:
        return peer in self.told_other and bool(self.alt)

    def heads_for(self, peer: int) -> dict[bytes, Head]:
        heads = self.store.heads()
        if self._other(peer):
            seq = max(self.alt)
            if heads[self.pk].seq == seq:
                y = self.world.parse(self.alt[seq])
                heads[self.pk] = Head.of(y)
        return heads

    def changes_for(self, peer: int, since: wire.Cursor, limit: int) -> Any:
        read = super().changes_for(peer, since, limit)
        if read.changes is None or not self._other(peer):
            return read
        told = self.heads_for(peer)[self.pk]  # (the same lie as in its full pages)
        return type(read)(read.mark, tuple((c, told if h.author == self.pk else h) for c, h in read.changes))

    def chain_for(self, peer: int, author: bytes, start: int, limit: int) -> list[bytes]:
        chain = self.store.chain(author, start, limit)
        if author == self.pk and self._other(peer):
            chain = [self.alt.get(start + i, env) for i, env in enumerate(chain)]
        return chain


class Liar(Node):
    honest = False

    def frame_for(self, peer: int, message: Any) -> bytes:
        roll = self.world.rng.random()
        if roll < 0.2:
            return self.world.rng.randbytes(self.world.rng.randint(1, 40))  # garbage
        if roll < 0.35 and isinstance(message, wire.Entries) and message.entries:
            bad = tuple(e[:-1] + bytes([e[-1] ^ 1]) for e in message.entries)  # a broken signature
            return wire.frame(wire.Entries(message.author, message.start, bad))
        if roll < 0.45 and isinstance(message, wire.Entries):
            return wire.frame(wire.Entries(message.author, message.start + 1, message.entries))  # another request
        if roll < 0.55 and isinstance(message, wire.Heads):  # heads it does not hold
            lies = tuple((a, s + 5, bytes(32)) for a, s, _ in message.heads)
            return wire.frame(wire.Heads(lies, message.next, message.epoch, message.upto, message.since))
        return wire.frame(message)

    def spam(self) -> None:
        """Gossip that no validator accepts."""
        junk = [codec.encode([b"not an envelope"]), self.world.rng.randbytes(30),
                codec.encode({"type": "entry"})]
        for p in self.peers:
            self.world.net.datagram(self.idx, p, self.world.rng.choice(
                [wire.TOPIC_ENTRIES, wire.TOPIC_FRAUD]), self.world.rng.choice(junk))


class Overfiller(Node):
    honest = False
    takes = 3  # proposals for one offer, sent at once
