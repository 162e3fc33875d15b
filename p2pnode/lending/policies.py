"""The lending policy in force on this node (protocol/lending/policy.py), and the
``policy.*`` control methods.

What it promises:

- ``policy`` is the policy ``[policy]`` of config.toml names (settings.py), or the one
  ``policy.set`` chose since: ``set`` writes the section first (``Context.save_settings``)
  and only then puts the new policy in force, so what is in force is what the next start
  reads, and a check already under way finishes under the policy it started with.
- ``refuse_terms`` raises ``ApiError`` when the policy refuses an offer, request or
  contract of this node's own making; its code is the first rule broken, its message
  names every rule broken and its numbers, ``details`` lists them.
- ``contract_refusal`` is the acceptor's check of a contract: the terms rules, then, if
  this node lends and ``borrower_facts`` knows the borrower, the borrower rules.
- ``borrower_facts`` and ``lender_exposure`` come from credit (p2pnode/lending/credit.py):
  the borrower's profile in this node's eyes, and this node's own book as a lender.
"""

from __future__ import annotations

from typing import Any, Mapping

from protocol.errors import CodedError
from protocol.lending.policy import (
    PRESETS, BorrowerFacts, LenderExposure, LoanTerms, Policy, Refusal, check_borrower, check_terms, policy_json,
    terms_of_contract,
)

from p2pnode.context import Context
from p2pnode.errors import ApiError
from p2pnode.lending.settings import OVERRIDES, policy_of


MAX_EXPOSURE_KEYS = 10_000
"""Counterparties whose debt a lender's exposure sums at most (a profile each, cached a day)."""


def refusal_error(refusal: Refusal, what: str) -> ApiError:
    """The ``ApiError`` of this node's own policy refusing ``what`` (e.g. "this offer")."""
    return ApiError(f"this node's policy refuses {what}: {refusal.message}", code=refusal.code,
                    details={"policy": refusal.policy, "rules": [{"rule": b.rule, "message": b.message}
                                                                 for b in refusal.breaches]})


class PolicyInForce:
    def __init__(self, ctx: Context, settings: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.settings = {k: settings.get(k, "") for k in ("preset",) + OVERRIDES}
        self.policy: Policy = policy_of(self.settings)
        self.credit: Any = None  # p2pnode.lending.credit.Credit, set by the service: the borrower rules' facts

    @property
    def name(self) -> str:
        return self.policy.name

    # -- what credit says (p2pnode/lending/credit.py) ------------------------------------------

    def borrower_facts(self, author: bytes) -> BorrowerFacts | None:
        """What this node knows of ``author`` as a borrower: its credit profile in this
        node's eyes (docs/credit.md), or None before credit is wired (``credit``). A key
        the node knows nothing of has the facts of a fresh key (grade "none", age 0), so
        the grade, new-identity and cap rules apply to it as to any."""
        if self.credit is None:
            return None
        p = self.credit.profile(author)
        return BorrowerFacts(grade=p.grade, owed=dict(p.owed), owed_to_lender=dict(p.owed_by_lender.get(self.ctx.me, {})),
                             max_days_past_due=p.days_past_due, defaulted=p.defaulted + p.written_off,
                             verified_age_days=p.verified_age_days, forked=p.forked)

    def lender_exposure(self, borrower: bytes, grade: str) -> LenderExposure:
        """This node's book as a lender, from the profiles of the keys its own chain holds
        loans with (at most ``MAX_EXPOSURE_KEYS``): what each owes it, per currency, for
        ``borrower``, for the borrowers of ``grade`` as graded today, and in total."""
        if self.credit is None:
            return LenderExposure()
        me = self.ctx.me
        to_borrower: dict[str, int] = {}
        by_grade: dict[str, dict[str, int]] = {}
        total: dict[str, int] = {}
        for key in self.credit.counterparties(limit=MAX_EXPOSURE_KEYS):
            p = self.credit.profile(key)
            for cur, amount in p.owed_by_lender.get(me, {}).items():
                total[cur] = total.get(cur, 0) + amount
                g = by_grade.setdefault(p.grade, {})
                g[cur] = g.get(cur, 0) + amount
                if key == borrower:
                    to_borrower[cur] = to_borrower.get(cur, 0) + amount
        return LenderExposure(to_borrower=to_borrower, by_grade=by_grade, total=total)

    # -- checks ----------------------------------------------------------------------------

    def refuse_terms(self, terms: LoanTerms, what: str) -> None:
        """``ApiError`` if the policy refuses ``terms`` of this node's own making."""
        r = check_terms(self.policy, terms)
        if r is not None:
            raise refusal_error(r, what)

    def borrower_refusal(self, terms: LoanTerms, borrower: bytes) -> Refusal | None:
        """The borrower rules on lending ``terms`` to ``borrower``, if this node knows it."""
        facts = self.borrower_facts(borrower)
        if facts is None:
            return None
        return check_borrower(self.policy, terms, facts, self.lender_exposure(borrower, facts.grade))

    def contract_check(self, doc: dict) -> Refusal | None:
        """Every rule the policy finds broken by contract ``doc``: its terms, and its
        borrower if this node lends (both, so that a refusal names all of them: the issue's
        1000% loan of 9,999,999,999 to a borrower 91 days late breaks three)."""
        terms = terms_of_contract(doc)
        r = check_terms(self.policy, terms)
        if r is not None and r.code == "bad_terms":
            return r
        if doc["lender"] == self.ctx.me:
            b = self.borrower_refusal(terms, doc["borrower"])
            if b is not None:
                r = b if r is None else Refusal(r.policy, r.breaches + b.breaches)
        return r

    def refuse_contract(self, doc: dict, what: str) -> None:
        """``ApiError`` if the policy refuses contract ``doc`` this node proposes."""
        r = self.contract_check(doc)
        if r is not None:
            raise refusal_error(r, what)

    def contract_refusal(self, doc: dict, offer: Any = None) -> str | None:
        """Why the policy refuses to countersign ``doc`` (rules and numbers), or None; with
        this node's ``offer`` the contract takes, also its ``min_grade`` of the taker."""
        r = self.contract_check(doc)
        if r is not None:
            return r.message
        return self.min_grade_refusal(doc["proposer"], getattr(offer, "min_grade", None))

    def min_grade_refusal(self, taker: bytes, min_grade: str | None) -> str | None:
        """Why ``taker`` may not take an offer asking ``min_grade`` of its takers, by its
        grade in this node's eyes (protocol/lending/credit.py ``min_grade_refusal``)."""
        if not min_grade or self.credit is None:
            return None
        from protocol.lending.credit import min_grade_refusal

        return min_grade_refusal(self.credit.grade(taker), min_grade)

    # -- policy.* --------------------------------------------------------------------------

    def view(self, p: Policy) -> dict:
        return dict(policy_json(p), in_force=p.name == self.policy.name)

    def list(self) -> dict:
        return {"in_force": self.policy.name,
                "policies": [{"name": p.name, "description": p.description, "in_force": p.name == self.policy.name}
                             for p in PRESETS.values()]}

    def show(self, name: str | None) -> dict:
        if name is None or name == self.policy.name:
            return dict(self.view(self.policy), overrides={k: self.settings[k] for k in OVERRIDES if self.settings[k]})
        if name not in PRESETS:
            raise ApiError(f"no policy {name!r}: one of {', '.join(PRESETS)}", code="unknown_policy")
        return dict(self.view(PRESETS[name]), overrides={})

    def set(self, name: str, overrides: Mapping[str, str | None]) -> dict:
        """Put preset ``name`` in force with ``overrides`` (the others empty: the preset's),
        written to config.toml first."""
        values = {"preset": name, **{k: overrides.get(k) or "" for k in OVERRIDES}}
        if name not in PRESETS:
            raise ApiError(f"no policy {name!r}: one of {', '.join(PRESETS)}", code="unknown_policy")
        try:
            policy = policy_of(values)
        except ValueError as e:
            raise ApiError(str(e), code="bad_policy") from None
        try:
            self.ctx.save_settings(values)
        except (CodedError, ValueError, OSError) as e:
            msg = getattr(e, "message", None) or str(e)
            raise ApiError(f"the policy is unchanged: {msg}", code="save_failed") from None
        self.settings, self.policy = values, policy
        self.ctx.log.info("policy %s in force%s", name,
                          "".join(f", {k} {v}" for k, v in values.items() if k != "preset" and v))
        return self.show(None)
