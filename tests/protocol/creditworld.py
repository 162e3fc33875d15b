"""A world of keys and loans for the credit tests and simulation, with no network: real
contracts and receipts, read by ``protocol.lending.loanstate`` as a node would, and
graded by ``protocol.lending.credit`` for any viewer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta

from protocol import codec
from protocol.lending.contract import check_contract, contract_schedule
from protocol.lending.credit import DEFAULT_PARAMS, CreditParams, LoanHistory, Profile, profile, repaid_pair
from protocol.lending.loanstate import Notice, SignedReceipt, loan_moves, loan_state
from protocol.lending.trust import TrustGraph, lender_weights, walk


def key(n: int) -> bytes:
    return hashlib.sha256(b"key %d" % n).digest()


def _id(doc: dict) -> bytes:
    return hashlib.sha256(codec.encode(doc)).digest()


def make_contract(lender: bytes, borrower: bytes, *, principal: int = 100_000, currency: str = "EUR",
                  start: date, term: str = "3m", grace_days: int = 5, default_days: int = 30, salt: int = 0,
                  created_ms: int | None = None) -> dict:
    return check_contract({
        "type": "contract", "offer": hashlib.sha256(b"offer %d" % salt).digest(), "proposer": borrower,
        "lender": lender, "borrower": borrower, "currency": currency, "principal": principal, "rate_bp": 1200,
        "term": term, "schedule": "annuity", "start": start.isoformat(), "grace_days": grace_days, "late_fee": 0,
        "default_days": default_days, "lender_head": [1, b"\x01" * 32], "borrower_head": [1, b"\x02" * 32],
        "created": salt if created_ms is None else created_ms,
        "expires": (salt if created_ms is None else created_ms) + 1000})


def _receipt(loan: bytes, n: int, what: str, amount: int, day: date, payer: bytes, payee: bytes) -> SignedReceipt:
    doc = {"type": "receipt", "loan": loan, "n": n, "what": what, "amount": amount, "date": day.isoformat(),
           "payer": payer, "payee": payee}
    return SignedReceipt(_id(doc), doc, payee)


def make_loan(lender: bytes, borrower: bytes, *, start: date, today: date, pay: str = "on_time", late_days: int = 0,
              principal: int = 100_000, currency: str = "EUR", term: str = "3m", salt: int = 0,
              created_ms: int | None = None) -> LoanHistory:
    """A loan disbursed on ``start`` and, by ``pay``: ``on_time`` (every installment on its
    due date), ``late`` (each ``late_days`` after it), ``open`` (nothing repaid) or
    ``default`` (nothing repaid; the lender declares a default once it may)."""
    c = make_contract(lender, borrower, principal=principal, currency=currency, start=start, term=term, salt=salt,
                      created_ms=created_ms)
    loan = _id(c)
    receipts = [_receipt(loan, 1, "disbursement", principal, start, lender, borrower)]
    notices = []
    if pay in ("on_time", "late"):
        shift = timedelta(days=late_days if pay == "late" else 0)
        for n, inst in enumerate((i for i in contract_schedule(c) if i.payment), 2):
            if inst.due + shift <= today:
                receipts.append(_receipt(loan, n, "repayment", inst.payment, inst.due + shift, borrower, lender))
    elif pay == "default":
        first_due = contract_schedule(c)[0].due
        day = first_due + timedelta(days=c["default_days"] + 1)
        if day <= today:
            notices.append(Notice("default", lender, day, None, _id({"n": salt, "k": "default"})))
    elif pay != "open":
        raise ValueError(pay)
    st = loan_state(loan, c, receipts, [], notices, today)
    moves = loan_moves(loan, c, receipts, [], notices, today)
    return LoanHistory(c, st, moves)


@dataclass
class World:
    """Loans among keys, and what each viewer first stored of each author."""

    today: date
    loans: list[LoanHistory] = field(default_factory=list)
    first_seen: dict[bytes, date] = field(default_factory=dict)
    forked: set[bytes] = field(default_factory=set)
    _salt: int = 0
    _graph: TrustGraph | None = None
    _by_borrower: dict[bytes, list[LoanHistory]] | None = None
    _walks: dict = field(default_factory=dict)

    def lend(self, lender: bytes, borrower: bytes, *, start: date, pay: str = "on_time", seen: date | None = None,
             **kw) -> LoanHistory:
        """A loan; both keys count as first stored on ``seen`` (default ``start``) unless
        stored earlier."""
        self._salt += 1
        h = make_loan(lender, borrower, start=start, today=self.today, pay=pay, salt=self._salt, **kw)
        self.loans.append(h)
        self._graph = self._by_borrower = None
        self._walks.clear()
        for k in (lender, borrower):
            s = seen or start
            self.first_seen[k] = min(self.first_seen.get(k, s), s)
        return h

    def graph(self) -> TrustGraph:
        if self._graph is None:
            self._graph = TrustGraph()
            for h in self.loans:
                pair = repaid_pair(h)
                if pair:
                    self._graph.add(h.state.loan, *pair)
        return self._graph

    def borrowed_by(self, k: bytes) -> list[LoanHistory]:
        if self._by_borrower is None:
            self._by_borrower = {}
            for h in self.loans:
                self._by_borrower.setdefault(h.contract["borrower"], []).append(h)
        return self._by_borrower.get(k, [])

    def masses(self, viewer: bytes, without: bytes | None = None) -> dict[bytes, int]:
        """The viewer's walk; ``without``: a borrower that vouches for no one (credit, rule 2)."""
        excluded = self.forked | ({without} if without not in (None, viewer) else set())
        if without is None:
            if (viewer, frozenset(self.forked)) not in self._walks:
                self._walks[viewer, frozenset(self.forked)] = walk(viewer, self.graph().neighbours, excluded=excluded)
            return self._walks[viewer, frozenset(self.forked)]
        return walk(viewer, self.graph().neighbours, excluded=excluded)

    def lender_weights(self, viewer: bytes, k: bytes) -> dict[bytes, int]:
        return lender_weights(k, viewer, self.graph().neighbours, self.masses(viewer, k), excluded=self.forked)

    def profile(self, viewer: bytes, k: bytes, params: CreditParams = DEFAULT_PARAMS) -> Profile:
        own = self.masses(viewer).get(k, 0)
        return profile(k, self.borrowed_by(k), viewer=viewer, today=self.today, lender_weights=self.lender_weights(viewer, k),
                       first_seen=self.first_seen, forked=k in self.forked, key_mass=own, params=params)
