"""The portfolio and auto-invest at scale, next to this machine's raw Ed25519 verify rate
measured in the same run (issue 11).

- *portfolio*: what ``p2pnode portfolio`` computes for a lender holding N loans (default
  10,000): each loan's state and cash flows (loanstate.loan_state and
  portfolio.holding_of, which the node runs per loan on the documents it read), then the
  portfolio over them (portfolio.portfolios). The loans are real contracts and receipts
  (tests/protocol/portfolio_kit.py), in memory: the store's reads are not counted, so the
  figure is the computing part of the command; its p50 over ``--runs`` runs.
- *auto-invest*: one pass of protocol/lending/autoinvest.decide over a book of M
  requests (default 10,000) with the lender's own N loans as what it has out.

    .venv/bin/python bench/portfolio.py [--loans 10000] [--requests 10000] [--runs 5] [--json]

Target: portfolio p50 <= 500 ms at 10,000 loans. A benchmark is not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests", ROOT / "tests" / "protocol"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from framework.limits import raw_verify_per_s  # noqa: E402
from portfolio_kit import contract, loan_id, paid, state  # noqa: E402
from protocol.lending.autoinvest import Candidate, Invested, Strategy, decide  # noqa: E402
from protocol.lending.portfolio import holding_of, portfolios  # noqa: E402

TARGET_MS = 500.0
TODAY = date(2026, 12, 1)


def borrower(n: int) -> bytes:
    return n.to_bytes(32, "big")


def documents(n: int, seed: int = 1) -> list[tuple[dict, list]]:
    """``n`` loans of 12 monthly installments, started over the last year, each with the
    receipts of the installments due so far (some late, a few never paid)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        start = TODAY - timedelta(days=rnd.randrange(30, 360))
        c = contract(borrower=borrower(rnd.randrange(n // 5 + 1)), start=start.isoformat(),
                     principal=rnd.randrange(25_00, 5000_00))
        due = max(0, (TODAY - start).days // 30 - (1 if rnd.random() < 0.05 else 0))
        out.append((c, paid(loan_id(i), c, min(12, due), late_by=rnd.choice((0, 0, 0, 3, 12)))))
    return out


def holdings(docs: list[tuple[dict, list]]) -> list:
    out = []
    for i, (c, receipts) in enumerate(docs):
        st = state(loan_id(i), c, receipts, TODAY)
        out.append(holding_of(c, st, {r.id: r for r in receipts}))
    return out


def timed(fn, runs: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loans", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    progress = (lambda m: None) if a.json else (lambda m: print(m, file=sys.stderr))

    progress("machine limit: Ed25519 verify")
    verify = raw_verify_per_s()
    progress(f"building {a.loans:,} loans")
    docs = documents(a.loans)
    whole, _ = timed(lambda: portfolios(holdings(docs), TODAY), a.runs)
    hs_once = holdings(docs)
    pure, _ = timed(lambda: portfolios(hs_once, TODAY), a.runs)
    rnd = random.Random(2)
    book = [Candidate(i.to_bytes(32, "big"), borrower(rnd.randrange(a.requests // 3 + 1)), "EUR",
                      rnd.randrange(300, 3000), rnd.choice(("6m", "12m", "24m", "36m")), rnd.randrange(25_00, 5000_00),
                      25_00, rnd.choice(("A", "B", "C", "D", "E", "F", "G", "none"))) for i in range(a.requests)]
    invested = Invested(total={"EUR": sum(h.exposure for h in hs_once)})
    strategy = Strategy({"EUR": invested.total["EUR"] + 100_000_00}, {"EUR": 50_00}, 500, "E",
                        max_term_months=24)
    auto, decisions = timed(lambda: decide(strategy, book, invested), a.runs)
    out = {
        "raw_verify_per_s": round(verify),
        "loans": a.loans,
        "portfolio_ms_p50": round(statistics.median(whole), 1),
        "portfolio_ms_max": round(max(whole), 1),
        "portfolio_target_ms": TARGET_MS,
        "portfolio_in_verifies": round(statistics.median(whole) / 1000 * verify),
        "portfolio_arithmetic_ms_p50": round(statistics.median(pure), 1),
        "requests": a.requests,
        "autoinvest_pass_ms_p50": round(statistics.median(auto), 1),
        "autoinvest_funded": sum(1 for d in decisions if d.reason == "fund"),
    }
    if a.json:
        print(json.dumps(out))
        return
    print(f"machine        Ed25519 verify {out['raw_verify_per_s']:,}/s")
    print(f"portfolio      {a.loans:,} loans: p50 {out['portfolio_ms_p50']} ms (max {out['portfolio_ms_max']}; target "
          f"<= {TARGET_MS:g} ms; = {out['portfolio_in_verifies']:,} raw verifies), of which the portfolio's own "
          f"arithmetic {out['portfolio_arithmetic_ms_p50']} ms")
    print(f"auto-invest    one pass over {a.requests:,} requests: p50 {out['autoinvest_pass_ms_p50']} ms, "
          f"{out['autoinvest_funded']:,} parts funded")


if __name__ == "__main__":
    main()
