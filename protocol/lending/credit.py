"""Credit: what a viewer makes of a borrower's history, from the loan documents it holds.

``profile(key, loans, ...)`` is a pure function of the borrower's loans (each its contract,
its ``loanstate.LoanState`` and, for how late it ever was, its ``loanstate.Move`` run),
the viewer's trust masses (trust.py), the day this viewer first stored an entry of each
author, fork proofs, ``today`` and a ``CreditParams``. No I/O and no clock. The model, its
parameters and its limits are written down in docs/credit.md.

Rules of this file:

1. The loans. Only loans whose contract names ``key`` as borrower count, at most
   ``max_loans`` of them (by loan id), and only once disbursed (not
   ``awaiting_disbursement``). One id is one loan.
2. Whose word. Every loan is weighted by ``lender_weights[lender]``, per mille (0 if
   absent): trust.py, rule 5, what the viewer's trust passes from that lender to the
   borrower through the loans it repaid (1000 for the viewer's own loans). ``key_mass``
   is the key's own mass in the viewer's walk, shown as ``trust_pm``. What *helps* the borrower (repaid loans, the age they prove,
   counterparties) counts only in proportion to that weight: a ring of keys that lend to
   each other earns nothing. What *hurts* it (lateness, defaults, writeoffs, disputes,
   debt) counts in full whoever the lender: the borrower signed the contract and the
   disbursement receipt, so it chose that lender and took the money.
3. Time. Entry ``ts`` and document dates are chosen by their signers, so a date counts
   as evidence of age only when the viewer can anchor it: ``verified_start`` is the
   earliest of ``first_seen[key]`` (when this viewer first stored an entry of the
   borrower) and, for every loan whose lender has weight > 0, the contract's ``start``,
   but no earlier than its ``created`` day (an acceptor signs within a week of it:
   ``MAX_PROPOSAL_MS``; this bounds a backdated start on the viewer's own loans, whose
   acceptance its own clock dated) nor, for another lender, than
   ``first_seen[lender]``. ``verified_age_days`` is ``today - verified_start`` (0 if
   neither is known). A key made today that backdates its contracts with keys the
   viewer does not trust is 0 days old; one that backdates with a trusted lender can
   look at most as old as the viewer's own record of that lender.
4. Lateness. A loan's worst days past due is the most its oldest unpaid installment was
   past due at the end of a day, from its moves (the day after an ``overdue`` or
   ``past_grace`` until a ``caught_up``, ``partly_caught_up`` or ``repaid``) and its days
   past due today; a partial catch-up can hide at most ``grace_days`` of a later run.
   A repaid loan is *on time* if its worst is 0, *late* otherwise.
5. Points (``factors``, each with what it contributed): repaid on time, ``repaid_points``
   each at full weight (half if repaid late), at most ``max_repaid_points``; verified
   age, ``age_points`` per 30 days, at most ``max_age_points``; each trusted lender
   (weight > 0) after the first, ``lender_points``, at most ``max_lender_points``; minus,
   per loan ever late, ``late_penalty`` of its bucket by worst days past due; minus
   ``past_due_penalty`` if any loan is past due today; minus ``default_penalty`` per
   default, ``writeoff_penalty`` per writeoff, ``dispute_penalty`` per disputed loan.
   Weighted points are summed in per mille and rounded down once.
6. Grade. ``G`` if a fork proof of the key is held, if a loan is ``g_days_past_due`` or
   more past due today, or a default is not repaid. Else ``none`` if there is no usable
   history (trusted weight below ``min_trusted_pm`` over all loans, and nothing that
   hurts: thin trust spread over many keys makes none of them graded). Else the
   first of ``grades`` (A to F) whose threshold the score reaches, ``G`` below all.
7. Limits. ``min_rate_bp`` is ``min_rate_bp[grade]``. ``max_amount`` is empty for G
   (nothing); ``newcomer_amount[cur]`` for ``none``; for A to F the larger of the
   newcomer limit times ``1 + verified months`` (at most ``newcomer_growth``; the anchor
   is Bisq's account-age limits: age counts once trust does, since a key's age alone is
   free to make), and ``amount_factor_pm[grade]`` per mille of the largest principal
   repaid in ``cur``, weighted by its lender. The limit does not subtract what is owed:
   ``owed`` is given for policy to do that.
8. Debt. ``owed[cur]`` is the outstanding principal of every loan not repaid (defaulted
   and written off too: the debt is still there), with every lender, not only the
   viewer; ``owed_by_lender`` splits it by the holder of the claim today.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Iterable, Mapping

from .contract import parse_date
from .loanstate import AWAITING, REPAID, LoanState, Move
from .trust import FULL_MASS, MIN_PUSH, SCALE, weight_pm

GRADES = ("A", "B", "C", "D", "E", "F", "G")
NONE = "none"
"""The grade of a key with no usable history."""


def grade_at_least(grade: str, floor: str) -> bool:
    """Whether ``grade`` is ``floor`` or better. ``none`` meets only ``none``: a key with
    no history is not known to be any grade (policy decides whether to lend to it)."""
    if floor == NONE:
        return True
    if grade == NONE:
        return False
    return GRADES.index(grade) <= GRADES.index(floor)


def min_grade_refusal(grade: str, min_grade: str | None) -> str | None:
    """Why a taker graded ``grade`` may not take an offer asking ``min_grade`` of its
    takers (``offer create --min-grade``), or None: the ask is its first letter ("B+" asks
    B or better), and a taker with no usable history (``none``) meets no grade."""
    if not min_grade:
        return None
    floor = min_grade[0]
    if floor not in GRADES:
        return f"min_grade: the offer asks grade {min_grade}, which is not one of {', '.join(GRADES)}"
    if grade_at_least(grade, floor):
        return None
    return f"min_grade: the taker's grade is {grade}; the offer asks {floor} or better [offer]"


@dataclass(frozen=True)
class CreditParams:
    """The mapping from history to grade and limits (rules 5 to 7); every field is a knob."""

    repaid_points: int = 10
    max_repaid_points: int = 50
    age_points: int = 1
    max_age_points: int = 20
    lender_points: int = 5
    max_lender_points: int = 15
    late_penalty: tuple[tuple[int, int], ...] = ((30, 5), (60, 15), (90, 25), (10**9, 40))
    """``(up to days, penalty)``: the first whose days reach a loan's worst days past due."""
    past_due_penalty: int = 10
    default_penalty: int = 40
    writeoff_penalty: int = 20
    dispute_penalty: int = 5
    g_days_past_due: int = 90
    grades: tuple[tuple[str, int], ...] = (("A", 70), ("B", 50), ("C", 35), ("D", 20), ("E", 10), ("F", 0))
    min_rate_bp: Mapping[str, int] = field(default_factory=lambda: {
        "A": 400, "B": 700, "C": 1000, "D": 1400, "E": 1800, "F": 2400, "G": 3600, NONE: 2400})
    amount_factor_pm: Mapping[str, int] = field(default_factory=lambda: {
        "A": 3000, "B": 2000, "C": 1500, "D": 1000, "E": 500, "F": 250, "G": 0})
    newcomer_amount: Mapping[str, int] = field(default_factory=lambda: {
        "EUR": 100_00, "USD": 100_00, "GBP": 100_00, "CHF": 100_00, "CNY": 700_00, "JPY": 15_000,
        "BTC": 100_000})
    newcomer_growth: int = 4
    min_trusted_pm: int = 1000
    """Trusted weight (per mille of one fully trusted loan) a history needs to be usable."""
    full_mass: int = FULL_MASS
    min_push: int = MIN_PUSH
    """The smallest residue of the viewer's trust a walk passes on (trust.py rule 2): how
    far trust, hence standing (what the node replicates and admits to its book), reaches.
    Lower reaches further, more hops from the viewer."""
    max_loans: int = 1_000

    def __post_init__(self) -> None:
        names = [g for g, _ in self.grades]
        assert names == list(GRADES[:len(names)]) and len(names) >= 1, "grades run from A, best first"
        assert all(a[1] > b[1] for a, b in zip(self.grades, self.grades[1:])), "thresholds fall"
        assert all(g in self.min_rate_bp for g in (*GRADES, NONE)), "a minimum rate for every grade"
        assert self.max_loans >= 1 and self.full_mass >= 1 and 1 <= self.min_push <= SCALE


DEFAULT_PARAMS = CreditParams()


@dataclass(frozen=True)
class LoanHistory:
    """One loan as the model reads it: its contract, its state at ``today`` and the run
    of moves that led there (``loanstate.loan_moves``; empty: lateness from today only)."""

    contract: dict
    state: LoanState
    moves: tuple[Move, ...] = ()


@dataclass(frozen=True)
class Factor:
    """One line of ``--explain``: what was counted and the points it contributed."""

    name: str
    value: int
    points: int
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "points": self.points, "note": self.note}


@dataclass(frozen=True)
class Profile:
    """A key's credit in one viewer's eyes at ``as_of`` (rules 1 to 8)."""

    key: bytes
    as_of: date
    grade: str
    score: int
    max_amount: dict[str, int]
    min_rate_bp: int
    owed: dict[str, int]
    owed_by_lender: dict[bytes, dict[str, int]]
    max_days_past_due: int
    """The worst days past due of any loan, ever (rule 4)."""
    days_past_due: int
    """The worst days past due of any loan today."""
    loans: int
    active: int
    repaid: int
    repaid_on_time: int
    paid_late: int
    defaulted: int
    written_off: int
    disputed: int
    counterparties: int
    trusted_counterparties: int
    top_lender_share_pm: int
    """The heaviest trusted lender's share of the trusted weight, per mille (0: none)."""
    trusted_repaid_pm: int
    """Repaid loans weighted by their lenders' trust, per mille (1000: one fully trusted)."""
    trust_pm: int
    """The key's own trust weight in the viewer's eyes (trust.py, rule 3)."""
    forked: bool
    verified_age_days: int
    factors: tuple[Factor, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: keys as hex, dates as ``YYYY-MM-DD``."""
        return {
            "key": self.key.hex(), "as_of": self.as_of.isoformat(), "grade": self.grade, "score": self.score,
            "max_amount": dict(sorted(self.max_amount.items())), "min_rate_bp": self.min_rate_bp,
            "owed": dict(sorted(self.owed.items())),
            "owed_by_lender": {k.hex(): dict(sorted(v.items())) for k, v in sorted(self.owed_by_lender.items())},
            "max_days_past_due": self.max_days_past_due, "days_past_due": self.days_past_due,
            "loans": self.loans, "active": self.active, "repaid": self.repaid, "repaid_on_time": self.repaid_on_time,
            "paid_late": self.paid_late, "defaulted": self.defaulted, "written_off": self.written_off,
            "disputed": self.disputed, "counterparties": self.counterparties,
            "trusted_counterparties": self.trusted_counterparties, "top_lender_share_pm": self.top_lender_share_pm,
            "trusted_repaid_pm": self.trusted_repaid_pm, "trust_pm": self.trust_pm, "forked": self.forked,
            "verified_age_days": self.verified_age_days, "factors": [f.to_json() for f in self.factors],
        }


def worst_days_past_due(moves: Iterable[Move], grace_days: int, today_dpd: int) -> int:
    """Rule 4: the most days past due a loan reached, from its moves and today's."""
    worst = today_dpd
    fell_due: date | None = None  # when the oldest unpaid installment fell due, while known
    for m in moves:
        if m.event == "overdue":
            fell_due = m.day - timedelta(days=1)  # 1 day past due that day
        elif m.event == "past_grace":
            fell_due = m.day - timedelta(days=grace_days + 1)
        elif m.event in ("caught_up", "partly_caught_up", "repaid"):
            if fell_due is not None:
                worst = max(worst, (m.day - fell_due).days - 1)  # at the end of the day before
            fell_due = None
    return worst


def _utc_day(ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ms // 86_400_000)


def _penalty(days: int, table: tuple[tuple[int, int], ...]) -> int:
    return next((p for top, p in table if days <= top), table[-1][1])


def profile(key: bytes, loans: Iterable[LoanHistory], *, viewer: bytes, today: date,
            lender_weights: Mapping[bytes, int],
            first_seen: Mapping[bytes, date], forked: bool = False, key_mass: int = 0,
            params: CreditParams = DEFAULT_PARAMS) -> Profile:
    """``key``'s credit profile in ``viewer``'s eyes at the end of ``today`` (module rules)."""
    p = params
    mine: dict[bytes, LoanHistory] = {}
    for h in loans:
        if h.contract["borrower"] == key and h.state.state != AWAITING:
            mine[h.state.loan] = h
    chosen = [mine[i] for i in sorted(mine)[:p.max_loans]]  # rule 1

    weight = {h.contract["lender"]: 1000 if h.contract["lender"] == viewer
              else min(1000, max(0, lender_weights.get(h.contract["lender"], 0))) for h in chosen}

    owed: dict[str, int] = {}
    owed_by: dict[bytes, dict[str, int]] = {}
    repaid = on_time = late = defaulted = written_off = disputed = active = 0
    worst_ever = worst_now = 0
    repaid_pm = late_penalty = 0
    trusted_by: dict[bytes, int] = {}
    best_repaid: dict[str, int] = {}  # currency -> largest repaid principal x weight (per mille)
    unpaid_default = False
    start: date | None = first_seen.get(key)
    for h in chosen:
        c, st = h.contract, h.state
        lender, cur, w = c["lender"], c["currency"], weight[c["lender"]]
        worst = worst_days_past_due(h.moves, c["grace_days"], st.days_past_due)
        worst_ever = max(worst_ever, worst)
        if st.state == REPAID:
            repaid += 1
            if worst == 0:
                on_time += 1
                repaid_pm += w * p.repaid_points
            else:
                repaid_pm += w * p.repaid_points // 2
            best_repaid[cur] = max(best_repaid.get(cur, 0), c["principal"] * w // 1000)
        else:
            worst_now = max(worst_now, st.days_past_due)
            owed[cur] = owed.get(cur, 0) + st.outstanding_principal
            row = owed_by.setdefault(st.holder, {})
            row[cur] = row.get(cur, 0) + st.outstanding_principal
            if st.defaulted_on is None:
                active += 1
        if worst > 0:
            late += 1
            late_penalty += _penalty(worst, p.late_penalty)
        if st.defaulted_on is not None:
            defaulted += 1
            unpaid_default = unpaid_default or st.state != REPAID
        if st.written_off_on is not None:
            written_off += 1
        if st.disputes:
            disputed += 1
        if w > 0:
            trusted_by[lender] = trusted_by.get(lender, 0) + w
            anchor = max(parse_date(c["start"]), _utc_day(c["created"]))  # rule 3
            if lender != viewer:
                anchor = max(anchor, first_seen.get(lender, today))
            start = anchor if start is None else min(start, anchor)
    age = max(0, (today - start).days) if start is not None else 0

    hurts = late or defaulted or written_off or disputed or worst_now
    usable = sum(trusted_by.values()) >= p.min_trusted_pm or bool(hurts)
    total_trusted = sum(trusted_by.values())
    factors = [
        Factor("repaid", repaid_pm // 1000, min(p.max_repaid_points, repaid_pm // 1000),
               f"{repaid} repaid ({on_time} on time), weighted by their lenders' trust to "
               f"{repaid_pm // p.repaid_points}/1000 loans" if p.repaid_points else f"{repaid} repaid"),
        Factor("verified_age_days", age, min(p.max_age_points, age // 30 * p.age_points) if usable else 0,
               "days since the earliest date this viewer can anchor (first stored, or a trusted lender's contract)"),
        Factor("trusted_lenders", len(trusted_by), min(p.max_lender_points, max(0, len(trusted_by) - 1)
                                                       * p.lender_points),
               f"{len(trusted_by)} of {len(weight)} lenders reached by the viewer's trust"),
        Factor("late", late, -late_penalty, f"loans ever past due; the worst {worst_ever} days"),
        Factor("past_due_now", worst_now, -p.past_due_penalty if worst_now else 0, "days past due today"),
        Factor("defaulted", defaulted, -defaulted * p.default_penalty, "defaults declared by the holder"),
        Factor("written_off", written_off, -written_off * p.writeoff_penalty, "loans written off"),
        Factor("disputed", disputed, -disputed * p.dispute_penalty, "loans with a dispute on record"),
    ]
    score = sum(f.points for f in factors)
    if forked:
        grade, why = "G", "a fork proof of this key is held"
    elif worst_now >= p.g_days_past_due or unpaid_default:
        grade, why = "G", "seriously delinquent or in default"
    elif not usable:
        grade, why = NONE, "no usable history"
    else:
        grade = next((g for g, floor in p.grades if score >= floor), "G")
        why = f"score {score}"
    factors.append(Factor("grade", score, 0, why))

    months = age // 30
    limits: dict[str, int] = {}
    if grade != "G":
        for cur, base in p.newcomer_amount.items():
            limits[cur] = base * (1 if grade == NONE else min(p.newcomer_growth, 1 + months))
        if grade != NONE:
            for cur, best in best_repaid.items():
                limits[cur] = max(limits.get(cur, 0), best * p.amount_factor_pm[grade] // 1000)
    return Profile(
        key=key, as_of=today, grade=grade, score=score, max_amount=limits, min_rate_bp=p.min_rate_bp[grade],
        owed=owed, owed_by_lender=owed_by, max_days_past_due=worst_ever, days_past_due=worst_now,
        loans=len(chosen), active=active, repaid=repaid, repaid_on_time=on_time, paid_late=late,
        defaulted=defaulted, written_off=written_off, disputed=disputed, counterparties=len(weight),
        trusted_counterparties=len(trusted_by),
        top_lender_share_pm=max(trusted_by.values()) * 1000 // total_trusted if total_trusted else 0,
        trusted_repaid_pm=repaid_pm // p.repaid_points if p.repaid_points else 0,
        trust_pm=1000 if key == viewer else weight_pm(key_mass, p.full_mass), forked=forked,
        verified_age_days=age, factors=tuple(factors),
    )


def repaid_pair(history: LoanHistory) -> tuple[bytes, bytes] | None:
    """``(lender, borrower)`` of a loan that was really repaid (an edge of trust.py's
    graph), else None. A loan repaid after a default still counts: it was repaid."""
    if history.state.state == REPAID and history.state.disbursed_on is not None:
        return history.contract["lender"], history.contract["borrower"]
    return None
