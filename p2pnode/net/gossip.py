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
- Every delivered message goes to its topic's handler; what a handler raises is logged
  and counted, and never ends the reader.
- ``announce`` queues new entries; at most one entries message leaves per
  ``GOSSIP_WINDOW``, carrying everything appended meanwhile (each message costs every
  node about 1 ms of CPU whatever its size, so under load batching is what keeps a
  network of small machines on time). A change of more than ``ANNOUNCE_LIMIT`` entries is
  announced by its last entry only: peers that see the gap pull the rest by sync.
- Publishing is best effort: sync delivers what gossip drops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import trio

from protocol import wire
from protocol.entry import Entry
from protocol.errors import ProtocolError
from protocol.keys import public_key_from_peer_id

from p2pnode.net.ratelimit import PeerBuckets

log = logging.getLogger(__name__)

GOSSIP_WINDOW = 0.05  # seconds: at most one entries message per window
ANNOUNCE_LIMIT = 64

Handler = Callable[[bytes, "bytes | None"], Awaitable[None]]


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
                if len(msg.data) > spec.max_size:
                    raise ProtocolError(f"a message of {len(msg.data)} bytes exceeds {spec.max_size}", code="oversize")
                spec.validate(msg.data)
                return True
            except ProtocolError as e:
                self._count(f"gossip.rejected.{short(spec.name)}", 1)
                try:
                    pk = public_key_from_peer_id(forwarder.to_base58())
                except Exception:
                    return False
                if self._nursery is not None and pk != self.own_key:
                    self._nursery.start_soon(self._penalise, pk, "bad_gossip", f"{spec.name}: {e.message}")
                return False
            except Exception:  # a validator must never raise into libp2p
                log.exception("validator for %s failed", spec.name)
                return False

        return validate

    async def _read(self, spec: TopicSpec, sub: Any) -> None:
        while True:
            msg = await sub.get()
            self._count(f"gossip.received.{short(spec.name)}", 1)
            try:
                await spec.handler(msg.data, _sender(msg))
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


def _sender(msg: Any) -> bytes | None:
    """The public key of the peer a message came from, if it is one of ours."""
    try:
        from libp2p.peer.id import ID

        return public_key_from_peer_id(ID(msg.from_id).to_base58())
    except Exception:
        return None
