"""The lender's own loss reserve on the running node (protocol/lending/reserve.py,
docs/portfolio.md): no pooled fund, a ledger of money this node's owner sets aside,
recorded in its own chain as signed ``reserve.entry`` entries that anyone holding the
chain can replay.

Promises:

- ``reconcile`` brings the ledger up to date with the loans this node holds the claim of,
  idempotently (a second call with nothing new appends nothing), one currency at a time,
  under one lock:

  - ``set_aside``: ``[reserve] share`` of the interest received on each loan that no
    earlier ``set_aside`` of that loan counted (an entry names its loan and the interest
    it came from, so the interest already counted is read back from the chain);
  - ``draw``: once per written-off loan, its outstanding principal (what the balance does
    not cover is recorded as ``uncovered``);
  - ``top_up`` (and, with ``[reserve] release``, ``release``): the balance follows the
    provisions required now (provisioning.py with ``[reserve] provisioning``).

  Every movement is dated today; one the fold refuses (a clock set back before the last
  entry's date) is logged and left for a later call, never appended.
- It runs after this node signs a repayment receipt or a write-off, and every
  ``UPKEEP_S`` (provisions grow as loans age); ``reserve.update`` runs it on demand.
- ``show`` only reads: the balance replayed from the chain, the provisions required now,
  the coverage and the shortfall, per currency.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Mapping

import trio

from protocol.errors import ProtocolError
from protocol.lending import provisioning
from protocol.lending.money import format_amount
from protocol.lending.reserve import (
    ENTRY_KIND, RESERVE_INDEX, ReserveState, body_of, plan_draw, plan_follow, plan_set_aside, replay,
)
from protocol.lending.loanstate import WRITTEN_OFF

from p2pnode.context import Context

log = logging.getLogger(__name__)

UPKEEP_S = 3600.0
"""Seconds between reconciliations by the task (provisions change as loans age)."""
MAX_ENTRIES = 100_000
"""Reserve entries of one currency a replay reads at most."""


class LossReserve:
    def __init__(self, ctx: Context, docs: Any, loans: Any, settings: Mapping[str, Any]) -> None:
        from p2pnode.lending.settings import provisioning_of, share_bp_of

        self.ctx, self.docs, self.loans = ctx, docs, loans
        self.share_bp = share_bp_of(settings.get("share") or "")
        self.release = bool(settings.get("release", False))
        self.params = provisioning_of(settings.get("provisioning") or "")
        self._lock = trio.Lock()

    # -- reading the ledger ------------------------------------------------------------------

    def bodies(self, currency: str) -> list[dict]:
        """The bodies of this node's ``reserve.entry`` entries of ``currency``, in chain order."""
        me = self.ctx.me
        start = len(RESERVE_INDEX) + 32 + 3
        out = []
        for n, k in enumerate(self.ctx.index.keys(RESERVE_INDEX + me + currency.encode())):
            if n >= MAX_ENTRIES:
                break
            e = self.ctx.chains.entry(me, int.from_bytes(k[start:start + 8], "big"))
            if e is not None:
                out.append(e.body)
        return out

    def currencies(self) -> list[str]:
        return sorted(c.decode() for c in self.ctx.index.distinct(3, RESERVE_INDEX + self.ctx.me))

    def required(self, today: date) -> dict[str, Any]:
        """The provisions required now, per currency, over the loans this node holds."""
        _, lent, _ = self.loans.holdings(today.isoformat())
        return provisioning.required_by_currency([(h.currency, h.state) for h in lent], self.params)

    # -- writing it --------------------------------------------------------------------------

    async def reconcile(self) -> list[dict]:
        """Append what the ledger lacks (module docstring); the bodies appended."""
        async with self._lock:
            today = self.loans.today()
            _, lent, _ = await self.loans.holdings_soon(today.isoformat())
            required = provisioning.required_by_currency([(h.currency, h.state) for h in lent], self.params)
            appended: list[dict] = []
            for cur in sorted({h.currency for h in lent} | set(self.currencies())):
                try:
                    appended += await self._reconcile(cur, [h for h in lent if h.currency == cur],
                                                      required[cur].total if cur in required else 0, today)
                except ProtocolError as e:
                    log.warning("the %s reserve is not brought up to date: %s", cur, e.message)
            return appended

    async def _reconcile(self, cur: str, lent: list[Any], required: int, today: date) -> list[dict]:
        bodies = self.bodies(cur)
        state = replay(bodies, cur)
        counted: dict[bytes, int] = {}
        drawn: set[bytes] = set()
        for b in bodies:
            if b["kind"] == "set_aside" and "loan" in b:
                counted[b["loan"]] = counted.get(b["loan"], 0) + b.get("interest", 0)
            elif b["kind"] == "draw":
                drawn.add(b["loan"])
        moves = []
        for h in lent:
            if h.flows is not None:
                interest = sum(r.interest for r in h.flows.receipts)
                m = plan_set_aside(cur, interest - counted.get(h.loan, 0), today, self.share_bp, loan=h.loan) \
                    if interest > counted.get(h.loan, 0) else None
                if m is not None:
                    moves.append(m)
            if h.state.state == WRITTEN_OFF and h.loan not in drawn and h.state.outstanding_principal > 0:
                moves.append(plan_draw(cur, h.state.outstanding_principal, today, h.loan))
        out = []
        for m in moves:
            state = await self._append(m, state, out)
        follow = plan_follow(state, required, today, release=self.release)
        if follow is not None:
            await self._append(follow, state, out)
        return out

    async def _append(self, m: Any, state: ReserveState, out: list[dict]) -> ReserveState:
        body, after = body_of(m, state)
        await self.docs.append(ENTRY_KIND, body)
        out.append(body)
        self.ctx.count(f"reserve.{m.kind}")
        return after

    async def upkeep(self) -> None:
        """The task: reconcile every ``UPKEEP_S`` of the node's clock."""
        while True:
            await self.reconcile()
            await self.ctx.clock.sleep(UPKEEP_S)

    # -- the view ----------------------------------------------------------------------------

    def show(self) -> dict:
        today = self.loans.today()
        required = self.required(today)
        out = {}
        for cur in sorted(set(self.currencies()) | set(required)):
            state = replay(self.bodies(cur), cur)
            need = required[cur].total if cur in required else 0
            v = state.view(need)
            out[cur] = {
                "balance": state.balance, "required": need, "coverage_bp": v.coverage_bp,
                "shortfall": v.shortfall, "set_aside": state.set_aside, "topped_up": state.topped_up,
                "released": state.released, "drawn": state.drawn, "uncovered": state.uncovered,
                "balance_text": format_amount(state.balance, cur), "required_text": format_amount(need, cur),
                "shortfall_text": format_amount(v.shortfall, cur),
                "by_category": required[cur].to_json()["by_category"] if cur in required else {},
            }
        return {"as_of": today.isoformat(), "share_bp": self.share_bp, "release": self.release,
                "provisioning": self.params.to_json(), "reserves": out}
