"""``python -m sim``: run seeds, replay one, or measure how the network scales.

    python -m sim --seed 7                 # one run; on a failure: seed, invariant, trace
    python -m sim --seeds 1..20 --nodes 6  # a range (or a list: 1,5,9); stops at the first failure
    python -m sim --seeds 1..20 --as-is    # the node as it was before the fixes of docs/simulation.md
    python -m sim --nodes 1000             # more than SCALE_FROM nodes: the scale figures
    python -m sim --scale 100,1000,10000   # the scale table (docs/simulation.md)

Exit status: 0 if every run kept every invariant, 1 if one did not.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from .scale import HEADER, measure
from .world import Config, run

SCALE_FROM = 64  # from this many nodes on, --nodes means a scale run


def seeds_of(text: str) -> list[int]:
    """``"1..20"`` (inclusive), ``"3,5,8"`` or ``"7"``."""
    if ".." in text:
        a, b = text.split("..", 1)
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, help="run (replay) one seed")
    ap.add_argument("--seeds", default="1..20", help="seeds to run: A..B, or a list a,b,c (default 1..20)")
    ap.add_argument("--nodes", type=int, default=6, help="honest nodes (default 6; hostile ones come on top)")
    ap.add_argument("--as-is", action="store_true", help="without the fixes of what the simulator found (docs/simulation.md)")
    ap.add_argument("--scale", help="node counts to measure, e.g. 100,1000,10000")
    args = ap.parse_args(argv)

    sizes = [int(n) for n in args.scale.split(",")] if args.scale else (
        [args.nodes] if args.nodes >= SCALE_FROM else [])
    if sizes:
        print(HEADER, flush=True)
        ok = True
        for n in sizes:
            f = measure(n, args.seed if args.seed is not None else 1)
            print(f.row(), flush=True)
            ok = ok and f.ok
            if not f.ok:
                print(f"  FAILED: {f.detail}", flush=True)
        return 0 if ok else 1

    config = Config(nodes=args.nodes)
    if args.as_is:
        config = replace(config, fixes=frozenset())
    seeds = [args.seed] if args.seed is not None else seeds_of(args.seeds)
    start = time.perf_counter()
    for seed in seeds:
        result = run(seed, config)
        print(result.report(), flush=True)
        if not result.ok:
            return 1
    print(f"{len(seeds)} seeds kept every invariant in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
