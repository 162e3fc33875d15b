"""The offer book's admission rules: whether an offer or a cancellation enters the book.

``admit`` is a pure function of the verified item (offer.py's ``Offer`` or cancellation),
a read-only ``BookView`` of the book and the time ``now_ms``: it returns a decision, and
the node applies it (one write batch) or reports it. No I/O and no clock here, so the
rules are tested without a store, and every node applies the same ones.

Rules of this file (docs/protocol.md, "Offers"; the store is the node's,
p2pnode/lending/offers.py):

1. An offer is added if it is new, has not expired, was not created more than
   ``MAX_SKEW_MS`` ahead of our clock, and has no cancellation by its author; and if the
   book holds fewer than ``max_book`` offers, or one whose author has a lower standing
   than this offer's (rule 5: the weakest such offer is evicted, ``Add.evicts``); and if
   its author has fewer live ones than its cap (``max_per_author``, or
   ``max_per_stranger`` for an author of standing 0). The decision is ``Add``; ``until``
   (when its records may be purged) is its ``expires`` for our own offers, else the
   earlier of ``expires`` and ``now + BOOK_TTL_MS``. One the book holds already is a
   ``Refresh``: its author's node republishes its live offers while it runs, and each
   copy heard moves ``until`` to the earlier of ``expires`` and ``now + BOOK_TTL_MS``;
   so an offer nobody refreshes (its author went away, or a squatter stopped paying for
   the bandwidth) leaves every book within ``BOOK_TTL_MS`` (the anchor is Bisq's offers,
   which live minutes and are refreshed by their online owner).
2. A cancellation is kept once per offer and author: the same again is a ``Duplicate``.
   One for an offer the book holds must be by the offer's author (``not_yours``); it
   removes the offer. One for an offer not held (yet) is kept as an *orphan*, so that
   the offer never enters if it comes later: if its ``created`` is within the last
   ``MAX_OFFER_MS`` (``stale_cancel`` otherwise: any offer it could cancel has expired)
   and at most ``max_orphans`` orphans are kept (``book_full``). No cancellation
   created more than ``MAX_SKEW_MS`` ahead of our clock is kept (``bad_time``). The
   decision is ``Cancel``; ``until`` is the offer's ``expires`` if it is held (the offer
   is refused after that anyway), else ``created + MAX_OFFER_MS`` (no offer cancelled
   after it was created outlives that).
3. So an author's cancellation removes its offer and keeps it out while the offer
   lives; a stranger's never removes an offer, and since each author's cancellation is
   kept apart, never takes the place of the author's nor keeps the author's offer out.
   (A book that keeps one cancellation per offer, the last one, loses the author's if a
   stranger's for the same offer arrives after it and before the offer: rule 3 needs
   the view's ``cancelled`` to answer per author.)
4. The checks run in the order of the tables below; the first that fails decides.
   Only a limit's value may vary (``Limits``, for tests); codes and messages are
   stable (``REFUSALS``; docs/api.md lists them under ``offers.refused.CODE``).
5. Standing (``BookView.standing``) is what the viewer can verify of an author: 0 for
   a stranger, higher for an author its credit vouches for (its own key highest, then
   its counterparties, then keys its trust reaches through repaid loans;
   p2pnode/lending/credit.py). Keys are free, so a
   stranger's offers never push out an offer whose author has standing: a full book
   evicts only offers by authors of *lower* standing than the newcomer's, the weakest
   first (lowest standing, then the latest created), and strangers among themselves
   are first come, first served.

An offer (``admit_offer``; one the book holds already is a ``Refresh``, before any row):

===========================================  ===============  =================================================
admitted only if                             else             message
===========================================  ===============  =================================================
now < expires                                offer_expired    the offer has expired
created <= now + MAX_SKEW_MS                 bad_time         the offer was created more than a day ahead of
                                                              this node's clock
its author has not cancelled it              offer_cancelled  the offer was cancelled
the book holds < max_book offers, or one by  book_full        the offer book holds {max_book} offers
an author of lower standing (rule 5)
its author has fewer live offers than its    too_many_offers  the author has {cap} live offers already
cap (rule 1)
===========================================  ===============  =================================================

A cancellation (``admit_cancel``):

===========================================  ===============  =================================================
admitted only if                             else             message
===========================================  ===============  =================================================
the book does not keep it from this author   duplicate        the book keeps this cancellation already
the offer is not held, or is the author's    not_yours        a cancellation by someone other than the offer's
                                                              author
created <= now + MAX_SKEW_MS                 bad_time         the cancellation was created more than a day
                                                              ahead of this node's clock
the offer is held, or created +              stale_cancel     a cancellation older than any offer it could
MAX_OFFER_MS > now                                            cancel
the offer is held, or < max_orphans orphans  book_full        {max_orphans} cancellations of offers not held
are kept                                                      are kept already
===========================================  ===============  =================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple, Protocol, Union

from .offer import MAX_OFFER_MS, Offer

MAX_BOOK = 10_000
"""Offers a book holds at most."""
MAX_PER_AUTHOR = 100
"""Live offers a book holds at most per author of some standing."""
MAX_PER_STRANGER = 10
"""Live offers a book holds at most per author of standing 0 (rule 5)."""
BOOK_TTL_MS = 10 * 60 * 1000
"""How long another author's offer stays in the book after it was last heard (rule 1)."""
MAX_ORPHANS = 10_000
"""Cancellations kept for offers not (or no longer) in the book."""
MAX_SKEW_MS = 24 * 3600 * 1000
"""How far ahead of our clock an offer's or cancellation's ``created`` may be."""


@dataclass(frozen=True)
class Limits:
    """The book's limits (rule 4): the defaults everywhere but in tests that reach them."""

    max_book: int = MAX_BOOK
    max_per_author: int = MAX_PER_AUTHOR
    max_orphans: int = MAX_ORPHANS
    max_per_stranger: int = MAX_PER_STRANGER  # (never more than max_per_author: see ``stranger_cap``)
    ttl_ms: int = BOOK_TTL_MS

    def __post_init__(self) -> None:
        assert self.max_book >= 1 and self.max_per_author >= 1 and self.max_orphans >= 1, self
        assert self.max_per_stranger >= 1 and self.ttl_ms >= 1, self

    @property
    def stranger_cap(self) -> int:
        return min(self.max_per_stranger, self.max_per_author)


LIMITS = Limits()


class HeldOffer(Protocol):
    """What the rules read of an offer the book holds (offer.py's ``Offer`` is one)."""

    @property
    def author(self) -> bytes: ...

    @property
    def expires(self) -> int: ...


class BookView(Protocol):
    """A read-only view of the book, as ``admit`` needs it. Every answer is about the
    records the book holds now (expired ones not purged yet included)."""

    def held(self, offer_id: bytes) -> HeldOffer | None:
        """The offer with this id if the book holds it."""

    def cancelled(self, offer_id: bytes, author: bytes) -> bool:
        """Whether the book keeps a cancellation of ``offer_id`` signed by ``author``."""

    def size(self) -> int:
        """How many offers the book holds."""

    def live(self, author: bytes, now_ms: int) -> int:
        """How many offers by ``author`` the book holds that are live at ``now_ms``
        (``offer.is_live``) and not taken in full: an offer whose parts, as the agreements
        of its author's chain that this node holds show them (fill.py), reach its amount
        can be taken no more, and must not hold one of its author's places until its
        cancellation arrives (gossip may lose it; then only ``BOOK_TTL_MS`` removes it)."""

    def orphans(self) -> int:
        """How many cancellations the book keeps of offers it does not hold."""

    def standing(self, author: bytes) -> int:
        """``author``'s standing in the viewer's eyes (rule 5): 0 for a stranger."""

    def own(self, author: bytes) -> bool:
        """Whether ``author`` is the viewer itself."""

    def weakest(self) -> tuple[bytes, int] | None:
        """``(offer id, its author's standing)`` of the held offer rule 5 evicts first
        (lowest standing, then the latest created), or None if the book is empty."""


# -- decisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Add:
    """Store the offer; its records may go at ``until`` (ms)."""

    offer_id: bytes
    until: int
    evicts: bytes | None = None  # the offer it takes the place of (rule 5), removed in the same write
    outcome: ClassVar[str] = "added"


@dataclass(frozen=True)
class Refresh:
    """The book holds this offer: its records may now go at ``until`` (ms), if later."""

    offer_id: bytes
    until: int
    outcome: ClassVar[str] = "refreshed"


@dataclass(frozen=True)
class Cancel:
    """Store the cancellation of ``offer_id`` by ``author``, and remove the offer if
    ``removes`` (the book holds it); the records may go at ``until`` (ms)."""

    offer_id: bytes
    author: bytes
    until: int
    removes: bool
    outcome: ClassVar[str] = "cancelled"


@dataclass(frozen=True)
class Duplicate:
    """The book has this already: nothing to do."""

    outcome: ClassVar[str] = "duplicate"


@dataclass(frozen=True)
class Refuse:
    """Not admitted: a stable code and a message."""

    code: str
    message: str
    outcome: ClassVar[str] = "refused"


Decision = Union[Add, Refresh, Cancel, Duplicate, Refuse]


# -- the tables ------------------------------------------------------------------------------


class _Ask(NamedTuple):
    """One admission question: the item's fields, the book, the time and the limits."""

    offer_id: bytes
    author: bytes
    created: int
    expires: int | None  # an offer's; None for a cancellation
    held: HeldOffer | None
    view: BookView
    now_ms: int
    limits: Limits
    standing: int = 0  # the author's (rule 5); an offer's only

    def cap(self) -> int:
        """How many live offers the author may have in the book (rule 1)."""
        return self.limits.max_per_author if self.standing > 0 else self.limits.stranger_cap

    def room(self) -> bool:
        """Whether the book has a slot for this offer, free or taken by a weaker author."""
        if self.view.size() < self.limits.max_book:
            return True
        weakest = self.view.weakest()
        return weakest is not None and weakest[1] < self.standing


class Gate(NamedTuple):
    """One row of a table: ``test`` must hold, else the item is refused with ``code``
    and ``message`` (a template over the limits), or is a ``Duplicate``."""

    condition: str
    code: str
    message: str
    test: Callable[[_Ask], bool]


OFFER_GATES: tuple[Gate, ...] = (
    Gate("now < expires", "offer_expired", "the offer has expired",
         lambda q: q.now_ms < q.expires),  # type: ignore[operator]
    Gate("created <= now + MAX_SKEW_MS", "bad_time", "the offer was created more than a day ahead of this node's clock",
         lambda q: q.created <= q.now_ms + MAX_SKEW_MS),
    Gate("its author has not cancelled it", "offer_cancelled", "the offer was cancelled",
         lambda q: not q.view.cancelled(q.offer_id, q.author)),
    Gate("the book holds < max_book offers, or one by an author of lower standing (rule 5)", "book_full",
         "the offer book holds {max_book} offers", lambda q: q.room()),
    Gate("its author has fewer live offers than its cap (rule 1)", "too_many_offers",
         "the author has {cap} live offers already",
         lambda q: q.view.live(q.author, q.now_ms) < q.cap()),
)
"""Rule 1, the first table of this file's docstring."""

CANCEL_GATES: tuple[Gate, ...] = (
    Gate("the book does not keep it from this author", "duplicate", "the book keeps this cancellation already",
         lambda q: not q.view.cancelled(q.offer_id, q.author)),
    Gate("the offer is not held, or is the author's", "not_yours",
         "a cancellation by someone other than the offer's author",
         lambda q: q.held is None or q.held.author == q.author),
    Gate("created <= now + MAX_SKEW_MS", "bad_time",
         "the cancellation was created more than a day ahead of this node's clock",
         lambda q: q.created <= q.now_ms + MAX_SKEW_MS),
    Gate("the offer is held, or created + MAX_OFFER_MS > now", "stale_cancel",
         "a cancellation older than any offer it could cancel",
         lambda q: q.held is not None or q.created + MAX_OFFER_MS > q.now_ms),
    Gate("the offer is held, or < max_orphans orphans are kept", "book_full",
         "{max_orphans} cancellations of offers not held are kept already",
         lambda q: q.held is not None or q.view.orphans() < q.limits.max_orphans),
)
"""Rule 2, the second table of this file's docstring."""

REFUSALS = frozenset(g.code for g in OFFER_GATES + CANCEL_GATES if g.code != "duplicate")
"""Every code a ``Refuse`` may carry (the node counts gossip refused as ``offers.refused.CODE``)."""


def _first_failing(gates: tuple[Gate, ...], q: _Ask) -> Decision | None:
    for gate in gates:
        if not gate.test(q):
            if gate.code == "duplicate":
                return Duplicate()
            limits = q.limits
            return Refuse(gate.code, gate.message.format(max_book=limits.max_book, cap=q.cap(),
                                                         max_orphans=limits.max_orphans))
    return None


# -- admission -------------------------------------------------------------------------------


def admit_offer(o: Offer, view: BookView, now_ms: int, limits: Limits = LIMITS) -> Decision:
    """Rule 1: whether the verified offer ``o`` enters the book at ``now_ms``. ``Add``,
    ``Duplicate`` or ``Refuse``; the view is only read."""
    held = view.held(o.id)
    own = view.own(o.author)
    until = o.expires if own else min(o.expires, now_ms + limits.ttl_ms)
    if held is not None:
        return Refresh(o.id, until)
    q = _Ask(o.id, o.author, o.created, o.expires, held, view, now_ms, limits, view.standing(o.author))
    decided = _first_failing(OFFER_GATES, q)
    if decided is not None:
        return decided
    evicts = None
    if view.size() >= limits.max_book:
        weakest = view.weakest()
        assert weakest is not None and weakest[1] < q.standing, "room() let it in"
        evicts = weakest[0]
    return Add(o.id, until, evicts)


def admit_cancel(cancel: dict, view: BookView, now_ms: int, limits: Limits = LIMITS) -> Decision:
    """Rule 2: whether the verified cancellation ``cancel`` (``offer.cancel_of``: a dict
    with ``offer``, ``author``, ``created``) is kept at ``now_ms``. ``Cancel``,
    ``Duplicate`` or ``Refuse``; the view is only read."""
    offer_id, author, created = cancel["offer"], cancel["author"], cancel["created"]
    held = view.held(offer_id)
    q = _Ask(offer_id, author, created, None, held, view, now_ms, limits)
    decided = _first_failing(CANCEL_GATES, q)
    if decided is not None:
        return decided
    if held is None:
        return Cancel(offer_id, author, created + MAX_OFFER_MS, removes=False)
    return Cancel(offer_id, author, held.expires, removes=True)


def admit(item: Offer | dict, view: BookView, now_ms: int, limits: Limits = LIMITS) -> Decision:
    """Whether a verified offers-topic item (``offer.parse_book_message``: an ``Offer`` or
    a cancellation) enters the book: ``admit_offer`` or ``admit_cancel``."""
    if isinstance(item, dict):
        return admit_cancel(item, view, now_ms, limits)
    return admit_offer(item, view, now_ms, limits)

