"""A deterministic simulator of a p2pnode network (issue 9; docs/simulation.md).

The node's real pure logic (``protocol/``: chain rules, the sync machines, fork proofs,
the countersigning machines, the offer book's admission, loan state) runs on N simulated
nodes over a simulated network and disk, with a virtual clock and one seeded random
source. Faults are injected from that source, invariants are checked as the run goes,
and a failing run prints its seed and the trace that led to it: the same seed replays
the same run, event for event.

Modules, each named after what it holds:

- ``events``: the virtual clock, the event queue and the trace.
- ``disk``: one node's disk: what is durable, what is not yet, and a full disk.
- ``network``: links with loss, delay, duplication and reordering; partitions.
- ``store``: one node's chains, fork proofs, records and offer book over its disk.
- ``node``: an honest node: sync, gossip, countersigning and loans, as p2pnode does them.
- ``hostile``: an equivocator, a liar and an overfiller.
- ``invariants``: what must hold, checked throughout and at the end.
- ``world``: one run: the nodes, the workload, the faults, the verdict.
- ``scale``: how messages and convergence time grow with the number of nodes.
"""
