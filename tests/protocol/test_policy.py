"""Lending policy (protocol/lending/policy.py): every rule, the presets, and properties."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.apr import apr_bp
from protocol.lending.policy import (
    CN_2016, DEFAULT, GRADES, NO_GRADE, PERMISSIVE, PRESETS, RULE_CODES, RULES, BorrowerFacts, LenderExposure,
    LoanTerms, Policy, PolicyError, check_borrower, check_terms, new_identity_percent, policy_json, preset,
    terms_of_contract, terms_of_offer, with_overrides,
)

OLD = BorrowerFacts(grade="A", verified_age_days=365)  # a borrower no borrower rule of the presets refuses
NONE = LenderExposure()


def cny(major: int, rate_bp: int = 1000, term: str = "12m", schedule: str = "annuity") -> LoanTerms:
    return LoanTerms("CNY", major * 100, major * 100, rate_bp, term, schedule)


def codes(refusal) -> tuple[str, ...]:
    return () if refusal is None else refusal.rules


# -- the issue's case -------------------------------------------------------------------------


def test_default_refuses_the_issue_case_by_several_rules():
    """9,999,999,999 CNY at 1000 % to a borrower 91 days past due (issue 10)."""
    terms = cny(9_999_999_999, rate_bp=100_000)
    r = check_terms(DEFAULT, terms)
    assert r.code == "rate_cap" and r.rules == ("rate_cap", "max_principal")
    assert "rate_cap: APR 144077.41% is above the cap of 36.00%" in r.message
    assert "max_principal: principal 9999999999.00 CNY is above the limit of 1000000.00 CNY" in r.message
    b = check_borrower(DEFAULT, terms, replace(OLD, max_days_past_due=91), NONE)
    assert b.rules[0] == "past_due" and {"borrow_cap", "lender_cap"} <= set(b.rules)
    assert "91 days past due" in b.message


def test_permissive_accepts_the_issue_case():
    terms = cny(9_999_999_999, rate_bp=100_000)
    assert check_terms(PERMISSIVE, terms) is None
    bad = BorrowerFacts(grade="G", owed={"CNY": 10**15}, max_days_past_due=9999, defaulted=5, forked=True)
    assert check_borrower(PERMISSIVE, terms, bad, LenderExposure({"CNY": 10**15}, {}, {"CNY": 10**15})) is None


# -- terms rules ------------------------------------------------------------------------------


def test_rate_cap_is_on_the_apr_not_the_nominal_rate():
    p = Policy("t", apr_cap_bp=1268)
    assert check_terms(p, cny(10_000, rate_bp=1200)) is None  # APR 12.68 %
    r = check_terms(p, cny(10_000, rate_bp=1201))
    assert r.code == "rate_cap" and "APR 12.69% is above the cap of 12.68%" in r.message


def test_rate_cap_with_fees():
    p = Policy("t", apr_cap_bp=1300)
    terms = cny(10_000, rate_bp=1200)
    assert check_terms(p, terms) is None
    assert check_terms(p, replace(terms, upfront_fee=10_000)).code == "rate_cap"


def test_cn_2016_cap_is_four_times_the_lpr():
    assert CN_2016.rate_cap_bp() == 1240
    r = check_terms(CN_2016, cny(100_000, rate_bp=1200))  # APR 12.68 % > 12.40 %
    assert r.code == "rate_cap" and "(4 x LPR 3.10%)" in r.message
    assert check_terms(CN_2016, cny(100_000, rate_bp=1100)) is None
    assert check_terms(with_overrides(CN_2016, lpr_bp=350), cny(100_000, rate_bp=1200)) is None  # cap 14 %


def test_the_lower_cap_binds():
    p = Policy("t", apr_cap_bp=1000, lpr_bp=310)
    assert p.rate_cap_bp() == 1000
    assert Policy("t", apr_cap_bp=2000, lpr_bp=310).rate_cap_bp() == 1240


def test_max_principal_per_currency_and_wildcard():
    p = Policy("t", max_principal={"CNY": 200_000, "*": 1_000})
    assert check_terms(p, cny(200_000)) is None
    r = check_terms(p, cny(200_001))
    assert r.code == "max_principal" and "200001.00 CNY is above the limit of 200000.00 CNY" in r.message
    eur = LoanTerms("EUR", 100, 100_001, 500, "12m", "annuity")
    assert check_terms(p, eur).code == "max_principal"  # the range's maximum counts
    jpy = LoanTerms("JPY", 1000, 1000, 500, "12m", "annuity")
    assert check_terms(p, jpy) is None  # "*" in JPY's own major units (exponent 0)
    assert check_terms(Policy("t", max_principal={"CNY": 1}), jpy) is None


def test_max_term_counts_days_and_weeks_in_months():
    p = Policy("t", max_term_months=12)
    assert check_terms(p, cny(100, term="12m")) is None
    assert check_terms(p, cny(100, term="52w")) is None  # 364 days
    assert check_terms(p, cny(100, term="365d", schedule="bullet")) is None
    assert check_terms(p, cny(100, term="366d", schedule="bullet")).code == "max_term"
    r = check_terms(p, cny(100, term="13m"))
    assert r.code == "max_term" and "term 13m is longer than the maximum of 12m" in r.message


@pytest.mark.parametrize("terms", [
    LoanTerms("CNY", 0, 100, 100, "12m", "annuity"),
    LoanTerms("CNY", 200, 100, 100, "12m", "annuity"),
    LoanTerms("XXX", 100, 100, 100, "12m", "annuity"),
    LoanTerms("CNY", 100, 100, 100_001, "12m", "annuity"),
    LoanTerms("CNY", 100, 100, 100, "12y", "annuity"),
    LoanTerms("CNY", 100, 100, 100, "100d", "annuity"),
    LoanTerms("CNY", 100, 100, 100, "12m", "balloon"),
    LoanTerms("CNY", 100, 100, 100, "12m", "annuity", upfront_fee=100),
])
def test_malformed_terms_are_refused_by_every_policy(terms):
    for p in PRESETS.values():
        assert check_terms(p, terms).rules == ("bad_terms",)
        assert check_borrower(p, terms, OLD, NONE).rules == ("bad_terms",)


# -- borrower rules --------------------------------------------------------------------------


def test_forked_defaulted_and_past_due():
    terms = cny(1_000)
    assert codes(check_borrower(DEFAULT, terms, replace(OLD, forked=True), NONE)) == ("forked",)
    r = check_borrower(DEFAULT, terms, replace(OLD, defaulted=2), NONE)
    assert r.rules == ("defaulted",) and "2 loan(s)" in r.message
    assert check_borrower(DEFAULT, terms, replace(OLD, max_days_past_due=89), NONE) is None
    assert codes(check_borrower(DEFAULT, terms, replace(OLD, max_days_past_due=90), NONE)) == ("past_due",)


def test_min_grade():
    p = Policy("t", min_grade="C")
    for g in GRADES:
        r = check_borrower(p, cny(100), replace(OLD, grade=g), NONE)
        assert (r is None) == (g in "ABC")
        if r:
            assert f"grade {g} is below the minimum of C" in r.message
    assert check_borrower(p, cny(100), replace(OLD, grade=NO_GRADE), NONE) is None
    strict = replace(p, allow_ungraded=False)
    assert codes(check_borrower(strict, cny(100), replace(OLD, grade=NO_GRADE), NONE)) == ("min_grade",)


def test_borrow_cap_across_lenders():
    """A borrower who owes the cap elsewhere is refused by a second lender (cn-2016: 1,000,000 CNY)."""
    owes = replace(OLD, owed={"CNY": 900_000_00})
    assert check_borrower(CN_2016, cny(100_000), owes, NONE) is None
    r = check_borrower(CN_2016, cny(100_001), owes, NONE)
    assert r.rules == ("borrow_cap",)
    assert ("the borrower owes all lenders 900000.00 CNY; with 100001.00 CNY more it would owe 1000001.00 CNY, "
            "above the cap of 1000000.00 CNY") in r.message


def test_lender_cap_per_lender():
    owes = replace(OLD, owed={"CNY": 150_000_00}, owed_to_lender={"CNY": 150_000_00})
    assert check_borrower(CN_2016, cny(50_000), owes, NONE) is None
    assert codes(check_borrower(CN_2016, cny(50_001), owes, NONE)) == ("lender_cap",)


def test_new_identity_limits_grow_with_verified_history():
    assert [new_identity_percent(DEFAULT, d) for d in (0, 29, 30, 59, 60, 1000)] == [25, 25, 50, 50, 100, 100]
    terms = cny(250_001)  # above 25 % of 1,000,000
    young = replace(OLD, verified_age_days=10)
    r = check_borrower(DEFAULT, terms, young, NONE)
    assert r.rules == ("new_identity",)
    assert "250001.00 CNY is above 25% of the per loan limit of 1000000.00 CNY (250000.00 CNY)" in r.message
    assert "verified history of 10 days" in r.message
    assert check_borrower(DEFAULT, cny(250_000), young, NONE) is None
    assert check_borrower(DEFAULT, terms, replace(OLD, verified_age_days=30), NONE) is None


def test_exposure_caps():
    p = Policy("t", exposure_per_borrower={"*": 1_000}, exposure_per_grade={"C": {"CNY": 5_000}},
               exposure_total={"CNY": 10_000})
    c = replace(OLD, grade="C")
    assert check_borrower(p, cny(1_000), c, NONE) is None
    assert codes(check_borrower(p, cny(1_001), c, NONE)) == ("exposure_borrower",)
    assert codes(check_borrower(p, cny(500), c, LenderExposure({"CNY": 600_00}, {}, {}))) == ("exposure_borrower",)
    by_grade = LenderExposure({}, {"C": {"CNY": 4_600_00}}, {})
    assert codes(check_borrower(p, cny(500), c, by_grade)) == ("exposure_grade",)
    assert check_borrower(p, cny(500), replace(c, grade="B"), by_grade) is None
    r = check_borrower(p, cny(500), c, LenderExposure({}, {}, {"CNY": 9_600_00}))
    assert r.rules == ("exposure_total",) and "above the cap of 10000.00 CNY" in r.message


# -- presets and parameters ---------------------------------------------------------------------


def test_presets():
    assert set(PRESETS) == {"default", "permissive", "cn-2016"}
    assert preset("cn-2016") is CN_2016
    with pytest.raises(PolicyError) as e:
        preset("lax")
    assert e.value.code == "unknown_policy" and "default, permissive, cn-2016" in e.value.message
    view = policy_json(CN_2016)
    assert view["lpr_bp"] == 310 and view["rate_cap_text"] == "12.40%" and view["lender_cap"] == {"CNY": 200_000}
    assert RULE_CODES[0] == "bad_terms" and len(set(RULE_CODES)) == len(RULES) + 1


@pytest.mark.parametrize("kwargs", [
    {"name": ""}, {"name": "x" * 33}, {"apr_cap_bp": -1}, {"apr_cap_bp": 100_001}, {"lpr_multiple": 0},
    {"max_term_months": 0}, {"min_grade": "H"}, {"max_principal": {"XXX": 1}}, {"max_principal": {"CNY": -1}},
    {"borrow_cap": {"CNY": 10**17}}, {"exposure_per_grade": {"Z": {}}},
    {"new_identity_steps": ((60, 50), (30, 25))}, {"new_identity_steps": ((30, 50), (60, 25))},
])
def test_bad_parameters(kwargs):
    args = {"name": "t", **kwargs}
    with pytest.raises(PolicyError) as e:
        Policy(**args)
    assert e.value.code == "bad_policy"


def test_overrides_keep_the_name_and_are_checked():
    p = with_overrides(CN_2016, lpr_bp=300)
    assert p.name == "cn-2016" and p.rate_cap_bp() == 1200 and p.lender_cap == CN_2016.lender_cap
    with pytest.raises(PolicyError):
        with_overrides(DEFAULT, min_grade="Q")


def test_terms_of_offers_and_contracts():
    class Offer:
        currency, min_amount, max_amount, rate_bp, term, schedule, period_days = "EUR", 1, 9, 5, "90d", "bullet", 30
    assert terms_of_offer(Offer) == LoanTerms("EUR", 1, 9, 5, "90d", "bullet", 30)
    doc = {"currency": "EUR", "principal": 7, "rate_bp": 5, "term": "3m", "schedule": "annuity"}
    assert terms_of_contract(doc) == LoanTerms("EUR", 7, 7, 5, "3m", "annuity", None)


# -- properties -------------------------------------------------------------------------------

currencies = st.sampled_from(["CNY", "EUR", "JPY", "BTC", "KWD"])
valid_terms = st.builds(
    lambda cur, lo, span, rate, months, kind: LoanTerms(cur, lo, lo + span, rate, f"{months}m", kind),
    currencies, st.integers(1, 10**12), st.integers(0, 10**12), st.integers(0, 100_000), st.integers(1, 120),
    st.sampled_from(["annuity", "equal-principal", "interest-only", "bullet"]),
)
facts = st.builds(
    BorrowerFacts,
    grade=st.sampled_from(GRADES + (NO_GRADE,)),
    owed=st.dictionaries(currencies, st.integers(0, 10**13), max_size=3),
    owed_to_lender=st.dictionaries(currencies, st.integers(0, 10**13), max_size=3),
    max_days_past_due=st.integers(0, 400), defaulted=st.integers(0, 3), verified_age_days=st.integers(0, 400),
    forked=st.booleans(),
)
exposures = st.builds(
    LenderExposure,
    to_borrower=st.dictionaries(currencies, st.integers(0, 10**13), max_size=3),
    by_grade=st.dictionaries(st.sampled_from(GRADES), st.dictionaries(currencies, st.integers(0, 10**13), max_size=2),
                             max_size=3),
    total=st.dictionaries(currencies, st.integers(0, 10**14), max_size=3),
)
limits = st.dictionaries(st.sampled_from(["CNY", "EUR", "*"]), st.integers(0, 10**8), max_size=3)
policies = st.builds(
    Policy, name=st.just("p"), apr_cap_bp=st.none() | st.integers(0, 100_000),
    lpr_bp=st.none() | st.integers(0, 1000), max_principal=limits, max_term_months=st.none() | st.integers(1, 240),
    refuse_forked=st.booleans(), refuse_defaulted=st.booleans(), max_days_past_due=st.none() | st.integers(1, 365),
    min_grade=st.none() | st.sampled_from(GRADES), allow_ungraded=st.booleans(), borrow_cap=limits,
    lender_cap=limits, new_identity_steps=st.sampled_from([(), ((30, 25), (60, 50)), ((90, 0),)]),
    exposure_per_borrower=limits, exposure_per_grade=st.dictionaries(st.sampled_from(GRADES), limits, max_size=2),
    exposure_total=limits,
)


@settings(max_examples=150, deadline=None)
@given(valid_terms, facts, exposures)
def test_permissive_refuses_nothing_valid(terms, borrower, exposure):
    assert check_terms(PERMISSIVE, terms) is None
    assert check_borrower(PERMISSIVE, terms, borrower, exposure) is None


def _tighten(p: Policy, data) -> Policy:
    """``p`` with one limit made stricter (or switched on)."""
    which = data.draw(st.sampled_from(["apr", "principal", "term", "borrow", "lender", "grade", "dpd", "flags",
                                       "exposure", "steps"]))
    if which == "apr":
        cap = p.apr_cap_bp if p.apr_cap_bp is not None else 100_000
        return replace(p, apr_cap_bp=data.draw(st.integers(0, cap)))
    if which == "principal":
        return replace(p, max_principal={k: data.draw(st.integers(0, v)) for k, v in p.max_principal.items()}
                       or {"*": data.draw(st.integers(0, 10**8))})
    if which == "term":
        return replace(p, max_term_months=data.draw(st.integers(1, p.max_term_months or 240)))
    if which == "borrow":
        return replace(p, borrow_cap={"*": data.draw(st.integers(0, 10**8))} if not p.borrow_cap else
                       {k: data.draw(st.integers(0, v)) for k, v in p.borrow_cap.items()})
    if which == "lender":
        return replace(p, lender_cap={"*": data.draw(st.integers(0, 10**8))} if not p.lender_cap else
                       {k: data.draw(st.integers(0, v)) for k, v in p.lender_cap.items()})
    if which == "grade":
        return replace(p, min_grade=data.draw(st.sampled_from(GRADES[:GRADES.index(p.min_grade or "G") + 1])),
                       allow_ungraded=p.allow_ungraded and data.draw(st.booleans()))
    if which == "dpd":
        return replace(p, max_days_past_due=data.draw(st.integers(1, p.max_days_past_due or 365)))
    if which == "flags":
        return replace(p, refuse_forked=True, refuse_defaulted=True)
    if which == "exposure":
        return replace(p, exposure_total={k: data.draw(st.integers(0, v)) for k, v in p.exposure_total.items()}
                       or {"*": data.draw(st.integers(0, 10**8))})
    # steps: a lower share at every age
    if p.new_identity_steps:
        return replace(p, new_identity_steps=tuple((d, pc // 2) for d, pc in p.new_identity_steps))
    return replace(p, new_identity_steps=((data.draw(st.integers(1, 400)), data.draw(st.integers(0, 100))),))


@settings(max_examples=200, deadline=None)
@given(policies, valid_terms, facts, exposures, st.data())
def test_tightening_a_limit_never_accepts_more(p, terms, borrower, exposure, data):
    strict = _tighten(p, data)
    if check_terms(p, terms) is not None:
        assert check_terms(strict, terms) is not None
    if check_borrower(p, terms, borrower, exposure) is not None:
        assert check_borrower(strict, terms, borrower, exposure) is not None


@settings(max_examples=100, deadline=None)
@given(policies, valid_terms, facts, exposures)
def test_a_refusal_names_its_rules_in_table_order(p, terms, borrower, exposure):
    for r in (check_terms(p, terms), check_borrower(p, terms, borrower, exposure)):
        if r is not None:
            assert r.breaches and list(r.rules) == sorted(r.rules, key=RULE_CODES.index)
            assert r.code == r.rules[0] and all(f"{b.rule}: " in r.message for b in r.breaches)


@settings(max_examples=100, deadline=None)
@given(valid_terms, st.integers(0, 100_000))
def test_rate_cap_refuses_exactly_above_the_cap(terms, cap):
    worst = max(apr_bp(a, terms.rate_bp, (int(terms.term[:-1]), "m"), terms.schedule)
                for a in {terms.min_amount, terms.max_amount})
    assert (check_terms(Policy("t", apr_cap_bp=cap), terms) is None) == (worst <= cap)
