"""Lending's settings: the ``[loans]`` section of config.toml, the ``[policy]`` section it
also owns, and the ``p2pnode start`` flags that override them (declared in
p2pnode/lending/__init__.py).

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
)
