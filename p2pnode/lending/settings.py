"""Lending's settings: the ``[loans]`` section of config.toml, the ``[policy]`` and
``[credit]`` sections it also owns, and the ``p2pnode start`` flags that override them
(declared in p2pnode/lending/__init__.py).

``[credit]`` holds the mapping from a credit profile to a grade and its limits
(protocol/lending/credit.py ``CreditParams``, docs/credit.md): the score each grade needs,
the lowest rate recommended per grade, and the amount per grade as a share of the largest
loan repaid. Each is text of ``GRADE=VALUE`` pairs; ``credit_params_of`` reads them.

``[policy]`` names the policy in force (``preset``: one of ``protocol.lending.policy.PRESETS``)
and overrides some of its scalar parameters; an empty override keeps the preset's value.
``[loans] max_rate`` is retired: ``[policy] apr_cap`` caps the APR (fees included) instead
of the nominal rate.
"""

from __future__ import annotations

from typing import Any, Mapping

from protocol.errors import ProtocolError
from protocol.lending.money import MoneyError, parse_rate, parse_term
from protocol.lending.policy import DEFAULT_PRESET, GRADES, MAX_TERM_MONTHS, Policy, preset, with_overrides

from p2pnode.extension import Setting

POLICY = "policy"
CREDIT = "credit"
RESERVE = "reserve"
AUTOINVEST = "autoinvest"
OVERRIDES = ("lpr", "apr_cap", "min_grade", "max_term")


def _rate(text: str) -> int | None:
    if not text:
        return None
    try:
        return parse_rate(text)
    except MoneyError as e:
        raise ValueError(e.message) from None


def _preset(name: str) -> None:
    try:
        preset(name)
    except ProtocolError as e:
        raise ValueError(e.message) from None


def _grade(text: str) -> None:
    if text and text not in GRADES:
        raise ValueError(f"{text!r} is not a grade ({', '.join(GRADES)})")


def _months(text: str) -> int | None:
    """A ``max_term`` setting (``"120m"``, in months) in months; ``ValueError``."""
    if not text:
        return None
    try:
        count, unit = parse_term(text)
    except MoneyError as e:
        raise ValueError(e.message) from None
    if unit != "m" or count > MAX_TERM_MONTHS:
        raise ValueError(f"max_term {text!r} is a number of months, e.g. 120m")
    return count


def _pairs(text: str, what: str, keys: tuple[str, ...], word: str = "GRADE") -> dict[str, str]:
    """``"A=70 B=50"`` (spaces or commas between pairs) as ``{"A": "70", "B": "50"}``;
    ``ValueError`` naming ``what`` for a key not in ``keys``, one twice, or no ``=``."""
    out: dict[str, str] = {}
    for part in text.replace(",", " ").split()[:32]:
        key, sep, value = part.partition("=")
        if not sep or key not in keys or key in out or not value:
            raise ValueError(f"{what}: {part!r} is not {word}=VALUE with {word} one of {', '.join(keys)}, each once")
        out[key] = value
    return out


def _whole(value: str, what: str, hi: int) -> int:
    if not value.isdigit() or int(value) > hi:
        raise ValueError(f"{what}: {value!r} is not a whole number 0 to {hi}")
    return int(value)


def credit_params_of(settings: Mapping[str, Any]) -> Any:
    """The ``CreditParams`` of lending's ``[credit]`` settings (the defaults where a
    setting is empty or absent); ``ValueError`` naming what is wrong."""
    from dataclasses import replace

    from protocol.lending.credit import DEFAULT_PARAMS, GRADES, NONE

    changes: dict[str, Any] = {}
    scores = settings.get("grade_scores") or ""
    if scores:
        pairs = _pairs(scores, "grade_scores", GRADES[:-1])
        if list(pairs) != list(GRADES[:len(pairs)]) or not pairs:
            raise ValueError("grade_scores: grades from A on, best first, without a gap (G is what is below)")
        grades = tuple((g, _whole(v, "grade_scores", 10_000)) for g, v in pairs.items())
        if any(a[1] <= b[1] for a, b in zip(grades, grades[1:])):
            raise ValueError("grade_scores: each grade needs a higher score than the next")
        changes["grades"] = grades
    rates = settings.get("min_rates") or ""
    if rates:
        given = {g: _rate(v) for g, v in _pairs(rates, "min_rates", GRADES + (NONE,)).items()}
        changes["min_rate_bp"] = {**DEFAULT_PARAMS.min_rate_bp, **given}
    floor = settings.get("trust_floor") or ""
    if floor:
        from protocol.lending.trust import SCALE

        from decimal import Decimal, InvalidOperation

        try:
            if not floor.endswith("%") or len(floor) > 16:
                raise InvalidOperation
            ppb = int(Decimal(floor[:-1]) * SCALE / 100)  # (SCALE is all of the viewer's trust)
        except (InvalidOperation, ValueError, OverflowError):
            raise ValueError(f"trust_floor: {floor!r} is not a percentage, e.g. 0.005%") from None
        if not 1 <= ppb <= SCALE // 10:
            raise ValueError(f"trust_floor: {floor!r} is not between 0.0000001% and 10%")
        changes["min_push"] = ppb
    factors = settings.get("amount_factors") or ""
    if factors:
        given_pm: dict[str, int] = {}
        for g, v in _pairs(factors, "amount_factors", GRADES).items():
            if not v.endswith("%"):
                raise ValueError(f"amount_factors: {v!r} is a percentage, e.g. 200%")
            given_pm[g] = _whole(v[:-1], "amount_factors", 100_000) * 10
        changes["amount_factor_pm"] = {**DEFAULT_PARAMS.amount_factor_pm, **given_pm}
    try:
        return replace(DEFAULT_PARAMS, **changes)
    except AssertionError as e:
        raise ValueError(f"[credit]: {e}") from None


def _credit_check(name: str):
    return lambda text: credit_params_of({name: text}) and None


def _default_text() -> tuple[str, str, str]:
    from protocol.lending.credit import DEFAULT_PARAMS

    p = DEFAULT_PARAMS
    scores = " ".join(f"{g}={v}" for g, v in p.grades)
    rates = " ".join(f"{g}={v // 100}%" if v % 100 == 0 else f"{g}={v / 100:g}%" for g, v in p.min_rate_bp.items())
    factors = " ".join(f"{g}={v // 10}%" for g, v in p.amount_factor_pm.items())
    return scores, rates, factors


_SCORES, _RATES, _FACTORS = _default_text()


def share_bp_of(text: str) -> int:
    """The share of interest received set aside (``[reserve] share``, e.g. "10%") in basis
    points; empty: the default, 10%."""
    from protocol.lending.reserve import BP, DEFAULT_SHARE_BP

    if not text:
        return DEFAULT_SHARE_BP
    bp = _rate(text)
    if bp is None or not 0 <= bp <= BP:
        raise ValueError(f"share: {text!r} is not a percentage of 0% to 100%")
    return bp


def provisioning_of(text: str) -> Any:
    """The provisioning ``Params`` of ``[reserve] provisioning`` ("standard=1% substandard=20%
    doubtful=50% loss=100%": the percentage of each of Fineract's categories, whose
    delinquency buckets are fixed); empty or a category left out: the default."""
    from dataclasses import replace as with_

    from protocol.lending.provisioning import DEFAULTS, Params

    if not text:
        return DEFAULTS
    names = tuple(c.name for c in DEFAULTS.categories)
    given = _pairs(text, "provisioning", names, "CATEGORY")
    cats = []
    for c in DEFAULTS.categories:
        if c.name in given:
            bp = _rate(given[c.name]) if given[c.name].endswith("%") else None
            if bp is None or bp > 10_000:
                raise ValueError(f"provisioning: {c.name}={given[c.name]!r} is not a percentage of 0% to 100%")
            c = with_(c, percent_bp=bp)
        cats.append(c)
    try:
        return Params(tuple(cats))
    except ProtocolError as e:
        raise ValueError(f"provisioning: {e.message}") from None


def _amounts(text: str, what: str) -> dict[str, int]:
    """``"EUR=1000.00 USD=500"`` as minor units per currency; ``ValueError`` naming ``what``."""
    from protocol.lending.money import CURRENCIES, parse_amount

    out: dict[str, int] = {}
    for cur, value in _pairs(text, what, tuple(sorted(CURRENCIES)), "CURRENCY").items():
        try:
            out[cur] = parse_amount(value, cur)
        except MoneyError as e:
            raise ValueError(f"{what}: {cur}={value}: {e.message}") from None
    return out


def strategy_of(settings: Mapping[str, Any]) -> Any:
    """The auto-invest ``Strategy`` of ``[autoinvest]``, or None while ``budget`` or
    ``per_loan`` is empty (no strategy: auto-invest cannot be turned on); ``ValueError``
    naming the setting that is wrong."""
    from protocol.lending.autoinvest import Strategy
    from protocol.lending.credit import GRADES, NONE

    budget = _amounts(settings.get("budget") or "", "budget")
    per_loan = _amounts(settings.get("per_loan") or "", "per_loan")
    if not budget or not per_loan:
        return None
    if not set(per_loan) <= set(budget):
        raise ValueError("per_loan: a currency with no budget")
    share = _rate(settings.get("max_share") or "20%")
    if share is None or not 0 < share <= 10_000:
        raise ValueError("max_share: a percentage above 0% and at most 100%")
    lowest = settings.get("lowest_grade") or ""
    if lowest and lowest not in GRADES:
        raise ValueError(f"lowest_grade: {lowest!r} is not a grade ({', '.join(GRADES)})")
    mix = {}
    for g, v in _pairs(settings.get("grade_mix") or "", "grade_mix", GRADES + (NONE,)).items():
        bp = _rate(v) if v.endswith("%") else None
        if bp is None or bp > 10_000:
            raise ValueError(f"grade_mix: {g}={v!r} is not a percentage of 0% to 100%")
        mix[g] = bp
    return Strategy(budget, per_loan, share, lowest, mix, _months(settings.get("longest_term") or ""))


def _strategy_check(name: str):
    return lambda value: strategy_of({"budget": "EUR=1", "per_loan": "EUR=1", name: value}) and None


def policy_of(settings: Mapping[str, Any]) -> Policy:
    """The policy lending's ``settings`` put in force: the preset, with the overrides that
    are not empty; ``ValueError`` naming what is wrong."""
    try:
        return with_overrides(preset(settings.get("preset") or DEFAULT_PRESET),
                              lpr_bp=_rate(settings.get("lpr") or ""),
                              apr_cap_bp=_rate(settings.get("apr_cap") or ""),
                              min_grade=settings.get("min_grade") or None,
                              max_term_months=_months(settings.get("max_term") or ""))
    except ProtocolError as e:
        raise ValueError(e.message) from None


SETTINGS = (
    Setting("review", "bool", False, "Hold incoming loan proposals for you to accept or reject (`loan pending`) "
            "instead of countersigning by policy alone.", flag="--review"),
    Setting("preset", "str", DEFAULT_PRESET, "The lending policy in force: default, permissive (refuses nothing; "
            "for tests) or cn-2016 (`p2pnode policy list`).", flag="--policy", check=_preset, section=POLICY),
    Setting("lpr", "str", "", 'The one-year Loan Prime Rate of a policy capped at a multiple of it (cn-2016), '
            'e.g. "3.10%" (empty: the preset\'s).', check=_rate, section=POLICY),
    Setting("apr_cap", "str", "", 'Refuse an APR (fees included) above this, e.g. "20%" (empty: the preset\'s; '
            'the lower of it and a multiple of the LPR binds).', check=_rate, section=POLICY),
    Setting("min_grade", "str", "", "Refuse borrowers graded below this, A to G (empty: the preset's).",
            check=_grade, section=POLICY),
    Setting("max_term", "str", "", 'Refuse terms longer than this many months, e.g. "120m" (empty: the preset\'s).',
            check=_months, section=POLICY),
    Setting("grade_scores", "str", _SCORES, "The credit score each grade needs, best first; below the last is G "
            "(docs/credit.md).", check=_credit_check("grade_scores"), section=CREDIT),
    Setting("min_rates", "str", _RATES, "The lowest yearly rate recommended to lend at, per grade and for no "
            "grade (none).", check=_credit_check("min_rates"), section=CREDIT),
    Setting("trust_floor", "str", "0.005%", "The smallest share of this node's trust passed on from key to key "
            "over repaid loans: lower reaches further (more keys have standing: their chains are kept and their "
            "offers admitted).", check=_credit_check("trust_floor"), section=CREDIT),
    Setting("amount_factors", "str", _FACTORS, "The largest amount recommended per grade, as a share of the "
            "largest loan the borrower repaid.", check=_credit_check("amount_factors"), section=CREDIT),
    Setting("share", "str", "10%", "The share of the interest received that this node sets aside in its own loss "
            "reserve (recorded in its chain; docs/portfolio.md).", check=share_bp_of, section=RESERVE),
    Setting("release", "bool", False, "Release what the reserve holds above the provisions required (false: what "
            "is set aside stays as a buffer).", section=RESERVE),
    Setting("provisioning", "str", "standard=1% substandard=20% doubtful=50% loss=100%",
            "The provision per Fineract category: standard (0-30 days past due), substandard (31-90), doubtful "
            "(91-180), loss (181+ or defaulted).", check=provisioning_of, section=RESERVE),
    Setting("enabled", "bool", False, "Fund matching requests by itself (`p2pnode autoinvest on|off` sets it).",
            section=AUTOINVEST),
    Setting("budget", "str", "", 'What auto-invest may have lent out in all, per currency, e.g. "EUR=1000.00" '
            "(empty: no strategy).", check=lambda v: _amounts(v, "budget") and None, section=AUTOINVEST),
    Setting("per_loan", "str", "", 'The part it funds of each request, e.g. "EUR=25.00".',
            check=lambda v: _amounts(v, "per_loan") and None, section=AUTOINVEST),
    Setting("max_share", "str", "20%", "The largest share of a currency's budget one borrower may owe.",
            check=_strategy_check("max_share"), section=AUTOINVEST),
    Setting("lowest_grade", "str", "", "The lowest credit grade it funds, A to G (empty: any, and no grade).",
            check=_strategy_check("lowest_grade"), section=AUTOINVEST),
    Setting("grade_mix", "str", "", 'The largest share of the budget per grade, e.g. "A=50% B=30% C=20%" (a grade '
            "it does not name gets nothing; empty: no limit).", check=_strategy_check("grade_mix"), section=AUTOINVEST),
    Setting("longest_term", "str", "", 'The longest term it funds in months, e.g. "24m" (empty: any).',
            check=_strategy_check("longest_term"), section=AUTOINVEST),
)
