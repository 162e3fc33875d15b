"""The offer book's admission rules (protocol/lending/book.py): each rule, the tables as
printed, and a model book fed offers, cancellations and time by hypothesis."""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from protocol.keys import SigningKey
from protocol.lending import book
from protocol.lending.book import (
    BOOK_TTL_MS, CANCEL_GATES, LIMITS, MAX_BOOK, MAX_ORPHANS, MAX_PER_AUTHOR, MAX_PER_STRANGER, MAX_SKEW_MS,
    OFFER_GATES, REFUSALS, Add, Cancel, Duplicate, Limits, Refresh, Refuse, admit, admit_cancel, admit_offer,
)
from protocol.lending.offer import MAX_OFFER_MS, make_cancel, make_offer, offer_of, parse_book_message

T0 = 1_790_000_000_000
DAY = 24 * 3600 * 1000
A, B, C, X, Y = (bytes([ch]) * 32 for ch in b"ABCXY")  # authors A, B, C; X and Y only ever cancel


class FakeOffer(NamedTuple):
    """What the rules read of an offer."""

    id: bytes
    author: bytes
    created: int
    expires: int


def offer(n: int, author: bytes = A, created: int = T0, life: int = DAY) -> FakeOffer:
    return FakeOffer(hashlib.sha256(b"offer %d" % n).digest(), author, created, created + life)


def cancel(o: FakeOffer, author: bytes | None = None, created: int = T0) -> dict:
    return {"type": "offer.cancel", "offer": o.id, "author": author or o.author, "created": created}


class ModelBook:
    """A book as the rules see it, kept in step with the decisions as a node applies them:
    offers by id, cancellations by (offer id, author), the purge index (one ``until`` per
    id, the latest asked for), and a purge of what is due."""

    def __init__(self, standings: dict[bytes, int] | None = None, me: bytes | None = None) -> None:
        self.offers: dict[bytes, FakeOffer] = {}
        self.cancels: set[tuple[bytes, bytes]] = set()
        self.until: dict[bytes, int] = {}
        # the authors' standing (rule 5): A, B and C have some, anyone else none
        self.standings = {A: 1, B: 1, C: 1} if standings is None else standings
        self.me = me

    # the view
    def held(self, offer_id):
        return self.offers.get(offer_id)

    def cancelled(self, offer_id, author):
        return (offer_id, author) in self.cancels

    def size(self):
        return len(self.offers)

    def live(self, author, now_ms):
        return sum(1 for o in self.offers.values() if o.author == author and now_ms < o.expires)

    def orphans(self):
        return sum(1 for i, _ in self.cancels if i not in self.offers)

    def standing(self, author):
        return self.standings.get(author, 0)

    def own(self, author):
        return author == self.me

    def weakest(self):
        if not self.offers:
            return None
        o = min(self.offers.values(), key=lambda o: (self.standing(o.author), -o.created, o.id))
        return o.id, self.standing(o.author)

    # the node's side
    def apply(self, item, d) -> None:
        if isinstance(d, Add):
            if d.evicts is not None:
                del self.offers[d.evicts]
                self.until.pop(d.evicts, None)
            self.offers[d.offer_id] = item
        elif isinstance(d, Refresh):
            pass
        elif isinstance(d, Cancel):
            self.cancels.add((d.offer_id, d.author))
            if d.removes:
                del self.offers[d.offer_id]
        else:
            return
        self.until[d.offer_id] = max(d.until, self.until.get(d.offer_id, 0))

    def purge(self, now_ms: int) -> list[bytes]:
        gone = [i for i, until in self.until.items() if until <= now_ms]
        for i in gone:
            del self.until[i]
            self.offers.pop(i, None)
            self.cancels -= {(j, a) for j, a in self.cancels if j == i}
        return gone


def fed(view: ModelBook, item, now=T0, limits=LIMITS):
    d = admit(item, view, now, limits)
    view.apply(item, d)
    return d


# -- rule 1: offers ----------------------------------------------------------------------------


def test_a_new_live_offer_is_added_until_it_expires_or_is_not_heard_for_the_ttl():
    v, o = ModelBook(), offer(1, life=60_000)
    d = fed(v, o)
    assert d == Add(o.id, o.expires) and d.outcome == "added"  # (it expires within the ttl)
    assert fed(v, o) == Refresh(o.id, o.expires) and Refresh(o.id, 0).outcome == "refreshed"
    long = offer(2, life=30 * DAY)
    assert fed(v, long) == Add(long.id, T0 + BOOK_TTL_MS)
    assert fed(v, long, now=T0 + 60_000) == Refresh(long.id, T0 + 60_000 + BOOK_TTL_MS)  # heard again
    v.purge(T0 + 60_000 + BOOK_TTL_MS)  # not heard since: gone
    assert long.id not in v.offers
    mine = ModelBook(me=A)
    assert fed(mine, long) == Add(long.id, long.expires)  # our own offers stay until they expire


def test_an_expired_offer_is_refused():
    o = offer(1)
    assert admit_offer(o, ModelBook(), o.expires) == Refuse("offer_expired", "the offer has expired")
    assert isinstance(admit_offer(o, ModelBook(), o.expires - 1), Add)


def test_an_offer_from_more_than_a_day_ahead_is_refused():
    o = offer(1, created=T0 + MAX_SKEW_MS + 1)
    assert admit_offer(o, ModelBook(), T0) == Refuse(
        "bad_time", "the offer was created more than a day ahead of this node's clock")
    assert isinstance(admit_offer(offer(1, created=T0 + MAX_SKEW_MS), ModelBook(), T0), Add)


def test_an_offer_cancelled_by_its_author_stays_out_and_a_strangers_cancellation_does_not_keep_it_out():
    v, o = ModelBook(), offer(1)
    assert fed(v, cancel(o, X)) == Cancel(o.id, X, T0 + MAX_OFFER_MS, removes=False)
    assert fed(v, cancel(o)) == Cancel(o.id, A, T0 + MAX_OFFER_MS, removes=False)
    assert fed(v, o) == Refuse("offer_cancelled", "the offer was cancelled")
    w = ModelBook()
    fed(w, cancel(o, X))
    assert isinstance(fed(w, o), Add)


def test_the_book_has_a_limit_and_expired_offers_count_until_purged():
    small = Limits(max_book=2, max_per_author=10, max_orphans=1)
    v = ModelBook()
    assert [fed(v, offer(n, life=10), limits=small).outcome for n in (1, 2)] == ["added", "added"]
    assert fed(v, offer(3, author=B), limits=small) == Refuse("book_full", "the offer book holds 2 offers")
    assert admit_offer(offer(3, author=B, created=T0 + 10), v, T0 + 10, small).code == "book_full"
    v.purge(T0 + 10)
    assert isinstance(admit_offer(offer(3, author=B, created=T0 + 10), v, T0 + 10, small), Add)


def test_each_author_has_a_limit_of_live_offers():
    small = Limits(max_book=10, max_per_author=2, max_orphans=1)
    v = ModelBook()
    assert [fed(v, offer(n, life=10 * n), limits=small).outcome for n in (1, 2, 3)] == ["added", "added", "refused"]
    assert admit_offer(offer(3, life=50), v, T0, small) == Refuse("too_many_offers",
                                                                  "the author has 2 live offers already")
    assert isinstance(admit_offer(offer(4, author=B), v, T0, small), Add)  # another author's are apart
    assert isinstance(admit_offer(offer(3, life=50), v, T0 + 10, small), Add)  # offer 1 has expired


def test_the_default_limits_and_their_messages():
    assert (MAX_BOOK, MAX_PER_AUTHOR, MAX_ORPHANS, MAX_SKEW_MS) == (10_000, 100, 10_000, 86_400_000)
    assert (MAX_PER_STRANGER, BOOK_TTL_MS) == (10, 600_000)
    assert LIMITS == Limits(MAX_BOOK, MAX_PER_AUTHOR, MAX_ORPHANS, MAX_PER_STRANGER, BOOK_TTL_MS)
    full = ModelBook(standings={})
    full.offers = {bytes([n % 256, n // 256]) * 16: offer(n, author=bytes([n % 200]) * 32) for n in range(MAX_BOOK)}
    assert admit_offer(offer(10**6), full, T0) == Refuse("book_full", "the offer book holds 10000 offers")
    many = ModelBook()
    many.offers = {offer(n).id: offer(n) for n in range(MAX_PER_AUTHOR)}
    assert admit_offer(offer(10**6), many, T0) == Refuse("too_many_offers", "the author has 100 live offers already")
    strange = ModelBook(standings={})
    strange.offers = {offer(n).id: offer(n) for n in range(MAX_PER_STRANGER)}
    assert admit_offer(offer(10**6), strange, T0) == Refuse("too_many_offers", "the author has 10 live offers already")
    orphaned = ModelBook()
    orphaned.cancels = {(offer(n).id, A) for n in range(MAX_ORPHANS)}
    assert admit_cancel(cancel(offer(10**6)), orphaned, T0) == Refuse(
        "book_full", "10000 cancellations of offers not held are kept already")
    with pytest.raises(AssertionError):
        Limits(max_book=0)


# -- rule 2: cancellations ---------------------------------------------------------------------------


def test_the_authors_cancellation_removes_its_offer_until_the_offer_expires():
    v, o = ModelBook(), offer(1)
    fed(v, o)
    d = fed(v, cancel(o, created=T0 + 5))
    assert d == Cancel(o.id, A, o.expires, removes=True) and d.outcome == "cancelled"
    assert v.offers == {} and fed(v, cancel(o, created=T0 + 5)) == Duplicate()
    assert fed(v, o, now=T0 + 1) == Refuse("offer_cancelled", "the offer was cancelled")


def test_a_strangers_cancellation_of_a_held_offer_is_refused():
    v, o = ModelBook(), offer(1)
    fed(v, o)
    assert fed(v, cancel(o, X)) == Refuse("not_yours", "a cancellation by someone other than the offer's author")
    assert o.id in v.offers


def test_a_cancellation_from_ahead_or_too_old_is_refused():
    o = offer(1)
    assert admit_cancel(cancel(o, created=T0 + MAX_SKEW_MS + 1), ModelBook(), T0) == Refuse(
        "bad_time", "the cancellation was created more than a day ahead of this node's clock")
    assert admit_cancel(cancel(o, created=T0 - MAX_OFFER_MS), ModelBook(), T0) == Refuse(
        "stale_cancel", "a cancellation older than any offer it could cancel")
    assert isinstance(admit_cancel(cancel(o, created=T0 - MAX_OFFER_MS + 1), ModelBook(), T0), Cancel)
    # a held offer is cancelled whatever the cancellation's age: it is the author's word
    v = ModelBook()
    fed(v, o)
    assert admit_cancel(cancel(o, created=T0 - MAX_OFFER_MS), v, T0).removes


def test_orphans_have_a_limit_and_held_offers_do_not_count_against_it():
    small = Limits(max_book=5, max_per_author=5, max_orphans=2)
    v = ModelBook()
    assert [fed(v, cancel(offer(n)), limits=small).outcome for n in (1, 2, 3)] == ["cancelled", "cancelled",
                                                                                 "refused"]
    assert admit_cancel(cancel(offer(3)), v, T0, small).code == "book_full"
    fed(v, offer(4), limits=small)
    assert fed(v, cancel(offer(4)), limits=small).removes  # the offer was held: no orphan limit
    assert v.orphans() == 3  # ... though its cancellation is an orphan from now on


def test_the_checks_run_in_the_tables_order():
    o = offer(1, created=T0 + 2 * DAY, life=DAY)
    v = ModelBook()
    v.cancels.add((o.id, A))
    assert admit_offer(o, v, T0 + 3 * DAY).code == "offer_expired"  # before bad_time, offer_cancelled
    assert admit_offer(o, v, T0).code == "bad_time"  # before offer_cancelled
    w = ModelBook()
    fed(w, offer(2))
    assert admit_cancel(cancel(offer(2), X, created=T0 + 2 * DAY), w, T0).code == "not_yours"  # before bad_time


def test_admit_takes_what_the_offers_topic_carries():
    key = SigningKey.from_seed(hashlib.sha256(b"book").digest())
    env = make_offer(key, side="lend", currency="EUR", min_amount=100, max_amount=1000, rate_bp=700, term="3m",
                     created=T0, expires=T0 + DAY)
    v = ModelBook()
    item = parse_book_message(env.raw)
    assert fed(v, item) == Add(env.id, T0 + BOOK_TTL_MS) and v.held(env.id) == offer_of(env)
    c = parse_book_message(make_cancel(key, env.id, T0 + 1).raw)
    assert fed(v, c, now=T0 + 2) == Cancel(env.id, key.public_key, T0 + DAY, removes=True)


# -- the tables as printed -------------------------------------------------------------------------


def _tables(doc: str) -> list[list[tuple[str, str, str]]]:
    """The simple tables of the docstring; a line with a blank 'else' column continues the
    row above (its first and last columns)."""
    lines = doc.splitlines()
    borders = [i for i, line in enumerate(lines) if re.fullmatch(r"=+( +=+){2}", line)]
    tables = []
    for head, top, end in zip(borders[0::3], borders[1::3], borders[2::3]):
        spans = [m.start() for m in re.finditer(r"=+", lines[head])]
        rows: list[list[str]] = []
        for line in lines[top + 1:end]:
            cells = [line[a:b].strip() for a, b in zip(spans, spans[1:] + [None])]
            if cells[1]:
                rows.append(cells)
            else:
                rows[-1] = [(x + " " + y).strip() for x, y in zip(rows[-1], cells)]
        tables.append([tuple(r) for r in rows])
    return tables


def test_the_printed_tables_are_the_tables():
    assert _tables(book.__doc__) == [[g[:3] for g in OFFER_GATES], [g[:3] for g in CANCEL_GATES]]
    assert REFUSALS == {"offer_expired", "bad_time", "offer_cancelled", "book_full", "too_many_offers", "not_yours",
                        "stale_cancel"}


# -- a model book, fed at random -----------------------------------------------------------------------

SMALL = Limits(max_book=5, max_per_author=2, max_orphans=3)
AUTHORS, STRANGERS = [A, B, C], [X, Y]


class BookMachine(RuleBasedStateMachine):
    """Offers by three authors, cancellations by their authors and by strangers (X, Y, and
    the other authors), time moving on and the node's purge, against small limits."""

    offers = Bundle("offers")

    @initialize()
    def start(self):
        self.book = ModelBook()
        self.now = T0
        self.made: dict[bytes, FakeOffer] = {}  # every offer made, by id
        self.author_cancelled: set[bytes] = set()  # ids whose author's cancellation the book kept

    @rule(target=offers, author=st.sampled_from([A, A, A, B, C]), ahead=st.integers(-2 * DAY, 2 * DAY),
          life=st.one_of(st.integers(1, 3 * DAY), st.integers(1, MAX_OFFER_MS)))
    def make(self, author, ahead, life):
        o = offer(len(self.made) + 1, author, self.now + ahead, life)
        self.made[o.id] = o
        return o

    def _feed(self, item):
        d = admit(item, self.book, self.now, SMALL)
        assert admit(item, self.book, self.now, SMALL) == d  # a pure function of its inputs
        event(d.code if isinstance(d, Refuse) else d.outcome)  # (--hypothesis-show-statistics)
        self.book.apply(item, d)
        return d

    @rule(o=offers)
    def feed_offer(self, o):
        held_before = o.id in self.book.offers
        d = self._feed(o)
        if isinstance(d, Add):
            assert self.now < o.expires and o.created <= self.now + MAX_SKEW_MS  # nothing expired is admitted
            assert not held_before
        elif isinstance(d, Refuse) and d.code == "offer_cancelled":
            assert (o.id, o.author) in self.book.cancels  # only the author's cancellation keeps it out
        else:
            assert isinstance(d, Refresh) == held_before

    @rule(o=offers, later=st.integers(0, 2 * DAY))
    def authors_cancel(self, o, later):
        held = o.id in self.book.offers
        c = cancel(o, created=max(o.created, self.now - later))  # made after the offer, by the author's clock
        d = self._feed(c)
        if isinstance(d, Cancel):
            self.author_cancelled.add(o.id)
            assert d.removes == held
        if held and c["created"] <= self.now + MAX_SKEW_MS and not isinstance(d, Duplicate):
            assert isinstance(d, Cancel) and d.removes  # a held offer: nothing stops its author
        if isinstance(d, Refuse):
            assert d.code in ("bad_time", "stale_cancel") or (d.code == "book_full" and not held)

    @rule(o=offers, who=st.sampled_from(STRANGERS + AUTHORS),
          created=st.one_of(st.integers(-2 * DAY, 2 * DAY), st.integers(-MAX_OFFER_MS - DAY, -MAX_OFFER_MS + DAY)))
    def strangers_cancel(self, o, who, created):
        if who == o.author:
            return
        held = o.id in self.book.offers
        d = self._feed(cancel(o, who, created=self.now + created))
        assert not (isinstance(d, Cancel) and d.removes)  # a stranger's never removes an offer
        assert (o.id in self.book.offers) == held
        if held:  # refused, or one kept from before the offer came (nothing to do again)
            assert d == Refuse("not_yours", "a cancellation by someone other than the offer's author") or (
                d == Duplicate() and (o.id, who) in self.book.cancels)

    @rule(ms=st.one_of(st.integers(1, 1000), st.integers(1, 30 * DAY)))
    def time_passes(self, ms):
        self.now += ms

    @rule()
    def purge(self):
        for i in self.book.purge(self.now):
            if i in self.author_cancelled:
                # the author's cancellation goes only once the offer it cancels has expired
                assert self.now >= self.made[i].expires
                self.author_cancelled.discard(i)

    @invariant()
    def within_the_limits(self):
        if not hasattr(self, "book"):
            return
        assert self.book.size() <= SMALL.max_book
        for a in AUTHORS:
            assert self.book.live(a, self.now) <= SMALL.max_per_author

    @invariant()
    def an_authors_cancellation_keeps_its_offer_out(self):
        if not hasattr(self, "book"):
            return
        for i, a in self.book.cancels:
            o = self.book.offers.get(i)
            assert o is None or o.author != a
        assert not self.author_cancelled & self.book.offers.keys()


BookMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestBook = BookMachine.TestCase


# -- rule 5: standing ------------------------------------------------------------------------------


def test_a_full_book_evicts_the_weakest_authors_offer_and_never_for_a_stranger():
    """Issue 9, item 4: 120 free keys filled every book and honest offers got book_full.
    A full book takes an offer only in place of one whose author has a lower standing."""
    small = Limits(max_book=3, max_per_author=3, max_orphans=1, max_per_stranger=2)
    v = ModelBook(standings={A: 2, B: 1})
    squat = [offer(n, author=bytes([n]) * 32, created=T0 + n) for n in (10, 11, 12)]  # three free keys
    assert [fed(v, o, limits=small).outcome for o in squat] == ["added"] * 3
    newcomer = offer(13, author=bytes([13]) * 32)
    assert fed(v, newcomer, limits=small) == Refuse("book_full", "the offer book holds 3 offers")  # stranger vs strangers
    b = offer(20, author=B)
    assert fed(v, b, limits=small) == Add(b.id, T0 + BOOK_TTL_MS, evicts=squat[2].id)  # the latest stranger's goes
    a1, a2 = offer(21, author=A, created=T0 + 1), offer(22, author=A, created=T0 + 2)
    assert fed(v, a1, limits=small).evicts == squat[1].id
    assert fed(v, a2, limits=small).evicts == squat[0].id
    assert fed(v, offer(23, author=A), limits=small).evicts == b.id  # B's standing is below A's
    assert admit_offer(offer(24, author=B), v, T0, small).code == "book_full"  # A's are not below B's


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), min_size=1, max_size=40))
def test_no_offer_is_ever_evicted_by_an_author_of_the_same_or_lower_standing(feed):
    small = Limits(max_book=4, max_per_author=4, max_orphans=1, max_per_stranger=2)
    authors = [bytes([k]) * 32 for k in range(6)]
    v = ModelBook(standings={authors[k]: k % 4 for k in range(6)})
    for n, (_, k) in enumerate(feed):
        o = offer(n, author=authors[k], created=T0 + n)
        d = fed(v, o, limits=small)
        if isinstance(d, Add) and d.evicts is not None:
            assert d.evicts not in v.offers
            evicted = next(x for x in [offer(m, author=authors[feed[m][1]], created=T0 + m) for m in range(n)]
                           if x.id == d.evicts)
            assert v.standing(evicted.author) < v.standing(o.author)
        assert v.size() <= small.max_book
