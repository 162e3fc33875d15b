"""Auto-invest on the running node (protocol/lending/autoinvest.py): the node funds, by
itself, requests in its book that match its owner's strategy (``[autoinvest]`` of
config.toml), within its policy and caps.

Promises:

- ``dry_run`` says what ``run_once`` would do now, decision by decision with its reason,
  and does nothing: the same book, grades and loans give the same decisions.
- ``run_once`` (every ``INTERVAL_S`` while on) proposes each part decided ``fund``,
  through the same ``loan propose`` as its owner would (so its own policy, and the
  borrower's node, still check it), one at a time; each decision and its outcome is
  logged and kept (the last ``MAX_KEPT``) for ``status``.
- ``on`` and ``off`` are written to config.toml (``[autoinvest] enabled``) before they
  take effect, so a restart keeps them; while off, nothing is proposed.
- What is outstanding counts every loan this node holds the claim of, not only those
  auto-invest made (the budget is of the lender's money in that currency), and a loan
  agreed but not yet disbursed at its principal (money promised).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Mapping

import trio

from protocol.errors import CodedError, ProtocolError
from protocol.keys import peer_id
from protocol.lending.autoinvest import Candidate, Invested, Strategy, decide
from protocol.lending.loanstate import AWAITING
from protocol.lending.money import format_amount

from p2pnode.context import Context
from p2pnode.errors import ApiError
from p2pnode.lending.fills import fill_now

log = logging.getLogger(__name__)

INTERVAL_S = 30.0
"""Seconds between runs while on."""
MAX_KEPT = 200
"""Decisions kept for ``status``."""


class AutoInvest:
    def __init__(self, ctx: Context, book: Any, credit: Any, countersigning: Any, loans: Any,
                 settings: Mapping[str, Any]) -> None:
        from p2pnode.lending.settings import strategy_of

        self.ctx, self.book, self.credit, self.countersigning, self.loans = ctx, book, credit, countersigning, loans
        self.enabled = bool(settings.get("enabled", False))
        self.strategy: Strategy | None = strategy_of(settings)
        self.kept: deque[dict] = deque(maxlen=MAX_KEPT)
        self._lock = trio.Lock()

    def _candidates(self) -> list[Candidate]:
        out = []
        for o in self.book.live():
            if o.side != "borrow" or o.author == self.ctx.me or o.author in self.ctx.chains.forked_authors():
                continue
            f = fill_now(self.ctx, o)
            if f.remaining <= 0:
                continue
            out.append(Candidate(o.id, o.author, o.currency, o.rate_bp, o.term, f.remaining, f.smallest,
                                 self.credit.grade(o.author)))
        return out

    def _invested(self) -> Invested:
        _, lent, _ = self.loans.holdings(None)
        total: dict[str, int] = {}
        by_borrower: dict[tuple[str, bytes], int] = {}
        by_grade: dict[tuple[str, str], int] = {}
        for h in lent:
            # (a loan agreed but not yet disbursed is money promised: it counts, at its principal,
            # which its schedule's principal parts add up to: schedule.py, rule 5)
            out = h.exposure if h.state.state != AWAITING else sum(r.principal for r in h.state.rows)
            total[h.currency] = total.get(h.currency, 0) + out
            by_borrower[(h.currency, h.borrower)] = by_borrower.get((h.currency, h.borrower), 0) + out
            g = (h.currency, self.credit.grade(h.borrower))
            by_grade[g] = by_grade.get(g, 0) + out
        return Invested(total, by_borrower, by_grade)

    def decisions(self) -> list[Any]:
        if self.strategy is None:
            raise ApiError("no auto-invest strategy: set [autoinvest] budget and per_loan in config.toml "
                           '(e.g. budget = "EUR=1000.00", per_loan = "EUR=25.00")', code="no_strategy")
        return decide(self.strategy, self._candidates(), self._invested())

    def _view(self, d: Any, outcome: str | None = None) -> dict:
        v = d.to_json()
        v["borrower"] = peer_id(d.borrower)
        v["amount_text"] = format_amount(d.amount, d.currency)
        if outcome is not None:
            v["outcome"] = outcome
            v["at_ms"] = int(time.time() * 1000)
        return v

    def dry_run(self) -> dict:
        return {"enabled": self.enabled, "decisions": [self._view(d) for d in self.decisions()]}

    async def run_once(self) -> list[dict]:
        """Decide and propose each part decided ``fund``; the decisions with outcomes."""
        async with self._lock:
            done = []
            for d in self.decisions():
                if d.reason != "fund":
                    outcome = "passed"
                else:
                    try:
                        p = await self.countersigning.propose(d.request.hex(), format_amount(d.amount, d.currency),
                                                              None, 600)
                        outcome = p["state"] if p.get("code") is None else f"{p['state']}: {p['code']}"
                    except (CodedError, ProtocolError) as e:
                        outcome = f"refused: {e.code}: {e.message}"
                v = self._view(d, outcome)
                if d.reason == "fund":
                    log.info("auto-invest: %s %s to %s for request %s: %s", v["amount_text"], d.currency,
                             v["borrower"], v["request"][:16], outcome)
                    self.ctx.count("autoinvest.proposed")
                self.kept.append(v)
                done.append(v)
            return done

    async def loop(self) -> None:
        """The task: a run every ``INTERVAL_S`` while on."""
        while True:
            if self.enabled and self.strategy is not None:
                try:
                    await self.run_once()
                except ApiError as e:
                    log.warning("auto-invest: %s", e.message)
            await self.ctx.clock.sleep(INTERVAL_S)

    async def set(self, on: bool) -> dict:
        if on and self.strategy is None:
            self.decisions()  # raises no_strategy, naming what to set
        try:
            self.ctx.save_settings({"enabled": on})
        except (CodedError, ValueError, OSError) as e:
            raise ApiError(f"auto-invest is unchanged: {getattr(e, 'message', None) or e}", code="save_failed") from None
        self.enabled = on
        ran = await self.run_once() if on else []
        return dict(self.status(), ran=ran)

    def status(self) -> dict:
        s = self.strategy
        return {"enabled": self.enabled,
                "strategy": None if s is None else {
                    "budget": dict(s.budget), "per_loan": dict(s.per_loan), "max_share_bp": s.max_share_bp,
                    "min_grade": s.min_grade or None, "grade_mix": dict(s.grade_mix),
                    "max_term_months": s.max_term_months},
                "decisions": list(self.kept)}
