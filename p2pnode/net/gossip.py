"""Gossip topics on the node: each with a validator that runs inside libp2p before a
message is delivered or forwarded, a size limit, and a handler; and the batching of new
entries on the entries topic.

Promises:

- A message that its topic's validator refuses (or that is over the topic's size) is
  neither delivered nor forwarded, and costs the forwarder ``bad_gossip``. A validator
  never raises into libp2p.
- On a topic with a ``rate``, each forwarding peer gets a token bucket (ratelimit.py):
  a message over it is neither delivered nor forwarded, and only counted
  (``gossip.rate_limited.<topic>``): slowed down, not punished.
- Every delivered message goes to its topic's handler as ``handler(data, sender,
  value)``: ``value`` is what the topic's validator returned for ``data`` (the message
  is decoded and its signatures verified once, in the validator, not again in the
  handler), and ``sender`` the public key of the peer that forwarded it to us, the peer
  of the connection (authenticated by Noise), or None. Never the message's ``from``:
  pubsub envelopes are not signed (host.py), so ``from`` is whatever a forwarder wrote.
  What a handler raises is logged and counted, and never ends the reader.
- ``announce`` queues new entries; at most one entries message leaves per
  ``GOSSIP_WINDOW``, carrying everything appended meanwhile. A message costs every node
  several ms of CPU whatever its size (in py-libp2p: its copies from and to each mesh
  peer, each through protobuf, Yamux, Noise and a socket), an entry in it much less (its
  one signature verify, decoding, a store write), so batching is what keeps a
  network of small machines on time: 100 ms rather than 50 took a node from 3.0 to
  about 1.7 ms per entry at 50 entries/s, for about 50 ms more latency
  (bench/gossip.py). A change of more than ``ANNOUNCE_LIMIT`` entries is announced by its
  last entry only: peers that see the gap pull the rest by sync.
- Publishing is best effort: sync delivers what gossip drops.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Awaitable, Callable

import trio

from protocol import wire
from protocol.entry import Entry
from protocol.errors import ProtocolError
from protocol.keys import public_key_from_peer_id

from p2pnode.net.ratelimit import PeerBuckets

log = logging.getLogger(__name__)

GOSSIP_WINDOW = 0.1  # seconds: at most one entries message per window (see above)
ANNOUNCE_LIMIT = 64
VALIDATED_KEPT = 256  # validated messages whose value waits for the reader; the oldest go first

Handler = Callable[[bytes, "bytes | None", Any], Awaitable[None]]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    validate: Callable[[bytes], Any]
    handler: Handler
    max_size: int
    rate: tuple[float, int] | None = None  # (per second, burst) for each forwarding peer


def short(topic: str) -> str:
    """A topic's name in counters: the topic without the namespace ``p2plend/1/`` (so the
    core's read ``entries`` and ``fraud``, and so do the built-in extensions'), else the
    whole topic."""
    return topic.removeprefix("p2plend/1/")


class Gossip:
    def __init__(self, pubsub: Any, *, own_key: bytes, count: Callable[[str, int], None],
                 penalise: Callable[[bytes, str, str], Awaitable[None]]) -> None:
        self.pubsub = pubsub
        self.own_key = own_key
        self._count = count
        self._penalise = penalise
        self.topics: dict[str, TopicSpec] = {}
        self._nursery: trio.Nursery | None = None
        self._outbox: list[bytes] = []  # own and imported entries waiting to be gossiped
        self._outbox_ready = trio.Event()
        # what the validator found, by _digest(topic, data), until the reader takes it:
        # (the forwarder's public key or None, the validator's value); at most VALIDATED_KEPT
        self._validated: dict[bytes, tuple[bytes | None, Any]] = {}

    def add(self, spec: TopicSpec) -> None:
        if spec.name in self.topics:
            raise ValueError(f"topic {spec.name} is taken")
        self.topics[spec.name] = spec

    async def start(self, nursery: trio.Nursery) -> None:
        """Subscribe to every topic and read each in ``nursery``."""
        self._nursery = nursery
        for spec in self.topics.values():
            self.pubsub.set_topic_validator(spec.name, self._validator(spec), False)
        for spec in self.topics.values():
            sub = await self.pubsub.subscribe(spec.name)
            nursery.start_soon(self._read, spec, sub)
        nursery.start_soon(self._send_entries)

    def _validator(self, spec: TopicSpec) -> Callable[[Any, Any], bool]:
        buckets = PeerBuckets(*spec.rate) if spec.rate else None

        def validate(forwarder: Any, msg: Any) -> bool:
            try:
                if buckets is not None and not buckets.allow(forwarder.to_bytes(), trio.current_time()):
                    self._count(f"gossip.rate_limited.{short(spec.name)}", 1)
                    return False
                data = msg.data
                if len(data) > spec.max_size:
                    raise ProtocolError(f"a message of {len(data)} bytes exceeds {spec.max_size}", code="oversize")
                value = spec.validate(data)
                self._keep(_digest(spec.name, data), _public_key(forwarder.to_bytes()), value)
                return True
            except ProtocolError as e:
                self._count(f"gossip.rejected.{short(spec.name)}", 1)
                pk = _public_key(forwarder.to_bytes())
                if pk is None:
                    return False
                if self._nursery is not None and pk != self.own_key:
                    self._nursery.start_soon(self._penalise, pk, "bad_gossip", f"{spec.name}: {e.message}")
                return False
            except Exception:  # a validator must never raise into libp2p
                log.exception("validator for %s failed", spec.name)
                return False

        return validate

    def _keep(self, key: bytes, sender: bytes | None, value: Any) -> None:
        if len(self._validated) >= VALIDATED_KEPT:
            del self._validated[next(iter(self._validated))]
        self._validated[key] = (sender, value)

    async def _read(self, spec: TopicSpec, sub: Any) -> None:
        while True:
            msg = await sub.get()
            self._count(f"gossip.received.{short(spec.name)}", 1)
            data = msg.data
            try:
                kept = self._validated.pop(_digest(spec.name, data), None)
                # not kept (pushed out by VALIDATED_KEPT newer ones): validated again here
                sender, value = kept if kept is not None else (None, spec.validate(data))
                await spec.handler(data, sender, value)
            except ProtocolError as e:
                self._count("gossip.dropped", 1)
                log.debug("gossip on %s dropped: %s", spec.name, e)
            except Exception:
                log.exception("handling gossip on %s failed", spec.name)

    async def publish(self, topic: str, data: bytes) -> None:
        try:
            await self.pubsub.publish(topic, data)
            self._count(f"gossip.published.{short(topic)}", 1)
        except Exception as e:  # best effort: sync delivers what gossip drops
            log.info("publish on %s failed: %s", topic, e)

    def announce(self, entries: list[Entry]) -> None:
        """Queue new entries (of one author) for gossip on the entries topic."""
        chosen = entries if len(entries) <= ANNOUNCE_LIMIT else entries[-1:]
        self._outbox.extend(e.envelope for e in chosen)
        if self._outbox:
            self._outbox_ready.set()

    async def _send_entries(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = trio.Event()
            batch, self._outbox = self._outbox, []
            for group in wire.split_entries(batch):
                await self.publish(wire.TOPIC_ENTRIES, wire.entries_message(group))
            await trio.sleep(GOSSIP_WINDOW)


def _digest(topic: str, data: bytes) -> bytes:
    """What a validated message's value is kept under: its topic and data, hashed. The
    value is a function of these alone, so whichever copy the reader gets, it fits."""
    return hashlib.blake2b(topic.encode() + b"\0" + data, digest_size=16).digest()


@lru_cache(maxsize=1024)
def _public_key(peer: bytes) -> bytes | None:
    """The Ed25519 public key of a libp2p peer ID (its bytes), or None if it has none."""
    try:
        from libp2p.peer.id import ID

        return public_key_from_peer_id(ID(peer).to_base58())
    except Exception:
        return None
