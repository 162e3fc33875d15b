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
- ``borrower_facts`` and ``lender_exposure`` are the hooks credit fills
  (protocol/lending/credit.py): until then ``borrower_facts`` answers None and the
  borrower rules are not run.
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

    @property
    def name(self) -> str:
        return self.policy.name

    # -- hooks for credit ------------------------------------------------------------------

    def borrower_facts(self, author: bytes) -> BorrowerFacts | None:
        """What this node knows of ``author`` as a borrower (its credit profile), or None if
        it knows nothing it can vouch for. Credit is not built yet: always None, so the
        borrower rules of ``check_borrower`` do not run. The integrator fills this from
        ``protocol.lending.credit.Profile`` (grade, owed, owed_by_lender[me],
        max_days_past_due, defaulted + written_off, verified_age_days, forked)."""
        return None

    def lender_exposure(self, borrower: bytes, grade: str) -> LenderExposure:
        """This node's book as a lender: outstanding principal owed by ``borrower``, in
        ``grade`` and in total, per currency. Empty until credit computes it."""
        return LenderExposure()

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

    def refuse_contract(self, doc: dict, what: str) -> None:
        """``ApiError`` if the policy refuses contract ``doc`` this node proposes: its terms,
        and its borrower if this node lends."""
        terms = terms_of_contract(doc)
        self.refuse_terms(terms, what)
        if doc["lender"] == self.ctx.me:
            r = self.borrower_refusal(terms, doc["borrower"])
            if r is not None:
                raise refusal_error(r, what)

    def contract_refusal(self, doc: dict) -> str | None:
        """Why the policy refuses to countersign ``doc`` (rules and numbers), or None."""
        terms = terms_of_contract(doc)
        r = check_terms(self.policy, terms)
        if r is None and doc["lender"] == self.ctx.me:
            r = self.borrower_refusal(terms, doc["borrower"])
        return None if r is None else r.message

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
