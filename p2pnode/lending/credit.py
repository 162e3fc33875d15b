"""Credit on the running node: ``protocol.lending.credit`` over the loans this node holds,
and the standing of authors that the node's replication and offer book use.

What it keeps, in lending's record space (records survive ``reindex``; they are this
viewer's own observations, not derived from entries alone):

- ``cF + author``: when this node first stored a loan entry of ``author`` (ms, 8 bytes,
  its own clock): what credit trusts for time (protocol/lending/credit.py, rule 3).
- ``cR + loan``: ``lender + borrower`` of a loan this node saw repaid: an edge of the
  trust graph (protocol/lending/trust.py). Repaid is final (loanstate.py), so an edge is
  never taken back.
- ``cV``: the two above were built for this store (once, on first use, from the loans
  the store held before this version: their authors count as first stored then).

Promises:

- ``on_entries(entries)``: for each new loan entry, its author's first-stored time if it
  has none; for a receipt or agreement, a tally of the loan's repayments, and a read of
  that loan's documents and one loan state only when it may be repaid now (``take``):
  an edge if it is. Bounded per entry.
- ``standing(author)`` (also ``of``): 3 for this node, 2 for a key that signed a loan
  with it (its own signature vouches), 1 for a key the viewer's trust reaches (mass >
  0), 0 for a stranger. A dict lookup on the last walk: the walk is made again when
  repaid loans or fork proofs changed, at most every ``REFRESH_S`` (``FRESH_S`` when a
  profile is asked). It may be asked from the store's worker thread: a lock guards what
  it reads.
- ``profile(author)``: ``protocol.lending.credit.profile`` of the loans ``author``
  borrowed (lending's ``W`` index, at most ``CreditParams.max_loans``) at today, with
  the lender weights of a walk that excludes ``author``. One walk at most, bounded
  (trust.py, rule 2); profiles are cached until the day, the borrower's loans or the
  viewer's walk change.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import date, datetime, timezone
from typing import Any, Iterable

from protocol.errors import ProtocolError
from protocol.keys import peer_id
from protocol.envelope import peek_document
from protocol.lending.contract import BORROWER_INDEX, GRAPH_INDEX, LOAN_INDEX, embedded_id, loan_of
from protocol.lending.credit import DEFAULT_PARAMS, CreditParams, LoanHistory, Profile, profile, repaid_pair
from protocol.lending.trust import TrustGraph, lender_weights, walk

from p2pnode.context import Context
from p2pnode.lending.loanview import LoanRecord, entries_at, loan_ids, read_loan, record_of

F_SEEN, R_REPAID, V_BUILT = b"cF", b"cR", b"cV"
REFRESH_S = 10.0
"""A walk made stale by new repaid loans serves standing for at most this long."""
FRESH_S = 1.0
"""... and profiles (``credit.show``, grades in lists) for at most this long."""
MAX_PROFILES = 1_000
"""Profiles cached at most (the cache is emptied when full)."""
MAX_HISTORIES = 100_000
"""Loan histories kept at most (emptied when full)."""
MAX_OPEN = 100_000
"""Loans not repaid whose repayments are tallied in memory at most."""


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()


class Credit:
    def __init__(self, ctx: Context, params: CreditParams = DEFAULT_PARAMS) -> None:
        self.ctx = ctx
        self.me = ctx.me
        self.params = params
        self._lock = threading.RLock()
        self._graph: TrustGraph | None = None
        self._seen: dict[bytes, date] = {}
        self._masses: dict[bytes, int] = {}
        self._walked_at: float | None = None
        self._forked: frozenset[bytes] = frozenset()
        self._dirty = True
        self._profiles: dict[bytes, tuple[date, int, Profile]] = {}  # author -> (day, walk, profile)
        self._kept: dict[bytes, tuple[date, LoanHistory | None]] = {}  # loan -> (day, history); ``take`` drops
        self._walks = 0  # walks made: a profile made on an older one is stale
        self._open: OrderedDict[bytes, tuple[int | None, dict[bytes, int]]] = OrderedDict()

    # -- what is kept ------------------------------------------------------------------------

    def _loaded(self) -> TrustGraph:
        """The trust graph, read from the records on first use (built once if absent)."""
        if self._graph is None:
            graph = TrustGraph()
            records = self.ctx.records
            if records.get(V_BUILT) is None:
                self._build(graph)
            else:
                for k, v in records.items(R_REPAID):
                    graph.add(k[len(R_REPAID):], v[:32], v[32:64])
            self._graph = graph
        return self._graph

    def _build(self, graph: TrustGraph) -> None:
        """Once per store: the repaid loans and the authors it held before this version."""
        today, now = self.ctx.clock.today(), self.ctx.clock.now_ms().to_bytes(8, "big")
        puts = []
        for loan in loan_ids(self.ctx.index)[:graph.max_loans]:
            pair = self._repaid(read_loan(self.ctx.chains, self.ctx.index, loan), today)
            if pair and graph.add(loan, *pair):
                puts.append((R_REPAID + loan, pair[0] + pair[1]))
        puts += [(F_SEEN + a, now) for a in self.ctx.chains.heads() if self.ctx.records.get(F_SEEN + a) is None]
        self.ctx.records.write(puts + [(V_BUILT, b"1")])

    def _repaid(self, rec: LoanRecord, today: date) -> tuple[bytes, bytes] | None:
        if rec.contract is None:
            return None
        try:
            return repaid_pair(LoanHistory(rec.contract, rec.state(today)))
        except (ProtocolError, LookupError):
            return None

    def first_seen(self, author: bytes) -> date | None:
        """The day this node first stored a loan entry of ``author`` (None: never)."""
        if author not in self._seen:
            v = self.ctx.records.get(F_SEEN + author)
            if v is None:
                return None
            self._seen[author] = _day(int.from_bytes(v, "big"))
        return self._seen[author]

    async def on_entries(self, entries: Iterable[Any]) -> None:
        self.take(entries)

    def take(self, entries: Iterable[Any]) -> int:
        """Bring the records up to date with newly stored loan entries (module docstring);
        the number of repaid loans found.

        Reading a loan's documents verifies their signatures again, so a loan is read in
        full only when it may have become repaid: the first time this run hears of it
        (unless its agreement is the first entry stored about it), and when the
        repayments heard of add up to its principal (a loan cannot be repaid before).
        Receipts are only peeked at here (the store verified them on the way in)."""
        with self._lock:
            graph = self._loaded()
            now = self.ctx.clock.now_ms()
            puts: list[tuple[bytes, bytes]] = []
            check: set[bytes] = set()
            for e in entries:
                if not e.kind.startswith("loan."):
                    continue
                if e.author not in self._seen and self.first_seen(e.author) is None:
                    self._seen[e.author] = _day(now)
                    puts.append((F_SEEN + e.author, now.to_bytes(8, "big")))
                self._profiles.pop(e.author, None)
                self._forget_history(e)
                if e.kind in ("loan.agreement", "loan.receipt"):
                    self._heard(e, graph, check)
                elif e.kind != "loan.declared":  # a notice or transfer: its borrower is not in the body
                    self._profiles.clear()
            today = self.ctx.clock.today()
            found = 0
            for loan in sorted(check):
                rec = read_loan(self.ctx.chains, self.ctx.index, loan)
                pair = self._repaid(rec, today)
                if pair and graph.add(loan, *pair):
                    puts.append((R_REPAID + loan, pair[0] + pair[1]))
                    found += 1
                if pair:
                    self._open.pop(loan, None)
                elif rec.contract is not None:
                    self._track(loan, rec.contract["principal"],
                                {r.id: r.doc["amount"] for r in rec.receipts.values() if r.doc["what"] == "repayment"})
                if rec.contract is not None:
                    self._profiles.pop(rec.contract["borrower"], None)
            if puts:
                self.ctx.records.write(puts)
            if found:
                self._dirty = True  # (and so every profile, once the walk is made again)
            return found

    def _forget_history(self, e: Any) -> None:
        """Drop the kept history of the loan ``e`` is about (``_history``), unless ``e`` is an
        agreement and the history kept has its contract: a loan's record takes its contract
        from the first agreement entry and nothing from the next (loanview.py ``_take``),
        so the other party's entry changes nothing (and came once per contract)."""
        loan = loan_of(e.kind, e.body)
        kept = self._kept.get(loan)
        if kept is not None and not (e.kind == "loan.agreement" and kept[1] is not None):
            del self._kept[loan]

    def _heard(self, e: Any, graph: TrustGraph, check: set[bytes]) -> None:
        """Note a stored agreement or receipt; add its loan to ``check`` if it must be read."""
        try:
            field = "contract" if e.kind == "loan.agreement" else "receipt"
            doc = peek_document(e.body[field])
            loan = embedded_id(e.kind, e.body) if e.kind == "loan.agreement" else doc["loan"]
        except Exception:  # unreadable: the store's validator refused it anyway
            return
        if loan is None or graph.has(loan):
            return
        progress = self._open.get(loan)
        if e.kind == "loan.agreement":
            if progress is None:
                if self._first_about(loan):
                    self._track(loan, doc["principal"], {})
                else:
                    check.add(loan)
            elif progress[0] is None:
                self._track(loan, doc["principal"], progress[1])
                if sum(progress[1].values()) >= doc["principal"]:
                    check.add(loan)
            return
        self._profiles.pop(doc.get("payer"), None)
        self._profiles.pop(doc.get("payee"), None)
        if progress is None:
            check.add(loan)
            return
        if doc.get("what") == "repayment":
            rid = embedded_id(e.kind, e.body)
            progress[1][rid] = doc.get("amount", 0)
            if progress[0] is not None and sum(progress[1].values()) >= progress[0]:
                check.add(loan)

    def _first_about(self, loan: bytes) -> bool:
        """Whether the store holds one entry about ``loan`` (the one just stored)."""
        keys = self.ctx.index.keys(LOAN_INDEX + loan)
        return next(keys, None) is not None and next(keys, None) is None

    def _track(self, loan: bytes, principal: int | None, paid: dict[bytes, int]) -> None:
        """Remember what a loan not repaid needs (at most ``MAX_OPEN`` loans: one forgotten
        is read in full when next heard of)."""
        if loan not in self._open and len(self._open) >= MAX_OPEN:
            self._open.popitem(last=False)
        self._open[loan] = (principal, paid)

    # -- trust and standing ------------------------------------------------------------------

    def masses(self, fresh: bool = False) -> dict[bytes, int]:
        """The viewer's walk (trust.py); made again if repaid loans or fork proofs changed
        and it is older than ``REFRESH_S`` (``FRESH_S`` with ``fresh``)."""
        with self._lock:
            graph = self._loaded()
            now = time.monotonic()
            forked = frozenset(self.ctx.chains.forked_authors()) if fresh or self._walked_at is None \
                else self._forked
            stale = self._dirty or forked != self._forked
            if self._walked_at is None or (stale and now - self._walked_at > (FRESH_S if fresh else REFRESH_S)):
                self._masses = walk(self.me, graph.neighbours, excluded=forked, min_push=self.params.min_push)
                self._walked_at, self._forked, self._dirty = now, forked, False
                self._walks += 1
            return self._masses

    def counterparty(self, author: bytes) -> bool:
        """Whether this node's own chain holds a loan agreement with ``author``."""
        return next(iter(self.ctx.index.keys(GRAPH_INDEX + self.me + author)), None) is not None

    def counterparties(self, limit: int) -> list[bytes]:
        """The keys this node's own chain holds loan agreements with, at most ``limit``."""
        n = len(GRAPH_INDEX) + 32
        out: list[bytes] = []
        for k in self.ctx.index.keys(GRAPH_INDEX + self.me):
            if len(out) >= limit:
                break
            out.append(k[n:n + 32])
        return out

    def standing(self, author: bytes) -> int:
        """3 for this node, 2 for its counterparties, 1 for a key its trust reaches, else 0."""
        if author == self.me:
            return 3
        if self.counterparty(author):
            return 2
        return 1 if self.masses().get(author, 0) > 0 else 0

    of = standing  # (the offer book's name for it)

    # -- profiles ----------------------------------------------------------------------------

    def borrowed(self, author: bytes) -> list[bytes]:
        """Ids of the loans ``author`` borrowed, from the ``W`` index, at most ``max_loans``."""
        out: list[bytes] = []
        n = len(BORROWER_INDEX) + 32
        for k in self.ctx.index.keys(BORROWER_INDEX + author):
            loan = k[n:n + 32]
            if not out or out[-1] != loan:  # (keys are sorted: one loan's keys are adjacent)
                out.append(loan)
                if len(out) >= self.params.max_loans:
                    break
        return out

    def histories(self, author: bytes, today: date) -> list[LoanHistory]:
        """The loans ``author`` borrowed, as the model reads them, at ``today``. Each loan's
        history is kept per day and set of its documents (``_history``): a new walk makes
        every profile stale, not the loans behind it."""
        out = []
        for loan in self.borrowed(author):
            h = self._history(loan, author, today)
            if h is not None:
                out.append(h)
        return out

    def _history(self, loan: bytes, author: bytes, today: date) -> LoanHistory | None:
        """``loan``'s history at ``today``, or None (not ``author``'s, or no schedule): read
        and computed again only when the day changed or an entry about the loan was stored
        since the last time. A stored entry never changes, and every entry about a loan
        (its ``LOAN_INDEX`` key, contract.py ``loan_index``) is stored with a kind lending
        reacts to, so ``take`` sees it and drops the loan's history: a profile asked for
        every contract reads no index for the borrower's other loans (with hundreds of
        them, most of a lender's decision)."""
        hit = self._kept.get(loan)
        if hit is not None and hit[0] == today:
            return hit[1]
        rec = record_of(loan, entries_at(self.ctx.chains, list(self.ctx.index.keys(LOAN_INDEX + loan))))
        h = None
        if rec.contract is not None and rec.contract["borrower"] == author:
            try:
                h = LoanHistory(rec.contract, *rec.evaluated(today))
            except ProtocolError:
                h = None  # a contract whose schedule cannot be made is no history
        if len(self._kept) >= MAX_HISTORIES:
            self._kept.clear()
        self._kept[loan] = (today, h)
        return h

    def profile(self, author: bytes) -> Profile:
        """``author``'s credit in this node's eyes today (module docstring)."""
        today = self.ctx.clock.today()
        with self._lock:
            masses = self.masses(fresh=True)
            hit = self._profiles.get(author)
            if hit is not None and hit[:2] == (today, self._walks):
                return hit[2]
            graph, forked = self._loaded(), self._forked
            loans = self.histories(author, today)
            excluded = forked | {author}
            own = masses if author not in masses or author == self.me else walk(
                self.me, graph.neighbours, excluded=excluded, min_push=self.params.min_push)
            weights = lender_weights(author, self.me, graph.neighbours, own, excluded=forked)
            seen = {k: d for k in {author, *(h.contract["lender"] for h in loans)}
                    if (d := self.first_seen(k)) is not None}
            p = profile(author, loans, viewer=self.me, today=today, lender_weights=weights, first_seen=seen,
                        forked=author in forked or author in self.ctx.chains.forked_authors(),
                        key_mass=masses.get(author, 0), params=self.params)
            if len(self._profiles) >= MAX_PROFILES:
                self._profiles.clear()
            self._profiles[author] = (today, self._walks, p)
            return p

    def grade(self, author: bytes) -> str:
        return self.profile(author).grade


def profile_json(p: Profile, explain: bool = True) -> dict[str, Any]:
    """A profile as the control API gives it: keys as peer IDs; factors only to explain."""
    from protocol.lending.money import format_amount

    out = p.to_json()
    out["peer"] = peer_id(p.key)
    del out["key"]
    out["owed_by_lender"] = {peer_id(k): dict(sorted(v.items())) for k, v in sorted(p.owed_by_lender.items())}
    out["max_amount_text"] = {c: _amount(format_amount, a, c) for c, a in out["max_amount"].items()}
    out["owed_text"] = {c: _amount(format_amount, a, c) for c, a in out["owed"].items()}
    if not explain:
        del out["factors"]
    return out


def _amount(fmt: Any, amount: int, currency: str) -> str:
    from protocol.lending.money import MoneyError

    try:
        return fmt(amount, currency)
    except MoneyError:  # a currency the money module does not know: the count of minor units
        return str(amount)


def summary(p: Profile) -> dict[str, Any]:
    """A short line of credit for a proposal under review or an offer's author."""
    return {"grade": p.grade, "score": p.score, "repaid": p.repaid, "paid_late": p.paid_late,
            "defaulted": p.defaulted, "days_past_due": p.days_past_due, "owed": dict(sorted(p.owed.items())),
            "verified_age_days": p.verified_age_days, "forked": p.forked}
