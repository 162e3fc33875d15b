"""A running node as its owner sees it: wall time of `p2pnode status` (a new CLI process
each time, as a person or script runs it) and of one control-API call, next to the time
this machine takes to start a bare Python interpreter (the floor of any CLI command);
and the resident memory of an idle node.

    .venv/bin/python bench/node.py [--runs 30] [--json]

Targets: status p50 <= 300 ms wall time, and <= 2.5 x the bare interpreter's start measured
in the same run, in turns with it (a figure that holds on a slow or busy machine too);
idle RSS <= 120 MB.
A benchmark is not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the project, and its harness (tests/framework/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from framework.limits import percentile, rss_mb  # noqa: E402
from framework.network import Network  # noqa: E402

TARGET_STATUS_P50_MS = 300.0
TARGET_STATUS_OVER_PYTHON_START = 2.5  # status p50 / `python -c pass` p50, the same run
TARGET_IDLE_RSS_MB = 120.0


def timed_runs(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, cwd=ROOT)
        out.append((time.perf_counter() - t) * 1000)
    return out


def timed_pairs(first: list[str], second: list[str], runs: int) -> tuple[list[float], list[float]]:
    """``timed_runs`` of two commands taken in turns, so that both meet the same machine:
    the same load from others and from the nodes under test, the same warm caches."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(runs):
        a += timed_runs(first, 1)
        b += timed_runs(second, 1)
    return a, b


def measure(runs: int, progress) -> dict:
    out: dict = {"runs": runs}
    progress("bare interpreter start, no node running")
    bare = timed_runs([sys.executable, "-c", "pass"], runs)
    out["python_start_quiet_p50_ms"] = percentile(bare, 50)
    with Network.scratch() as net:
        a, b = net.add("a"), net.add("b")
        a.start("--log-level", "warning")
        b.start("--log-level", "warning")
        b.call("node.connect", {"addr": a.addr})
        progress("idle for 10 s")
        time.sleep(10)
        out["idle_rss_mb"] = rss_mb(a.pid)
        progress("p2pnode status, a new process per run, in turns with a bare interpreter start")
        cli = [sys.executable, "-m", "cli", "--home", a.home, "status", "--json"]
        bare, status = timed_pairs([sys.executable, "-c", "pass"], cli, runs)
        out["python_start_p50_ms"] = percentile(bare, 50)  # the ratio's floor: measured beside status
        out["status_p50_ms"] = percentile(status, 50)
        out["status_p95_ms"] = percentile(status, 95)
        progress("control API call, one connection per call")
        api = []
        for _ in range(runs * 10):
            t = time.perf_counter()
            a.call("node.status")
            api.append((time.perf_counter() - t) * 1000)
        out["api_status_p50_ms"] = percentile(api, 50)
        out["api_status_p95_ms"] = percentile(api, 95)
    ratio = out["status_p50_ms"] / out["python_start_p50_ms"]
    out["status_over_python_start"] = ratio
    out["status_vs_python_start"] = ratio  # (its older name)
    out["target_status_p50_ms"] = TARGET_STATUS_P50_MS
    out["target_status_over_python_start"] = TARGET_STATUS_OVER_PYTHON_START
    out["target_idle_rss_mb"] = TARGET_IDLE_RSS_MB
    out["status_target_met"] = out["status_p50_ms"] <= TARGET_STATUS_P50_MS
    out["status_over_python_start_target_met"] = ratio <= TARGET_STATUS_OVER_PYTHON_START
    out["target_met"] = (out["status_target_met"] and out["status_over_python_start_target_met"]
                         and out["idle_rss_mb"] <= TARGET_IDLE_RSS_MB)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="CLI runs timed")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    started = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {what}...", file=sys.stderr, flush=True)

    r = measure(args.runs, progress)
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print(f"python -c pass         p50 {r['python_start_p50_ms']:.0f} ms   (the floor of any command; "
              f"{r['python_start_quiet_p50_ms']:.0f} ms before the nodes started)")
        print(f"p2pnode status         p50 {r['status_p50_ms']:.0f} ms, p95 {r['status_p95_ms']:.0f} ms "
              f"(target p50 <= {TARGET_STATUS_P50_MS:.0f} ms)")
        print(f"status / python start  {r['status_over_python_start']:.2f} x "
              f"(target <= {TARGET_STATUS_OVER_PYTHON_START:g} x)")
        print(f"control API call       p50 {r['api_status_p50_ms']:.2f} ms, p95 {r['api_status_p95_ms']:.2f} ms")
        print(f"idle node RSS          {r['idle_rss_mb']:.0f} MB (target <= {TARGET_IDLE_RSS_MB:.0f} MB)")
        print(f"targets                {'met' if r['target_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
