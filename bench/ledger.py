"""Ledger speed and memory: own appends and foreign ingest, against the machine's own limits.

Run from the repository root:

    .venv/bin/python bench/ledger.py            # table for people
    .venv/bin/python bench/ledger.py --json     # one JSON object
    .venv/bin/python bench/ledger.py --n 5000   # smaller / larger runs

Every figure is measured in this process, next to the limit that bounds it on this machine
(DESIGN.md, "Tests and benchmarks"), so that a result reads as a ratio:

- raw_sign_per_s, raw_verify_per_s: Ed25519 with ``cryptography`` (the library the node
  uses), on messages of exactly the size the node signs for a typical note entry
  (``SIGNING_PREFIX + payload``);
- leveldb_batch_put_per_s: plyvel, one synced write batch of N puts with keys and values of
  entry size; leveldb_sync_put_p50_ms: one synced put at a time (the floor of a durable
  append);
- append_batched_per_s: ``Store.append`` of batches of note entries into a fresh store;
- append_durable_p50_ms / _p99_ms: ``Store.append_one`` (one synced batch each);
- ingest_batched_per_s: ``Store.ingest`` of another author's chain (genesis, then notes),
  in batches, into a fresh store: decode, verify, check, store.

Rates are the median over ``--rounds`` rounds (each after a warm-up). Targets:
append_batched >= 0.5 x raw_sign, ingest_batched >= 0.7 x raw_verify, durable append
p50 <= 2 ms. A benchmark is not a test: it reports whether targets are met and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the project, and its harness (tests/framework/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from framework.limits import (  # noqa: E402
    leveldb_batch_puts_per_s,
    leveldb_synced_put_ms,
    peak_rss_mb,
    percentile,
    raw_sign_per_s,
    raw_verify_per_s,
    timed,
)
from p2pnode.ledger.store import Store  # noqa: E402
from protocol.entry import next_entry  # noqa: E402
from protocol.envelope import SIGNING_PREFIX, open_envelope  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.kinds import core_registry, genesis_body  # noqa: E402

T0_MS = 1_700_000_000_000
NOTE_TEXT = "repaid 25.00 EUR of loan 7f3a, installment {i:06d}/12"
"""A short note: gives a payload of ~185 bytes, the size of a typical small entry."""

TARGETS = {
    "append_batched_vs_raw_sign": 0.5,
    "ingest_batched_vs_raw_verify": 0.7,
    "append_durable_p50_ms": 2.0,
}


def note(i: int) -> dict:
    return {"text": NOTE_TEXT.format(i=i)}


class TempDirs:
    """Temporary directories removed at exit, whatever happens."""

    def __init__(self, under: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="p2pnode-bench-", dir=under))
        self._n = 0

    def new(self, name: str) -> Path:
        self._n += 1
        return self.root / f"{self._n:03d}-{name}"

    def drop(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> "TempDirs":
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -- the node's own paths --------------------------------------------------------------------


def bench_append_batched(tmp: TempDirs, n: int, batch: int, rounds: int) -> float:
    registry = core_registry()
    rates = []
    for r in range(rounds + 1):  # the first round is a warm-up
        count = min(n, 2 * batch) if r == 0 else n
        path = tmp.new("append")
        key = SigningKey.generate()
        with Store(path, create=True) as store:
            store.append_one(key, "genesis", genesis_body("bench"), now_ms=T0_MS, registry=registry)
            batches = []
            i = 0
            while i < count:
                batches.append([("note", note(j)) for j in range(i, min(count, i + batch))])
                i += batch

            def run() -> None:
                for b, items in enumerate(batches):
                    store.append(key, items, now_ms=T0_MS + b, registry=registry)

            dt = timed(run)
        tmp.drop(path)
        if r:
            rates.append(count / dt)
    return statistics.median(rates)


def bench_append_durable(tmp: TempDirs, n: int) -> tuple[float, float, float]:
    """p50, p99 and mean in ms of ``Store.append_one`` (one durable entry per call)."""
    registry = core_registry()
    path = tmp.new("append-durable")
    key = SigningKey.generate()
    lat = []
    perf = time.perf_counter
    with Store(path, create=True) as store:
        store.append_one(key, "genesis", genesis_body("bench"), now_ms=T0_MS, registry=registry)
        for i in range(20):  # warm-up
            store.append_one(key, "note", note(i), now_ms=T0_MS, registry=registry)
        gc.collect()
        for i in range(n):
            body = note(i)
            t = perf()
            store.append_one(key, "note", body, now_ms=T0_MS + i, registry=registry)
            lat.append((perf() - t) * 1000)
    tmp.drop(path)
    mean = statistics.fmean(lat)
    lat.sort()
    return percentile(lat, 50), percentile(lat, 99), mean


def build_foreign_chain(n: int) -> list[bytes]:
    """Envelopes of another author's chain: genesis, then ``n - 1`` notes."""
    key = SigningKey.generate()
    head = next_entry(key, None, now_ms=T0_MS, kind="genesis", body=genesis_body("lender"))
    out = [head.envelope]
    for i in range(1, n):
        head = next_entry(key, head, now_ms=T0_MS + i, kind="note", body=note(i))
        out.append(head.envelope)
    return out


def bench_ingest_batched(tmp: TempDirs, chain: list[bytes], batch: int, rounds: int) -> float:
    registry = core_registry()
    n = len(chain)
    batches = [chain[i : i + batch] for i in range(0, n, batch)]
    rates = []
    for r in range(rounds + 1):  # the first round is a warm-up
        todo = batches[:1] if r == 0 else batches
        path = tmp.new("ingest")
        added = 0
        with Store(path, create=True) as store:

            def run() -> None:
                nonlocal added
                for b in todo:
                    added += len(store.ingest(b, registry=registry).added)

            dt = timed(run)
        tmp.drop(path)
        if added != sum(map(len, todo)):  # a broken chain would make the rate meaningless
            print(f"warning: ingest stored {added} of {sum(map(len, todo))} entries", file=sys.stderr)
        if r:
            rates.append(n / dt)
    return statistics.median(rates)


# -- report ----------------------------------------------------------------------------------


def measure(
    n: int, rounds: int, append_batch: int, ingest_batch: int, durable_n: int, under: str | None, progress
) -> dict:
    # The exact sizes the node signs and stores for a typical note entry.
    key = SigningKey.generate()
    genesis = next_entry(key, None, now_ms=T0_MS, kind="genesis", body=genesis_body())
    sample = next_entry(key, genesis, now_ms=T0_MS, kind="note", body=note(0))
    payload_size = len(open_envelope(sample.envelope).payload)
    message_size = len(SIGNING_PREFIX) + payload_size
    envelope_size = len(sample.envelope)

    out: dict = {}
    with TempDirs(under) as tmp:
        store_dir = str(tmp.root.parent)
        progress("raw Ed25519 sign")
        out["raw_sign_per_s"] = raw_sign_per_s(message_size, n, rounds)
        progress("raw Ed25519 verify")
        out["raw_verify_per_s"] = raw_verify_per_s(message_size, max(1, n // 2), rounds)
        progress("LevelDB synced write batch")
        out["leveldb_batch_put_per_s"] = leveldb_batch_puts_per_s(envelope_size, max(n, 50_000), rounds, under=tmp.root)
        progress("LevelDB synced single puts")
        put_ms = leveldb_synced_put_ms(envelope_size, durable_n, under=tmp.root)
        out["leveldb_sync_put_p50_ms"] = percentile(put_ms, 50)
        out["leveldb_sync_put_p99_ms"] = percentile(put_ms, 99)
        progress("Store.append (batched)")
        out["append_batched_per_s"] = bench_append_batched(tmp, n, append_batch, rounds)
        progress("Store.append_one (durable)")
        p50, p99, mean = bench_append_durable(tmp, durable_n)
        out["append_durable_p50_ms"] = p50
        out["append_durable_p99_ms"] = p99
        out["append_durable_mean_ms"] = mean
        progress("building a foreign chain")
        chain = build_foreign_chain(n)
        progress("Store.ingest (batched)")
        out["ingest_batched_per_s"] = bench_ingest_batched(tmp, chain, ingest_batch, rounds)
        del chain

    ratios = {
        "append_batched_vs_raw_sign": out["append_batched_per_s"] / out["raw_sign_per_s"],
        "ingest_batched_vs_raw_verify": out["ingest_batched_per_s"] / out["raw_verify_per_s"],
        # informational: how much a durable append costs over a bare synced put
        "append_durable_p50_vs_sync_put": out["append_durable_p50_ms"] / out["leveldb_sync_put_p50_ms"],
    }
    out["ratios"] = ratios
    out["targets"] = {
        "append_batched_vs_raw_sign": f">= {TARGETS['append_batched_vs_raw_sign']}",
        "ingest_batched_vs_raw_verify": f">= {TARGETS['ingest_batched_vs_raw_verify']}",
        "append_durable_p50_ms": f"<= {TARGETS['append_durable_p50_ms']}",
    }
    out["targets_met"] = {
        "append_batched_vs_raw_sign": ratios["append_batched_vs_raw_sign"] >= TARGETS["append_batched_vs_raw_sign"],
        "ingest_batched_vs_raw_verify": ratios["ingest_batched_vs_raw_verify"]
        >= TARGETS["ingest_batched_vs_raw_verify"],
        "append_durable_p50_ms": out["append_durable_p50_ms"] <= TARGETS["append_durable_p50_ms"],
    }
    out["peak_rss_mb"] = peak_rss_mb()
    out["params"] = {
        "n": n,
        "rounds": rounds,
        "append_batch": append_batch,
        "ingest_batch": ingest_batch,
        "durable_n": durable_n,
        "signed_message_bytes": message_size,
        "payload_bytes": payload_size,
        "envelope_bytes": envelope_size,
        "store_dir": store_dir,
    }
    out["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    return out


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}/s"


def fmt_ms(v: float) -> str:
    return f"{v:.3f} ms"


def table(r: dict) -> str:
    ratios, met = r["ratios"], r["targets_met"]
    yn = lambda b: "yes" if b else "NO"  # noqa: E731
    rows = [
        ("figure", "value", "machine limit", "ratio", "target", "met"),
        ("raw_sign_per_s", fmt_rate(r["raw_sign_per_s"]), "", "", "", ""),
        ("raw_verify_per_s", fmt_rate(r["raw_verify_per_s"]), "", "", "", ""),
        ("leveldb_batch_put_per_s", fmt_rate(r["leveldb_batch_put_per_s"]), "", "", "", ""),
        ("leveldb_sync_put_p50_ms", fmt_ms(r["leveldb_sync_put_p50_ms"]), "", "", "", ""),
        (
            "append_batched_per_s",
            fmt_rate(r["append_batched_per_s"]),
            f"{fmt_rate(r['raw_sign_per_s'])} sign",
            f"{ratios['append_batched_vs_raw_sign']:.2f}",
            r["targets"]["append_batched_vs_raw_sign"],
            yn(met["append_batched_vs_raw_sign"]),
        ),
        (
            "append_durable_p50_ms",
            fmt_ms(r["append_durable_p50_ms"]),
            f"{fmt_ms(r['leveldb_sync_put_p50_ms'])} put",
            f"{ratios['append_durable_p50_vs_sync_put']:.2f}x",
            f"{r['targets']['append_durable_p50_ms']} ms",
            yn(met["append_durable_p50_ms"]),
        ),
        (
            "append_durable_p99_ms",
            fmt_ms(r["append_durable_p99_ms"]),
            f"{fmt_ms(r['leveldb_sync_put_p99_ms'])} put",
            "",
            "",
            "",
        ),
        (
            "ingest_batched_per_s",
            fmt_rate(r["ingest_batched_per_s"]),
            f"{fmt_rate(r['raw_verify_per_s'])} verify",
            f"{ratios['ingest_batched_vs_raw_verify']:.2f}",
            r["targets"]["ingest_batched_vs_raw_verify"],
            yn(met["ingest_batched_vs_raw_verify"]),
        ),
        ("peak_rss_mb", f"{r['peak_rss_mb']:.1f} MB", "", "", "", ""),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 2, 3}
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right and n else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    p = r["params"]
    lines.append("")
    lines.append(
        f"n={p['n']} rounds={p['rounds']} (median) append batch={p['append_batch']} ingest batch={p['ingest_batch']} "
        f"durable appends={p['durable_n']}; signed message {p['signed_message_bytes']} B, "
        f"envelope {p['envelope_bytes']} B; stores in {p['store_dir']}; python {r['machine']['python']}, {r['machine']['cpus']} cpus"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--n", type=int, default=25_000, help="entries (and Ed25519 operations) per figure")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per rate; the median is reported")
    ap.add_argument("--append-batch", type=int, default=1000, help="entries per Store.append call")
    ap.add_argument("--ingest-batch", type=int, default=2000, help="envelopes per Store.ingest call")
    ap.add_argument("--durable", type=int, default=500, help="Store.append_one calls timed one by one")
    ap.add_argument("--dir", help="make the temporary stores under this directory (default: the system's temp dir)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    if args.n < 10 or args.rounds < 1 or args.append_batch < 1 or args.ingest_batch < 1 or args.durable < 1:
        ap.error("--n must be >= 10, and --rounds, batch sizes and --durable >= 1")

    started = time.perf_counter()

    def progress(what: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:5.1f}s] {what}...", file=sys.stderr, flush=True)

    r = measure(args.n, args.rounds, args.append_batch, args.ingest_batch, args.durable, args.dir, progress)
    r["elapsed_s"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print(table(r))
        print(f"elapsed {r['elapsed_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
