"""Lending policy: what a node refuses to sign, by named rules, before anything is signed.

Rules of this file (docs/policy.md):

1. A ``Policy`` is a named set of parameters; a parameter that is None (or an empty
   table) turns its rule off. Amount limits are whole major units per currency code
   (``{"CNY": 200_000}``), with ``"*"`` for every currency the table does not name.
   ``PRESETS`` holds the policies a user can list, inspect and pick; ``with_overrides``
   changes a preset's scalar parameters (the LPR, the APR cap, the minimum grade, the
   maximum term) and keeps its name.
2. Two checks, each running the rules of ``RULES`` of its scope, in the table's order,
   and returning a ``Refusal`` that lists every rule broken (its ``code`` is the first
   one's), or None:

   - ``check_terms(policy, terms)``: the offer's, request's or contract's own terms
     (``LoanTerms``) alone: run by the author at ``offer create`` and ``request create``,
     by the proposer at ``loan propose``, by the acceptor before it countersigns.
   - ``check_borrower(policy, terms, borrower, exposure)``: facts about the borrower
     (``BorrowerFacts``, from its credit profile) and about the lender's own book
     (``LenderExposure``): run by the node that lends, when it has the facts.

3. The rules (``RULES``, the table the checks execute):

   ===================  ========  =============================================================
   code                 scope     refuses
   ===================  ========  =============================================================
   ``bad_terms``        terms     terms no schedule can be made of (then no other rule runs)
   ``rate_cap``         terms     an APR (apr.py, fees included) above ``apr_cap_bp``, or above
                                  ``lpr_multiple`` x ``lpr_bp`` (the lower cap binds)
   ``max_principal``    terms     a principal above ``max_principal`` in its currency
   ``max_term``         terms     a term longer than ``max_term_months`` (a month is 365/12 days)
   ``forked``           borrower  a borrower of whom a fork proof is held (``refuse_forked``)
   ``defaulted``        borrower  a borrower with a loan defaulted or written off
                                  (``refuse_defaulted``)
   ``past_due``         borrower  a borrower ``max_days_past_due`` or more days past due on
                                  any loan
   ``min_grade``        borrower  a grade below ``min_grade`` (A best, G worst); a borrower
                                  with no usable history (grade ``none``) only if
                                  ``allow_ungraded`` is false
   ``borrow_cap``       borrower  a borrower who would owe more than ``borrow_cap`` in the
                                  currency across all lenders
   ``lender_cap``       borrower  a borrower who would owe this lender more than ``lender_cap``
   ``new_identity``     borrower  above a share of ``max_principal``, ``borrow_cap`` and
                                  ``lender_cap`` while its verified history is young
                                  (``new_identity_steps``: ``(days, percent)``, Bisq's
                                  account-age limits: 25 % before 30 days, 50 % before 60)
   ``exposure_borrower``  borrower  the lender's book would hold more than
                                  ``exposure_per_borrower`` owed by this borrower
   ``exposure_grade``   borrower  ... more than ``exposure_per_grade[grade]`` in this grade
   ``exposure_total``   borrower  ... more than ``exposure_total`` in all
   ===================  ========  =============================================================

   "Would owe" is what is owed now plus the principal (for an offer with a range, its
   maximum). A message names the rule and the numbers:
   ``rate_cap: APR 1449.12% is above the cap of 36.00%``.
4. Everything here is pure and total: any ``LoanTerms``, ``BorrowerFacts`` and
   ``LenderExposure`` give an answer; a ``Policy`` whose parameters are out of range
   raises ``PolicyError`` (``bad_policy``) when it is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from ..errors import ProtocolError
from .apr import apr_bp
from .money import CURRENCIES, MAX_AMOUNT, MAX_RATE_BP, MoneyError, format_amount, format_rate, parse_term, term_months

GRADES = ("A", "B", "C", "D", "E", "F", "G")
"""Credit grades, best first; ``NO_GRADE`` is a borrower with no usable history."""
NO_GRADE = "none"
ANY_CURRENCY = "*"
MAX_NAME = 32  # characters of a policy's name (the contract's ``policy`` field)
NAME_PATTERN = r"[a-z0-9][a-z0-9.-]{0,31}"  # = contract.POLICY_PATTERN
MAX_STEPS = 8
MAX_TERM_MONTHS = 9999 * 12


class PolicyError(ProtocolError):
    """A policy whose parameters are out of range, or an unknown preset."""

    code = "bad_policy"


# -- the inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoanTerms:
    """What a policy checks of an offer, request or contract: ``min_amount`` to
    ``max_amount`` minor units (equal for a contract), the schedule's inputs and the fees
    the contract fixes (p2plend/1 fixes none today: apr.py, rule 3)."""

    currency: str
    min_amount: int
    max_amount: int
    rate_bp: int
    term: str
    schedule: str
    period_days: int | None = None
    upfront_fee: int = 0
    fee_per_installment: int = 0


def terms_of_offer(t: Any) -> LoanTerms:
    """The ``LoanTerms`` of an offer's or request's terms (``contract.Terms``, or anything
    with its attribute names)."""
    return LoanTerms(t.currency, t.min_amount, t.max_amount, t.rate_bp, t.term, t.schedule,
                     getattr(t, "period_days", None))


def terms_of_contract(doc: Mapping[str, Any]) -> LoanTerms:
    """The ``LoanTerms`` of a (checked) contract document."""
    return LoanTerms(doc["currency"], doc["principal"], doc["principal"], doc["rate_bp"], doc["term"],
                     doc["schedule"], doc.get("period_days"))


@dataclass(frozen=True)
class BorrowerFacts:
    """What the lender knows of the borrower from the chains it holds (its credit
    profile): amounts in minor units per currency code."""

    grade: str = NO_GRADE
    owed: Mapping[str, int] = field(default_factory=dict)  # to every lender
    owed_to_lender: Mapping[str, int] = field(default_factory=dict)  # to the lender checking
    max_days_past_due: int = 0
    defaulted: int = 0  # loans defaulted or written off
    verified_age_days: int = 0
    forked: bool = False


@dataclass(frozen=True)
class LenderExposure:
    """The lender's own book, outstanding principal in minor units per currency code:
    owed by the borrower in question, by grade (of the borrowers as graded now) and in
    total."""

    to_borrower: Mapping[str, int] = field(default_factory=dict)
    by_grade: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    total: Mapping[str, int] = field(default_factory=dict)


# -- policies --------------------------------------------------------------------------------

Limits = Mapping[str, int]  # currency code or "*" -> whole major units


@dataclass(frozen=True)
class Policy:
    """One policy (rule 1); every limit None or empty is off."""

    name: str
    description: str = ""
    apr_cap_bp: int | None = None
    lpr_bp: int | None = None
    lpr_multiple: int = 4
    max_principal: Limits = field(default_factory=dict)
    max_term_months: int | None = None
    refuse_forked: bool = False
    refuse_defaulted: bool = False
    max_days_past_due: int | None = None
    min_grade: str | None = None
    allow_ungraded: bool = True
    borrow_cap: Limits = field(default_factory=dict)
    lender_cap: Limits = field(default_factory=dict)
    new_identity_steps: tuple[tuple[int, int], ...] = ()
    exposure_per_borrower: Limits = field(default_factory=dict)
    exposure_per_grade: Mapping[str, Limits] = field(default_factory=dict)
    exposure_total: Limits = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    def rate_cap_bp(self) -> int | None:
        """The cap that binds: the lower of ``apr_cap_bp`` and ``lpr_multiple * lpr_bp``."""
        caps = [c for c in (self.apr_cap_bp, None if self.lpr_bp is None else self.lpr_multiple * self.lpr_bp)
                if c is not None]
        return min(caps) if caps else None


def _validate(p: Policy) -> None:
    def bad(why: str) -> PolicyError:
        return PolicyError(f"policy {p.name!r}: {why}")

    if type(p.name) is not str or not re.fullmatch(NAME_PATTERN, p.name):
        raise bad(f"a name is 1 to {MAX_NAME} of a-z, 0-9, '.' and '-', starting with a letter or digit")
    for name in ("apr_cap_bp", "lpr_bp"):
        v = getattr(p, name)
        if v is not None and (type(v) is not int or not 0 <= v <= MAX_RATE_BP):
            raise bad(f"{name} {v!r} is not 0 to {MAX_RATE_BP} bp")
    if type(p.lpr_multiple) is not int or not 1 <= p.lpr_multiple <= 100:
        raise bad("lpr_multiple is 1 to 100")
    for name in ("max_term_months", "max_days_past_due"):
        v = getattr(p, name)
        if v is not None and (type(v) is not int or not 1 <= v <= MAX_TERM_MONTHS):
            raise bad(f"{name} {v!r} is not 1 to {MAX_TERM_MONTHS}")
    if p.min_grade is not None and p.min_grade not in GRADES:
        raise bad(f"min_grade {p.min_grade!r} is not one of {', '.join(GRADES)}")
    tables = {"max_principal": p.max_principal, "borrow_cap": p.borrow_cap, "lender_cap": p.lender_cap,
              "exposure_per_borrower": p.exposure_per_borrower, "exposure_total": p.exposure_total}
    tables.update({f"exposure_per_grade[{g}]": t for g, t in p.exposure_per_grade.items()})
    if not set(p.exposure_per_grade) <= set(GRADES) | {NO_GRADE}:
        raise bad("exposure_per_grade is keyed by grade")
    for name, table in tables.items():
        for cur, v in table.items():
            if cur != ANY_CURRENCY and cur not in CURRENCIES:
                raise bad(f"{name}: unknown currency {cur!r}")
            if type(v) is not int or not 0 <= v * 10 ** CURRENCIES.get(cur, 8) <= MAX_AMOUNT:
                raise bad(f"{name}[{cur}] {v!r} is not 0 to {MAX_AMOUNT} minor units")
    steps = p.new_identity_steps
    if len(steps) > MAX_STEPS or any(type(d) is not int or type(pc) is not int or not 1 <= d <= 36500
                                     or not 0 <= pc <= 100 for d, pc in steps):
        raise bad(f"new_identity_steps are at most {MAX_STEPS} (days 1 to 36500, percent 0 to 100)")
    if [d for d, _ in steps] != sorted({d for d, _ in steps}) or [pc for _, pc in steps] != sorted(pc for _, pc in steps):
        raise bad("new_identity_steps grow: days strictly, percents never fall")


def limit_minor(table: Limits, currency: str) -> int | None:
    """The limit ``table`` sets for ``currency`` in minor units, or None (no limit)."""
    major = table.get(currency, table.get(ANY_CURRENCY))
    if major is None or currency not in CURRENCIES:
        return None
    return major * 10 ** CURRENCIES[currency]


def with_overrides(policy: Policy, *, lpr_bp: int | None = None, apr_cap_bp: int | None = None,
                   min_grade: str | None = None, max_term_months: int | None = None) -> Policy:
    """``policy`` with the scalar parameters given (not None) changed; ``PolicyError`` if
    one is out of range."""
    changes = {k: v for k, v in (("lpr_bp", lpr_bp), ("apr_cap_bp", apr_cap_bp), ("min_grade", min_grade),
                                 ("max_term_months", max_term_months)) if v is not None}
    return replace(policy, **changes)


# -- the presets -------------------------------------------------------------------------------

BISQ_STEPS = ((30, 25), (60, 50))
"""Bisq's account-age trade limits: 25 % of the limit before an account is 30 days old,
50 % before 60 days, all of it after."""

LPR_2024_BP = 310
"""China's one-year Loan Prime Rate, 3.10 %, as published by the National Interbank
Funding Center from 21 October 2024: the default of ``cn-2016``'s ``lpr_bp``. It changes
monthly at most (it was cut to 3.00 % on 20 May 2025): set the current one with
``policy set cn-2016 --lpr``; the cap is four times the LPR in force when the contract
is made."""

DEFAULT = Policy(
    "default",
    "refuses APRs above 36%, loans above 1,000,000 (major units) and terms above 10 years; borrowers who are "
    "90+ days past due, defaulted or forked, who would owe above 2,000,000 in all or 1,000,000 to this lender; "
    "new identities get 25% of the limits before 30 days of verified history, 50% before 60",
    apr_cap_bp=3600,  # the US Military Lending Act's 36 % (fees included), the common consumer benchmark
    max_principal={ANY_CURRENCY: 1_000_000},
    max_term_months=120,
    refuse_forked=True,
    refuse_defaulted=True,
    max_days_past_due=90,
    borrow_cap={ANY_CURRENCY: 2_000_000},
    lender_cap={ANY_CURRENCY: 1_000_000},
    new_identity_steps=BISQ_STEPS,
)

PERMISSIVE = Policy("permissive", "refuses nothing but terms no schedule can be made of: for tests")

CN_2016 = Policy(
    "cn-2016",
    "China's 2016 interim measures for online lending intermediaries (art. 17: a natural person owes at most "
    "200,000 CNY on one platform, read as per lender, and 1,000,000 CNY across platforms, read as across the "
    "network) and the 2020 Supreme People's Court cap on lending rates of 4 x the one-year LPR (a parameter, "
    "default 3.10%), applied to the APR; forked, defaulted and 90+ days past due borrowers are refused",
    lpr_bp=LPR_2024_BP,
    lpr_multiple=4,
    max_principal={"CNY": 200_000},
    refuse_forked=True,
    refuse_defaulted=True,
    max_days_past_due=90,
    borrow_cap={"CNY": 1_000_000},
    lender_cap={"CNY": 200_000},
    new_identity_steps=BISQ_STEPS,
)

PRESETS: dict[str, Policy] = {p.name: p for p in (DEFAULT, PERMISSIVE, CN_2016)}
DEFAULT_PRESET = "default"


def preset(name: str) -> Policy:
    """The preset named ``name``; ``PolicyError`` (``unknown_policy``) listing them."""
    p = PRESETS.get(name) if type(name) is str else None
    if p is None:
        raise PolicyError(f"no policy {name!r}: one of {', '.join(PRESETS)}", code="unknown_policy")
    return p


# -- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breach:
    """One rule broken: its code and a message with the numbers."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


@dataclass(frozen=True)
class Refusal:
    """Every rule a check found broken, in table order (rule 2)."""

    policy: str
    breaches: tuple[Breach, ...]

    @property
    def code(self) -> str:
        return self.breaches[0].rule

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(b.rule for b in self.breaches)

    @property
    def message(self) -> str:
        return "; ".join(str(b) for b in self.breaches) + f" [policy {self.policy}]"


@dataclass(frozen=True)
class _Case:
    """What one check is about: the terms, and for borrower rules the facts."""

    policy: Policy
    terms: LoanTerms
    borrower: BorrowerFacts | None = None
    exposure: LenderExposure | None = None


def _money(minor: int, currency: str) -> str:
    try:
        return f"{format_amount(minor, currency)} {currency}"
    except MoneyError:
        return f"{minor} minor units of {currency}"


def _pct(bp: int) -> str:
    whole, frac = divmod(bp, 100)
    return f"{whole}.{frac:02d}%"


def _rate_cap(c: _Case) -> str | None:
    cap = c.policy.rate_cap_bp()
    if cap is None:
        return None
    t = c.terms
    worst = max(apr_bp(amount, t.rate_bp, parse_term(t.term), t.schedule, t.period_days, upfront_fee=t.upfront_fee,
                       fee_per_installment=t.fee_per_installment)
                for amount in {t.min_amount, t.max_amount})
    if worst <= cap:
        return None
    how = ""
    if c.policy.lpr_bp is not None and cap == c.policy.lpr_multiple * c.policy.lpr_bp:
        how = f" ({c.policy.lpr_multiple} x LPR {_pct(c.policy.lpr_bp)})"
    return f"APR {_pct(worst)} is above the cap of {_pct(cap)}{how} (nominal rate {format_rate(t.rate_bp)})"


def _max_principal(c: _Case) -> str | None:
    cap = limit_minor(c.policy.max_principal, c.terms.currency)
    if cap is None or c.terms.max_amount <= cap:
        return None
    return f"principal {_money(c.terms.max_amount, c.terms.currency)} is above the limit of " \
           f"{_money(cap, c.terms.currency)} per loan"


def _max_term(c: _Case) -> str | None:
    cap = c.policy.max_term_months
    if cap is None or term_months(c.terms.term) <= cap:
        return None
    return f"term {c.terms.term} is longer than the maximum of {cap}m"


def _forked(c: _Case) -> str | None:
    if c.policy.refuse_forked and c.borrower.forked:
        return "the borrower has signed a fork of its chain (a fork proof is held)"
    return None


def _defaulted(c: _Case) -> str | None:
    if c.policy.refuse_defaulted and c.borrower.defaulted > 0:
        return f"the borrower has {c.borrower.defaulted} loan(s) defaulted or written off"
    return None


def _past_due(c: _Case) -> str | None:
    limit = c.policy.max_days_past_due
    if limit is None or c.borrower.max_days_past_due < limit:
        return None
    return f"the borrower is {c.borrower.max_days_past_due} days past due; the policy refuses {limit} days or more"


def _min_grade(c: _Case) -> str | None:
    want, grade = c.policy.min_grade, c.borrower.grade
    if want is None:
        return None
    if grade == NO_GRADE:
        return None if c.policy.allow_ungraded else f"the borrower has no grade (no usable history); minimum {want}"
    if grade in GRADES and GRADES.index(grade) <= GRADES.index(want):
        return None
    return f"grade {grade} is below the minimum of {want}"


def _would_owe(owed: Mapping[str, int], terms: LoanTerms) -> int:
    return max(0, owed.get(terms.currency, 0)) + terms.max_amount


def _cap_message(what: str, owed: Mapping[str, int], terms: LoanTerms, cap: int, of: str = "") -> str:
    now, cur = owed.get(terms.currency, 0), terms.currency
    return (f"{what} {_money(now, cur)}; with {_money(terms.max_amount, cur)} more it would owe "
            f"{_money(now + terms.max_amount, cur)}, above the cap of {_money(cap, cur)}{of}")


def _borrow_cap(c: _Case) -> str | None:
    cap = limit_minor(c.policy.borrow_cap, c.terms.currency)
    if cap is None or _would_owe(c.borrower.owed, c.terms) <= cap:
        return None
    return _cap_message("the borrower owes all lenders", c.borrower.owed, c.terms, cap)


def _lender_cap(c: _Case) -> str | None:
    cap = limit_minor(c.policy.lender_cap, c.terms.currency)
    if cap is None or _would_owe(c.borrower.owed_to_lender, c.terms) <= cap:
        return None
    return _cap_message("the borrower owes this lender", c.borrower.owed_to_lender, c.terms, cap, " per lender")


def new_identity_percent(policy: Policy, verified_age_days: int) -> int:
    """The share of its limits (percent) a borrower of that verified age gets: the first
    step whose days it has not reached, else 100."""
    for days, pct in policy.new_identity_steps:
        if verified_age_days < days:
            return pct
    return 100


def _new_identity(c: _Case) -> str | None:
    pct = new_identity_percent(c.policy, c.borrower.verified_age_days)
    if pct == 100:
        return None
    t, cur = c.terms, c.terms.currency
    for name, table, owed in (("per loan", c.policy.max_principal, None),
                              ("across all lenders", c.policy.borrow_cap, c.borrower.owed),
                              ("per lender", c.policy.lender_cap, c.borrower.owed_to_lender)):
        cap = limit_minor(table, cur)
        if cap is None:
            continue
        allowed = cap * pct // 100
        amount = t.max_amount if owed is None else _would_owe(owed, t)
        if amount > allowed:
            return (f"{_money(amount, cur)} is above {pct}% of the {name} limit of {_money(cap, cur)} "
                    f"({_money(allowed, cur)}) for a verified history of {c.borrower.verified_age_days} days")
    return None


def _exposure(what: str, table: Limits | None, held: Mapping[str, int], c: _Case) -> str | None:
    cap = None if table is None else limit_minor(table, c.terms.currency)
    if cap is None or _would_owe(held, c.terms) <= cap:
        return None
    cur = c.terms.currency
    now = held.get(cur, 0)
    return (f"this lender's book holds {_money(now, cur)} {what}; with {_money(c.terms.max_amount, cur)} more "
            f"it would hold {_money(now + c.terms.max_amount, cur)}, above the cap of {_money(cap, cur)}")


def _exposure_borrower(c: _Case) -> str | None:
    return _exposure("owed by this borrower", c.policy.exposure_per_borrower, c.exposure.to_borrower, c)


def _exposure_grade(c: _Case) -> str | None:
    g = c.borrower.grade
    return _exposure(f"in grade {g}", c.policy.exposure_per_grade.get(g), c.exposure.by_grade.get(g, {}), c)


def _exposure_total(c: _Case) -> str | None:
    return _exposure("in all", c.policy.exposure_total, c.exposure.total, c)


TERMS, BORROWER = "terms", "borrower"


@dataclass(frozen=True)
class Rule:
    code: str
    scope: str
    check: Callable[[_Case], str | None]


RULES: tuple[Rule, ...] = (
    Rule("rate_cap", TERMS, _rate_cap),
    Rule("max_principal", TERMS, _max_principal),
    Rule("max_term", TERMS, _max_term),
    Rule("forked", BORROWER, _forked),
    Rule("defaulted", BORROWER, _defaulted),
    Rule("past_due", BORROWER, _past_due),
    Rule("min_grade", BORROWER, _min_grade),
    Rule("borrow_cap", BORROWER, _borrow_cap),
    Rule("lender_cap", BORROWER, _lender_cap),
    Rule("new_identity", BORROWER, _new_identity),
    Rule("exposure_borrower", BORROWER, _exposure_borrower),
    Rule("exposure_grade", BORROWER, _exposure_grade),
    Rule("exposure_total", BORROWER, _exposure_total),
)
"""Rule 3's table, in the order the checks run it (``bad_terms`` runs first, outside it)."""

RULE_CODES = ("bad_terms",) + tuple(r.code for r in RULES)


def _well_formed(t: LoanTerms) -> str | None:
    """Why no schedule can be made of ``t``, or None."""
    if not isinstance(t, LoanTerms):
        return "not loan terms"
    if type(t.min_amount) is not int or type(t.max_amount) is not int or not 1 <= t.min_amount <= t.max_amount:
        return f"amounts {t.min_amount!r}..{t.max_amount!r} are not 1 <= min <= max"
    try:
        if t.currency not in CURRENCIES:
            return f"unknown currency {t.currency!r}"
        term = parse_term(t.term)
        for amount in {t.min_amount, t.max_amount}:
            apr_bp(amount, t.rate_bp, term, t.schedule, t.period_days, upfront_fee=t.upfront_fee,
                   fee_per_installment=t.fee_per_installment)
    except ProtocolError as e:
        return e.message
    return None


def _run(case: _Case, scope: str) -> Refusal | None:
    breaches = []
    for rule in RULES:
        if rule.scope == scope:
            why = rule.check(case)
            if why is not None:
                breaches.append(Breach(rule.code, why))
    return Refusal(case.policy.name, tuple(breaches)) if breaches else None


def check_terms(policy: Policy, terms: LoanTerms) -> Refusal | None:
    """Rule 2: the terms rules of ``policy`` on ``terms``."""
    why = _well_formed(terms)
    if why is not None:
        return Refusal(policy.name, (Breach("bad_terms", why),))
    return _run(_Case(policy, terms), TERMS)


def check_borrower(policy: Policy, terms: LoanTerms, borrower: BorrowerFacts,
                   exposure: LenderExposure) -> Refusal | None:
    """Rule 2: the borrower rules of ``policy`` for lending on ``terms`` to ``borrower``
    with the lender's book as ``exposure``."""
    why = _well_formed(terms)
    if why is not None:
        return Refusal(policy.name, (Breach("bad_terms", why),))
    return _run(_Case(policy, terms, borrower, exposure), BORROWER)


# -- views -------------------------------------------------------------------------------------


def policy_json(p: Policy) -> dict:
    """``policy.show``'s view of a policy: every parameter, rates also as text."""
    cap = p.rate_cap_bp()
    return {
        "name": p.name, "description": p.description,
        "rate_cap_bp": cap, "rate_cap_text": None if cap is None else _pct(cap),
        "apr_cap_bp": p.apr_cap_bp, "lpr_bp": p.lpr_bp, "lpr_text": None if p.lpr_bp is None else _pct(p.lpr_bp),
        "lpr_multiple": p.lpr_multiple,
        "max_principal": dict(p.max_principal), "max_term_months": p.max_term_months,
        "refuse_forked": p.refuse_forked, "refuse_defaulted": p.refuse_defaulted,
        "max_days_past_due": p.max_days_past_due, "min_grade": p.min_grade, "allow_ungraded": p.allow_ungraded,
        "borrow_cap": dict(p.borrow_cap), "lender_cap": dict(p.lender_cap),
        "new_identity_steps": [list(s) for s in p.new_identity_steps],
        "exposure_per_borrower": dict(p.exposure_per_borrower),
        "exposure_per_grade": {g: dict(t) for g, t in p.exposure_per_grade.items()},
        "exposure_total": dict(p.exposure_total),
    }
