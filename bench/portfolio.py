"""The portfolio and auto-invest at scale, next to this machine's raw Ed25519 verify rate
measured in the same run (issue 11).

What ``p2pnode portfolio`` costs is the node reading each loan's documents from its
store (``Loans.holdings``: the loan index, the entries, each loan's state and cash
flows) and then the portfolio over the holdings (``portfolio.portfolios``). The node
keeps each loan's holding per day and set of documents (p2pnode/lending/statecache.py),
so the command has two costs, both measured:

- *cold*: the first ``portfolio`` of a day (or after a restart): every loan's state and
  flows computed. In memory over N loans (default 10,000; real contracts and receipts
  of tests/protocol/portfolio_kit.py): ``portfolio_cold_ms_p50``.
- *warm*: another ``portfolio`` the same day: the portfolio's sums over the kept
  holdings, N loans: ``portfolio_warm_ms_p50`` (the holdings keep their per-loan sums,
  portfolio.py).
- *node*: the same through a real LevelDB store built with ``--store-loans`` loans
  (default 1,000, written through ``Store.append`` by lender and borrowers as the nodes
  write them; building one of 10,000 takes minutes of signing and verifying, so it is
  smaller and its per-loan figures are scaled to N, which the output says):
  ``Loans.holdings`` cold, warm with nothing new, and after one new receipt (one loan
  derived again), then the whole command's estimate at N (``command_*_ms_at_n``: the
  store's reading scaled, plus the portfolio measured at N). Credit's grades of the
  borrowers are not in it (credit.py's cost, kept apart).
- *auto-invest*: one pass of protocol/lending/autoinvest.decide over a book of M
  requests (default 10,000) with the lender's own N loans as what it has out.

    .venv/bin/python bench/portfolio.py [--loans 10000] [--store-loans 1000] [--requests 10000] [--runs 5] [--json]

The node pays the cold cost off the command's path: a background task
(``Loans.keep_holdings``: every 60 s, and a second after new loan entries) brings the
kept holdings up to date, deriving a few loans between checkpoints of its event loop, so
a ``portfolio`` finds them derived except in the first pass after a start or midnight
UTC. The command's own cost is then the warm one (``command_warm_ms_at_n``), or
``command_one_new_ms_at_n`` when it comes within that second of a change.

Target: the command's p50 <= 500 ms at 10,000 loans. A benchmark is not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
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


class StoreNode:
    """A lender's node reduced to what ``Loans.holdings`` reads: a real LevelDB store (in
    a temporary directory) holding ``n`` loans the way the nodes write them (the
    agreement and every receipt recorded by both parties, each in its own chain, through
    ``Store.append`` and the lending kinds), and the ``Loans`` of the lender over it."""

    NOW_MS = 1_780_000_000_000

    def __init__(self, store, registry, lender, borrowers) -> None:
        self.store, self.registry, self.lender, self.borrowers = store, registry, lender, borrowers

    @classmethod
    def build(cls, path: str, n: int, seed: int = 1) -> "StoreNode":
        from p2pnode.extensions import load
        from p2pnode.ledger.store import Store
        from protocol.keys import SigningKey
        from protocol.kinds import genesis_body
        from protocol.lending.contract import contract_schedule, countersign_contract, make_receipt

        loaded = load()
        store = Store(Path(path) / "store", create=True)
        loaded.prepare(store)
        rnd = random.Random(seed)
        lender = SigningKey.from_seed(bytes(32))
        borrowers = [SigningKey.from_seed((k + 1).to_bytes(32, "big")) for k in range(n // 5 + 1)]
        items: dict[bytes, list] = {k.public_key: [("genesis", genesis_body(None))] for k in (lender, *borrowers)}
        keys = {k.public_key: k for k in (lender, *borrowers)}
        for i in range(n):
            bk = borrowers[rnd.randrange(len(borrowers))]
            start = TODAY - timedelta(days=rnd.randrange(30, 360))
            c = contract(lender=lender.public_key, borrower=bk.public_key, start=start.isoformat(),
                         principal=rnd.randrange(25_00, 5000_00), offer=loan_id(f"offer {i}"),
                         created=cls.NOW_MS, expires=cls.NOW_MS + 1000)
            env = countersign_contract(c, bk, lender)
            docs = [("loan.agreement", {"contract": env.raw})]
            docs.append(("loan.receipt", {"receipt": make_receipt(bk, loan=env.id, n=1, what="disbursement",
                                                                  amount=c["principal"], day=start,
                                                                  payer=lender.public_key).raw}))
            due = max(0, (TODAY - start).days // 30 - (1 if rnd.random() < 0.05 else 0))
            late = rnd.choice((0, 0, 0, 3, 12))
            for k, inst in enumerate(contract_schedule(c)[:min(12, due)], 2):
                day = min(TODAY, inst.due + timedelta(days=late))
                docs.append(("loan.receipt", {"receipt": make_receipt(lender, loan=env.id, n=k, what="repayment",
                                                                      amount=inst.payment, day=day,
                                                                      payer=bk.public_key).raw}))
            items[lender.public_key].extend(docs)
            items[bk.public_key].extend(docs)
        for pk, its in items.items():
            for at in range(0, len(its), 2000):
                store.append(keys[pk], its[at:at + 2000], now_ms=cls.NOW_MS, registry=loaded.registry)
        return cls(store, loaded.registry, lender, borrowers)

    def loans(self):
        """A new ``Loans`` of the lender over the store (its per-loan cache empty)."""
        from types import SimpleNamespace

        from p2pnode.ledger.store import Chains
        from p2pnode.lending.documents import LoanDocuments
        from p2pnode.lending.loans import Loans

        ctx = SimpleNamespace(key=self.lender, me=self.lender.public_key, chains=Chains(self.store),
                              index=self.store.index("lending"), clock=None, count=lambda *a, **k: None)
        return Loans(ctx, LoanDocuments(ctx), None, {})

    def add_receipt(self) -> None:
        """One more receipt, of the first loan the lender lends that has one to add: a
        repayment of 1.00 dated today, recorded by the lender (``loan receipt``)."""
        from protocol.lending.contract import make_receipt
        from p2pnode.lending.loanview import loan_ids, read_loan
        from p2pnode.ledger.store import Chains

        index, chains = self.store.index("lending"), Chains(self.store)
        for loan in loan_ids(index):
            rec = read_loan(chains, index, loan)
            st = rec.state(TODAY)
            if st.state in ("current", "late", "delinquent"):
                env = make_receipt(self.lender, loan=loan, n=len(st.counted) + 1, what="repayment", amount=100,
                                   day=TODAY, payer=rec.contract["borrower"])
                self.store.append(self.lender, [("loan.receipt", {"receipt": env.raw})], now_ms=self.NOW_MS,
                                  registry=self.registry)
                return
        raise AssertionError("no loan to add a receipt to")


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
    ap.add_argument("--store-loans", type=int, default=1_000, help="loans of the real store (0: no store part)")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    progress = (lambda m: None) if a.json else (lambda m: print(m, file=sys.stderr))

    progress("machine limit: Ed25519 verify")
    verify = raw_verify_per_s()
    progress(f"building {a.loans:,} loans")
    docs = documents(a.loans)
    cold, _ = timed(lambda: portfolios(holdings(docs), TODAY), a.runs)
    hs_once = holdings(docs)
    sums_cold, _ = timed(lambda: portfolios([dataclasses.replace(h) for h in hs_once], TODAY), a.runs)
    portfolios(hs_once, TODAY)  # (the first sum keeps each holding's own sums for the day)
    warm, _ = timed(lambda: portfolios(hs_once, TODAY), a.runs)
    out: dict = {
        "raw_verify_per_s": round(verify),
        "loans": a.loans,
        "portfolio_cold_ms_p50": round(statistics.median(cold), 1),
        "portfolio_cold_ms_max": round(max(cold), 1),
        "portfolio_sums_cold_ms_p50": round(statistics.median(sums_cold), 1),
        "portfolio_warm_ms_p50": round(statistics.median(warm), 1),
        "portfolio_target_ms": TARGET_MS,
        "portfolio_cold_in_verifies": round(statistics.median(cold) / 1000 * verify),
    }
    if a.store_loans > 0:
        out.update(store_part(a.store_loans, a.loans, a.runs, statistics.median(sums_cold),
                              statistics.median(warm), progress))
    rnd = random.Random(2)
    book = [Candidate(i.to_bytes(32, "big"), borrower(rnd.randrange(a.requests // 3 + 1)), "EUR",
                      rnd.randrange(300, 3000), rnd.choice(("6m", "12m", "24m", "36m")), rnd.randrange(25_00, 5000_00),
                      25_00, rnd.choice(("A", "B", "C", "D", "E", "F", "G", "none"))) for i in range(a.requests)]
    invested = Invested(total={"EUR": sum(h.exposure for h in hs_once)})
    strategy = Strategy({"EUR": invested.total["EUR"] + 100_000_00}, {"EUR": 50_00}, 500, "E",
                        max_term_months=24)
    auto, decisions = timed(lambda: decide(strategy, book, invested), a.runs)
    out.update({"requests": a.requests, "autoinvest_pass_ms_p50": round(statistics.median(auto), 1),
                "autoinvest_funded": sum(1 for d in decisions if d.reason == "fund")})
    if a.json:
        print(json.dumps(out))
        return
    print(f"machine        Ed25519 verify {out['raw_verify_per_s']:,}/s")
    print(f"portfolio      {a.loans:,} loans, computed: cold (first of the day) p50 {out['portfolio_cold_ms_p50']} ms "
          f"(max {out['portfolio_cold_ms_max']}; = {out['portfolio_cold_in_verifies']:,} raw verifies; the sums over "
          f"the holdings {out['portfolio_sums_cold_ms_p50']} ms of it); "
          f"warm (same day, holdings kept) p50 {out['portfolio_warm_ms_p50']} ms; target <= {TARGET_MS:g} ms")
    if a.store_loans > 0:
        print(f"node store     {a.store_loans:,} loans in LevelDB: holdings cold p50 {out['store_cold_ms_p50']} ms "
              f"({out['store_cold_ms_per_loan']} ms a loan, of which reading {out['store_read_ms_per_loan']}); "
              f"warm p50 {out['store_warm_ms_p50']} ms; after one new receipt p50 {out['store_one_new_ms_p50']} ms")
        print(f"command        at {a.loans:,} loans (store scaled from {a.store_loans:,}): cold ~{out['command_cold_ms_at_n']:,} ms, "
              f"warm ~{out['command_warm_ms_at_n']} ms, after one new receipt ~{out['command_one_new_ms_at_n']} ms")
    print(f"auto-invest    one pass over {a.requests:,} requests: p50 {out['autoinvest_pass_ms_p50']} ms, "
          f"{out['autoinvest_funded']:,} parts funded")


def store_part(n: int, scale_to: int, runs: int, cold_sums_ms: float, warm_sums_ms: float, progress) -> dict:
    """``Loans.holdings`` over a real store of ``n`` loans: cold (a new cache), warm, and
    after one new receipt; and the command at ``scale_to`` loans, from these per loan."""
    import tempfile

    from p2pnode.lending.loanview import loan_ids, read_loan
    from p2pnode.ledger.store import Chains

    progress(f"building a store of {n:,} loans")
    with tempfile.TemporaryDirectory() as d:
        node = StoreNode.build(d, n)
        try:
            day = TODAY.isoformat()
            cold, _ = timed(lambda: node.loans().holdings(day), runs)
            index, chains = node.store.index("lending"), Chains(node.store)
            read, _ = timed(lambda: [read_loan(chains, index, x) for x in loan_ids(index)], runs)
            loans = node.loans()
            loans.holdings(day)
            warm, _ = timed(lambda: loans.holdings(day), runs)
            one = []
            for _ in range(runs):
                node.add_receipt()
                before = loans._states.derived
                t, _ = timed(lambda: loans.holdings(day), 1)
                assert loans._states.derived == before + 1, "one loan derived again"
                one += t
        finally:
            node.store.close()
    p50 = statistics.median
    per_loan = p50(cold) / n
    scale = scale_to / n
    return {
        "store_loans": n,
        "store_cold_ms_p50": round(p50(cold), 1),
        "store_cold_ms_per_loan": round(per_loan, 3),
        "store_read_ms_per_loan": round(p50(read) / n, 3),
        "store_warm_ms_p50": round(p50(warm), 1),
        "store_one_new_ms_p50": round(p50(one), 1),
        # the store's part scaled to N; the portfolio's sums measured at N
        "command_cold_ms_at_n": round(p50(cold) * scale + cold_sums_ms),
        "command_warm_ms_at_n": round(p50(warm) * scale + warm_sums_ms, 1),
        "command_one_new_ms_at_n": round(p50(one) * scale + warm_sums_ms, 1),
    }


if __name__ == "__main__":
    main()
