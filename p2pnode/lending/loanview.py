"""A loan as this node's store knows it: the documents every chain holds about it, read
into the inputs of ``protocol.loanstate.loan_state``.

Every node that holds the same chains reads the same documents here, so every node
computes the same state for the same loan and date. No trio, no libp2p.

Signatures are not checked again here: an entry is found through lending's loan index,
which holds keys only for stored entries (verified when stored, store invariant I1) whose
bodies their kind validated, embedded documents' signatures included (I6). What is read
is opened by the ``open_*`` functions with ``verify=False``: every check but the Ed25519
ones kept, so the same bytes give the same record; that check was most of a ``portfolio``'s cost (two or
more verifies per entry, a dozen entries per loan).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from protocol.entry import Entry
from protocol.envelope import open_envelope
from protocol.errors import ProtocolError
from protocol.lending.contract import (LOAN_INDEX, embedded_id, open_agreement, open_receipt, open_transfer,
                                       parse_date)

from p2pnode.walltime import utc_date
from p2pnode.ledger.store import Chains, IndexView


@dataclass
class LoanRecord:
    """The documents about one loan found in the store, with the entries that hold them."""

    loan: bytes
    contract: dict | None = None
    agreement: bytes | None = None  # the agreement envelope
    receipts: dict[bytes, Any] = field(default_factory=dict)  # id -> loanstate.SignedReceipt
    transfers: dict[bytes, Any] = field(default_factory=dict)  # id -> loanstate.SignedTransfer
    amendments: dict[bytes, Any] = field(default_factory=dict)  # id -> loanstate.SignedAmendment
    notices: list[Any] = field(default_factory=list)  # loanstate.Notice
    declared: list[dict] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    bad: list[tuple[Entry, str]] = field(default_factory=list)  # entries whose document does not open
    raw: dict[bytes, bytes] = field(default_factory=dict)  # id -> envelope bytes of each receipt, transfer, amendment
    source: tuple[bytes, ...] | None = field(default=None, init=False, compare=False)
    """Ids of the entries ``record_of`` read this record from, in order: what its evaluation
    is kept by (``evaluated``). Not an argument: a record made otherwise, or by
    ``dataclasses.replace`` with other documents, has none and is evaluated afresh."""

    def recorded_by(self, author: bytes) -> set[bytes]:
        """Ids of the documents (agreement, receipts, transfers, amendments) ``author``'s chain embeds."""
        out = set()
        for e in self.entries:
            if e.author != author:
                continue
            doc = embedded_id(e.kind, e.body)
            if doc is not None:
                out.add(doc)
        return out

    def state(self, today: date) -> Any:
        """The ``protocol.loanstate.LoanState`` of this loan at ``today``."""
        return self.evaluated(today)[0]

    def evaluated(self, today: date) -> tuple[Any, tuple[Any, ...]]:
        """``protocol.loanstate.loan_evaluation`` of this loan at ``today``: its state and
        moves. Kept (``_Evaluated``) for a record ``record_of`` made: the same entries read
        on the same day give the same values, which are immutable."""
        from protocol.lending.loanstate import loan_evaluation

        if self.contract is None:
            raise LookupError("no agreement for this loan is held")
        key = None if self.source is None else (self.loan, self.source, today)
        kept = None if key is None else _evaluated.get(key)
        if kept is not None:
            return kept
        out = loan_evaluation(self.loan, self.contract, list(self.receipts.values()),
                              list(self.transfers.values()), self.notices, today, list(self.amendments.values()))
        if key is not None:
            _evaluated.add(key, out)
        return out

    def next_receipt_number(self, today: date) -> int:
        """The number the next receipt takes: one after the counted ones (a refused receipt
        leaves no hole; its number is given again)."""
        return len(self.state(today).counted) + 1


EVALUATED_KEPT = 4096
"""Loan evaluations kept (``_Evaluated``), the latest made."""


class _Evaluated:
    """The last ``EVALUATED_KEPT`` evaluations of loans, by loan, the entries read and day.

    One loan is evaluated by several readers of the same store on the same day: the
    lender's credit model reads each of the borrower's loans, the holdings read every
    loan the node holds, and each reads the same entries. A countersigning node evaluated
    each new loan two or three times (measured: a tenth of a lender's CPU per contract).
    A record made by ``record_of`` is a function of its entries (their ids name them: a
    stored entry never changes), and the evaluation a function of the record and the day,
    so the first evaluation serves the others. Errors are not kept. Thread-safe: a read is
    one dict lookup, a change holds the lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[tuple, tuple[Any, tuple[Any, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[Any, tuple[Any, ...]] | None:
        return self._kept.get(key)

    def add(self, key: tuple, value: tuple[Any, tuple[Any, ...]]) -> None:
        with self._lock:
            self._kept[key] = value
            while len(self._kept) > self.size:  # (bounded: the oldest goes first)
                self._kept.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


_evaluated = _Evaluated(EVALUATED_KEPT)


def loan_entries(chains: Chains, index: IndexView, loan: bytes) -> list[Entry]:
    """Every stored entry (of any author) that names ``loan``, by author then seq."""
    return entries_at(chains, list(index.keys(LOAN_INDEX + loan)))


def recorded_by(chains: Chains, index: IndexView, loan: bytes, author: bytes) -> set[bytes]:
    """``read_loan(chains, index, loan).recorded_by(author)``, reading ``author``'s entries
    about ``loan`` alone (its keys are ``LOAN_INDEX + loan + author``): the check made
    before every document is recorded, which need not open the other side's."""
    rec = LoanRecord(loan)
    rec.entries = entries_at(chains, list(index.keys(LOAN_INDEX + loan + author)))
    return rec.recorded_by(author)


def entries_at(chains: Chains, keys: list[bytes]) -> list[Entry]:
    """The stored entries of loan index ``keys`` (``LOAN_INDEX + loan + author + seq``), in
    their order; a key whose entry is gone is skipped."""
    out = []
    for k in keys:
        data = chains.get(k[33:65], int.from_bytes(k[65:73], "big"))
        if data is not None:
            out.append(Entry.from_envelope(open_envelope(data, verify_signatures=False)))
    return out


def loan_ids(index: IndexView) -> list[bytes]:
    """The ids of every loan some stored entry names."""
    return index.distinct(32, LOAN_INDEX)


def read_loan(chains: Chains, index: IndexView, loan: bytes) -> LoanRecord:
    """Everything the store holds about ``loan`` (an empty record if nothing)."""
    return record_of(loan, loan_entries(chains, index, loan))


def record_of(loan: bytes, entries: list[Entry]) -> LoanRecord:
    """The record of ``loan`` from its stored ``entries`` (``entries_at``), in their order."""
    rec = LoanRecord(loan)
    for e in entries:
        rec.entries.append(e)
        try:
            _take(rec, e)
        except (ProtocolError, KeyError, ValueError) as err:
            rec.bad.append((e, getattr(err, "message", str(err))))
    rec.source = tuple(e.id for e in entries)
    return rec


def _take(rec: LoanRecord, e: Entry) -> None:
    from protocol.lending.loanstate import Notice, SignedReceipt, SignedTransfer

    if e.kind == "loan.agreement":
        env = open_agreement(e.body["contract"], verify=False)
        if env.id == rec.loan and rec.contract is None:
            rec.contract, rec.agreement = env.document, env.raw
    elif e.kind == "loan.receipt":
        env = open_receipt(e.body["receipt"], verify=False)
        rec.receipts[env.id] = SignedReceipt(env.id, env.document, env.signers[0])
        rec.raw[env.id] = env.raw
    elif e.kind == "loan.transfer":
        env = open_transfer(e.body["transfer"], verify=False)
        rec.transfers[env.id] = SignedTransfer(env.id, env.document, frozenset(env.signers))
        rec.raw[env.id] = env.raw
    elif e.kind == "loan.amendment":
        _take_amendment(rec, e)
    elif e.kind in ("loan.default", "loan.writeoff"):
        rec.notices.append(Notice(e.kind[5:], e.author, parse_date(e.body["date"]), None, e.id))
    elif e.kind == "loan.dispute":
        rec.notices.append(Notice("dispute", e.author, utc_date(e.ts), e.body["reason"], e.id))
    elif e.kind == "loan.declared":
        rec.declared.append(dict(e.body, by=e.author, ts=e.ts))


def _take_amendment(rec: LoanRecord, e: Entry) -> None:
    from protocol.lending.amendment import open_amendment
    from protocol.lending.loanstate import SignedAmendment

    env = open_amendment(e.body["amendment"], verify=False)
    rec.amendments[env.id] = SignedAmendment(env.id, env.document, frozenset(env.signers))
    rec.raw[env.id] = env.raw


def amendments_json(rec: LoanRecord, st: Any) -> list[dict[str, Any]]:
    """The amendments in effect (``st.amendments``, loanstate rule 12), each with its new
    terms and signers, peers as peer IDs; then those held that do not count, with why."""
    from protocol.keys import peer_id
    from protocol.lending.money import format_rate

    why = {r.id: r for r in st.rejected}
    out = []
    for a in st.amendments:
        d = rec.amendments[a.id].doc
        out.append(dict(a.to_json(), counted=True, **_terms_json(d, peer_id, format_rate)))
    for aid, x in sorted(rec.amendments.items()):
        if aid in {a.id for a in st.amendments}:
            continue
        r = why.get(aid)
        out.append({"id": aid.hex(), "after": x.doc["after"], "date": x.doc["date"], "counted": False,
                    "code": r.code if r else "not_in_effect", "reason": r.message if r else "dated after the day shown",
                    **_terms_json(x.doc, peer_id, format_rate)})
    return out


def _terms_json(d: dict, peer_id: Any, format_rate: Any) -> dict[str, Any]:
    return {"rate_bp": d["rate_bp"], "rate_text": format_rate(d["rate_bp"]), "term": d["term"],
            "schedule": d["schedule"], "period_days": d.get("period_days"), "borrower": peer_id(d["borrower"]),
            "holder": peer_id(d["holder"])}


def role_of(contract: dict, holder: bytes, me: bytes) -> str | None:
    """``lender``, ``borrower``, ``former_lender`` or None: what ``me`` is in a loan."""
    if me == contract["borrower"]:
        return "borrower"
    if me == holder:
        return "lender"
    if me == contract["lender"]:
        return "former_lender"
    return None


def loan_json(rec: LoanRecord, today: date, me: bytes) -> dict[str, Any]:
    """The JSON view of a loan at ``today``: terms, state, schedule rows, receipts."""
    from protocol.keys import peer_id
    from protocol.lending.money import format_amount, format_rate

    c = rec.contract
    st = rec.state(today)
    view = st.to_json()
    cur = c["currency"]
    role = role_of(c, st.holder, me)
    # peers appear as peer IDs everywhere in the node's answers (loanstate gives keys in hex)
    view["holder"] = peer_id(st.holder)
    view["disputes"] = [dict(d, by=peer_id(bytes.fromhex(d["by"]))) for d in view["disputes"]]
    view.update({
        "loan": rec.loan.hex(),
        "as_of": today.isoformat(),
        "role": role,
        "shown_state": "transferred" if role == "former_lender" else st.state,
        "terms": {
            "offer": c["offer"].hex(),
            "lender": peer_id(c["lender"]),
            "borrower": peer_id(c["borrower"]),
            "holder": peer_id(st.holder),
            "proposer": peer_id(c["proposer"]),
            "currency": cur,
            "principal": c["principal"],
            "principal_text": format_amount(c["principal"], cur),
            "rate_bp": c["rate_bp"],
            "rate_text": format_rate(c["rate_bp"]),
            "term": c["term"],
            "period_days": c.get("period_days"),
            "schedule": c["schedule"],
            "start": c["start"],
            "grace_days": c["grace_days"],
            "late_fee": c["late_fee"],
            "default_days": c["default_days"],
        },
        "declared": [
            {"by": peer_id(d["by"]), "what": d["what"], "amount": d["amount"], "date": d["date"]} for d in rec.declared
        ],
        "receipts": sorted(
            ({"id": r.id.hex(), "n": r.doc["n"], "what": r.doc["what"], "amount": r.doc["amount"],
              "date": r.doc["date"], "payer": peer_id(r.doc["payer"]), "payee": peer_id(r.doc["payee"]),
              "signer": peer_id(r.signer), "counted": r.id in set(st.counted)}
             for r in rec.receipts.values()),
            key=lambda x: (x["n"], x["id"]),
        ),
        "transfer_details": sorted(
            ({"id": t.id.hex(), "from": peer_id(t.doc["from"]), "to": peer_id(t.doc["to"]), "after": t.doc["after"],
              "date": t.doc["date"], "price": t.doc.get("price"), "counted": t.id in set(st.transfers)}
             for t in rec.transfers.values()),
            key=lambda x: (x["after"], x["date"], x["id"]),
        ),
        "amendments": amendments_json(rec, st),
        "recorded_by": sorted({peer_id(e.author) for e in rec.entries}),
        "unreadable_entries": [{"author": peer_id(e.author), "seq": e.seq, "reason": why} for e, why in rec.bad],
    })
    return view
