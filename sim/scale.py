"""How the network's cost grows with its size: messages per node, and virtual time until
every node holds every new entry, for 100, 1,000 and 10,000 nodes.

The cheap mode that makes 10,000 nodes fit in one Python process (docs/simulation.md,
"Scale"):

- Only ``WRITERS`` nodes own a chain: each appends its genesis when it starts (within
  the first 100 ms) and, at 1 s, once every node is up, a burst of ``ENTRIES`` entries
  at once (one gossip message, as the node's gossip window batches them). Every node
  must end up holding all of them; nobody else writes. The time to converge is counted
  from 1 s, the burst.
- Signatures are real, but each distinct envelope is verified once for the whole world
  (``cached_parse``): a node that sees an envelope another node verified already gets
  the same ``Entry``. Verification is a pure function of the bytes, so this changes
  timings, not outcomes.
- No lending, no hostile nodes, no crashes or partitions; the network loses, duplicates
  and delays (``FAULTS``). No trace lines are formatted.

The topology is the node's: each node dials ``TARGET_PEERS`` (4) others and accepts
whoever dials it, so the links are a random 4-out graph (8 links per node on average);
gossip floods every link, as gossipsub's mesh of D=6 does when a node has fewer peers
than that; every node pulls from every peer every ``SYNC_INTERVAL_MS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from protocol.entry import Entry, parse_entry

from .network import Faults
from .world import Config, World

WRITERS = 10
ENTRIES = 5
FAULTS = Faults(loss=0.01, duplicate=0.01, spike=0.01)
_PARSED: dict[bytes, Entry] = {}


def cached_parse(data: bytes) -> Entry:
    """``parse_entry`` once per distinct envelope (what fails is not kept: it fails again)."""
    e = _PARSED.get(data)
    if e is None:
        e = _PARSED[data] = parse_entry(data)
    return e


def scale_config(nodes: int) -> Config:
    return Config(nodes=nodes, equivocators=0, liars=0, overfillers=0, lending=False, partitions=0, crashes=0,
                  step_crash=0, disk_full=False, skew_ms=0, far_skew_ms=0, heal_at=1_000,
                  converge_bound_ms=120_000, faults=FAULTS, writers=WRITERS, entries_each=ENTRIES,
                  parse=cached_parse, trace=False, max_events=50_000_000)


@dataclass
class Figures:
    nodes: int
    converged_ms: int | None
    messages_per_node: float
    gossip_share: float  # of the messages, the part that was gossip
    events: int
    wall_s: float
    ok: bool
    detail: str

    def row(self) -> str:
        conv = "never" if self.converged_ms is None else f"{self.converged_ms:,}"
        return (f"| {self.nodes:>6,} | {conv:>8} | {self.messages_per_node:>8.1f} | {self.gossip_share:>5.0%} "
                f"| {self.events:>11,} | {self.wall_s:>8.1f} |")


HEADER = ("| nodes  | converge (virtual ms) | messages per node | gossip | events | wall s |\n"
          "|-------:|---------:|---------:|------:|------------:|---------:|")


def measure(nodes: int, seed: int = 1) -> Figures:
    wall = time.perf_counter()
    world = World(seed, scale_config(nodes))
    gossip = [0]
    datagram = world.net.datagram

    def counted(src, dst, topic, data):  # how much of the traffic is gossip
        gossip[0] += 1
        datagram(src, dst, topic, data)

    world.net.datagram = counted
    result = world.run()
    total = max(result.messages, 1)
    return Figures(nodes, result.converged_ms, result.messages / nodes, gossip[0] / total, result.events,
                   time.perf_counter() - wall, result.ok, result.detail)
