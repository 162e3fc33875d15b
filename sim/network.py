"""The simulated network: who links to whom, what a message suffers on the way, and
partitions.

Two kinds of traffic, as the node has them:

- *Datagrams* (gossip): each may be lost, duplicated, delayed by a link's latency plus
  jitter, and now and then by a spike, so that later ones overtake it (reordering).
- *Streams* (sync and agree conversations, over TCP and yamux in the node): messages
  arrive in order or not at all. A stream breaks when a message is lost to the link, an
  end crashes or a partition cuts it; the other end learns it after ``STREAM_TIMEOUT_MS``
  (silence, as the node's read timeouts see it) or at once on a reset.

A partition is a set of groups: nothing crosses between groups until ``heal``.

Counting: every datagram and stream message sent is counted for its sender
(``sent[node]``), for the figures of ``scale``.

Invariants (asserted): a stream delivers in the order sent; no message reaches a node
that is down, nor crosses a partition.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .events import Scheduler

STREAM_TIMEOUT_MS = 10_000


@dataclass
class Faults:
    """How bad the network is; every probability is per message."""

    loss: float = 0.0  # a datagram is lost; a stream message is lost and breaks the stream
    duplicate: float = 0.0  # a datagram arrives twice
    spike: float = 0.0  # a message is delayed by SPIKE_MS more (reordering, for datagrams)
    latency: tuple[int, int] = (5, 60)  # ms, a link's base latency is drawn from this once
    jitter: int = 20  # ms added per message, uniform
    spike_ms: tuple[int, int] = (200, 3_000)


class Endpoint(Protocol):
    """What a node offers the network."""

    up: bool

    def on_datagram(self, sender: int, topic: str, data: bytes) -> None: ...

    def on_stream(self, stream: "Stream", protocol: str) -> None: ...


@dataclass
class End:
    """One end of a stream: what its owner does with what arrives."""

    node: int
    receive: Callable[[bytes], None] = lambda data: None
    gone: Callable[[str], None] = lambda reason: None
    closed: bool = False


@dataclass
class Stream:
    id: int
    protocol: str
    ends: tuple[End, End]
    broken: bool = False
    _last: list = field(default_factory=lambda: [0, 0])  # per direction: the last delivery time

    def end_of(self, node: int) -> End:
        return self.ends[0] if self.ends[0].node == node else self.ends[1]

    def other(self, node: int) -> End:
        return self.ends[1] if self.ends[0].node == node else self.ends[0]


class Network:
    def __init__(self, sched: Scheduler, rng: random.Random, faults: Faults) -> None:
        self.sched = sched
        self.rng = rng
        self.faults = faults
        self.nodes: list[Endpoint] = []
        self.links: dict[int, list[int]] = {}  # node -> its peers, in the order they linked
        self._latency: dict[tuple[int, int], int] = {}
        self.group: dict[int, int] = {}  # node -> partition group; empty: no partition
        self.sent: list[int] = []
        self._streams = 0
        self.open_streams: dict[int, list[Stream]] = {}  # node -> streams it is an end of

    def add(self, node: Endpoint) -> int:
        self.nodes.append(node)
        self.sent.append(0)
        i = len(self.nodes) - 1
        self.links[i] = []
        self.open_streams[i] = []
        return i

    def link(self, a: int, b: int) -> None:
        if a == b or b in self.links[a]:
            return
        self.links[a].append(b)
        self.links[b].append(a)
        self._latency[(min(a, b), max(a, b))] = self.rng.randint(*self.faults.latency)

    # -- partitions ------------------------------------------------------------------------

    def partition(self, groups: list[list[int]]) -> None:
        self.group = {n: g for g, members in enumerate(groups) for n in members}
        for node in range(len(self.nodes)):  # streams across the cut break
            for s in list(self.open_streams[node]):
                if not self.reachable(s.ends[0].node, s.ends[1].node):
                    self._break(s, "partitioned", STREAM_TIMEOUT_MS)

    def heal(self) -> None:
        self.group = {}

    def reachable(self, a: int, b: int) -> bool:
        return not self.group or self.group.get(a, -1) == self.group.get(b, -1)

    def _delay(self, a: int, b: int) -> int:
        f = self.faults
        d = self._latency.get((a, b) if a < b else (b, a), f.latency[0]) + int(self.rng.random() * (f.jitter + 1))
        if f.spike and self.rng.random() < f.spike:
            d += self.rng.randint(*f.spike_ms)
        return d

    # -- datagrams (gossip) ----------------------------------------------------------------

    def datagram(self, src: int, dst: int, topic: str, data: bytes) -> None:
        self.sent[src] += 1
        f = self.faults
        if not self.reachable(src, dst) or (f.loss and self.rng.random() < f.loss):
            return
        copies = 2 if f.duplicate and self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            self.sched.after(self._delay(src, dst), f"gossip {topic[10:]} {src}->{dst}",
                             lambda: self._arrive(src, dst, topic, data))

    def _arrive(self, src: int, dst: int, topic: str, data: bytes) -> None:
        node = self.nodes[dst]
        if node.up and self.reachable(src, dst):
            node.on_datagram(src, topic, data)

    # -- streams (sync, agree) -------------------------------------------------------------

    def open(self, src: int, dst: int, protocol: str) -> Stream:
        """A new stream from ``src`` to ``dst``; the caller sets its end's handlers at once.
        If ``dst`` cannot be reached the stream is born broken (``gone`` comes later)."""
        self._streams += 1
        s = Stream(self._streams, protocol, (End(src), End(dst)))
        self.open_streams[src].append(s)
        if not (self.nodes[dst].up and self.reachable(src, dst)):
            self._break(s, "unreachable", STREAM_TIMEOUT_MS if self.nodes[dst].up else 1_000)
            return s
        self.open_streams[dst].append(s)
        self.nodes[dst].on_stream(s, protocol)
        return s

    def send(self, s: Stream, src: int, data: bytes, what: str = "") -> None:
        """Send ``data`` on ``s``; ``what`` names the message in the trace."""
        if s.broken or s.end_of(src).closed:
            return
        self.sent[src] += 1
        dst = s.other(src).node
        if self.faults.loss and self.rng.random() < self.faults.loss:
            self._break(s, "lost", STREAM_TIMEOUT_MS)
            return
        if not (self.nodes[dst].up and self.reachable(src, dst)):
            self._break(s, "unreachable", STREAM_TIMEOUT_MS)
            return
        way = 0 if s.ends[0].node == src else 1
        at = max(self.sched.now + self._delay(src, dst), s._last[way] + 1)  # in order (TCP)
        s._last[way] = at
        self.sched.at(at, f"stream {s.protocol} #{s.id} {src}->{dst} {what}", lambda: self._deliver(s, dst, data))

    def _deliver(self, s: Stream, dst: int, data: bytes) -> None:
        end = s.end_of(dst)
        if not s.broken and not end.closed and self.nodes[dst].up:
            end.receive(data)

    def close(self, s: Stream, node: int) -> None:
        """``node`` is done with ``s``: the other end sees the stream end once what was sent arrived."""
        end = s.end_of(node)
        if end.closed:
            return
        end.closed = True
        self._forget(s, node)
        other = s.other(node)
        if not s.broken and not other.closed:
            way = 0 if s.ends[0].node == node else 1
            at = max(self.sched.now + self._delay(node, other.node), s._last[way] + 1)
            self.sched.at(at, f"stream {s.protocol} #{s.id} closed by {node}", lambda: self._end(s, other, "closed"))

    def _end(self, s: Stream, end: End, reason: str) -> None:
        if not end.closed and self.nodes[end.node].up:
            end.closed = True
            self._forget(s, end.node)
            end.gone(reason)

    def _forget(self, s: Stream, node: int) -> None:
        if s in self.open_streams[node]:
            self.open_streams[node].remove(s)

    def _break(self, s: Stream, reason: str, after: int) -> None:
        if s.broken:
            return
        s.broken = True
        for end in s.ends:
            if not end.closed:
                self.sched.after(after, f"stream {s.protocol} #{s.id} {reason} at {end.node}",
                                 lambda end=end: self._end(s, end, reason))

    def crashed(self, node: int) -> None:
        """Every stream of ``node`` dies with it; the other ends see a reset or silence."""
        for s in list(self.open_streams[node]):
            s.end_of(node).closed = True
            self._break(s, "peer crashed", STREAM_TIMEOUT_MS)
        self.open_streams[node] = []
