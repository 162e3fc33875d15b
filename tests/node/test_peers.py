"""The peer book (p2pnode/net/peers.py): backoff, bans and what gets dialed."""

from __future__ import annotations

from p2pnode.net.peers import BACKOFF_MAX, BAN_SECONDS, REDIAL_MAX, REDIAL_PATIENCE, PeerBook

ME, A, B, C = (bytes([i]) * 32 for i in range(4))


def test_own_key_is_never_learned():
    book = PeerBook(ME)
    assert not book.learn(ME, ["/ip4/127.0.0.1/tcp/1"])
    assert book.to_dial(set(), 0.0, 10) == []


def test_failed_dials_back_off_up_to_the_cap_and_success_resets():
    book = PeerBook(ME)
    book.learn(A, ["/ip4/127.0.0.1/tcp/1"])
    now = 0.0
    delays = []
    for _ in range(12):
        book.dialed(A, False, now)
        delays.append(book.get(A).next_dial - now)
    assert delays[0] == 1.0 and delays[1] == 2.0
    assert max(delays) == BACKOFF_MAX and delays == sorted(delays)
    assert book.to_dial(set(), now, 5) == []
    book.dialed(A, True, now)
    assert [r.public_key for r in book.to_dial(set(), now, 5)] == [A]


def test_a_lost_peer_is_due_at_once_and_redialled_within_seconds_while_wanted():
    """Issue 9: after a 60 s partition the backoff had grown to 32-60 s, so a healed peer
    waited that long for its next dial. A lost peer is wanted: its backoff is capped at
    REDIAL_MAX for REDIAL_PATIENCE seconds, then grows to BACKOFF_MAX again."""
    book = PeerBook(ME)
    book.learn(A, ["/ip4/127.0.0.1/tcp/1"])
    for _ in range(8):  # it had been failing before
        book.dialed(A, False, 0.0)
    book.lost(A, 100.0)
    assert [r.public_key for r in book.to_dial(set(), 100.0, 5)] == [A]
    now, delays = 100.0, []
    for _ in range(12):  # a partition: every dial fails
        book.dialed(A, False, now)
        delays.append(book.get(A).next_dial - now)
        now += 10.0
    assert delays[0] == 1.0 and max(delays) == REDIAL_MAX
    now = 100.0 + REDIAL_PATIENCE
    for _ in range(12):
        book.dialed(A, False, now)
    assert book.get(A).next_dial - now == BACKOFF_MAX
    book.lost(B, 0.0)  # unknown: nothing to dial
    assert book.get(B) is None


def test_bootstrap_peers_are_dialed_first_and_connected_ones_not_at_all():
    book = PeerBook(ME)
    book.learn(A, ["/ip4/127.0.0.1/tcp/1"])
    book.learn(B, ["/ip4/127.0.0.1/tcp/2"], bootstrap=True)
    book.learn(C, ["/ip4/127.0.0.1/tcp/3"])
    order = [r.public_key for r in book.to_dial({C}, 0.0, 5)]
    assert order[0] == B and C not in order
    assert len(book.to_dial(set(), 0.0, 1)) == 1


def test_misbehaviour_bans_for_a_while_and_then_forgives():
    book = PeerBook(ME)
    book.learn(A, ["/ip4/127.0.0.1/tcp/1"])
    banned = [book.penalise(A, "bad_frame", 0.0) for _ in range(2)]
    assert banned == [False, True]
    assert book.banned(A, 1.0) and book.to_dial(set(), 1.0, 5) == []
    assert not book.banned(A, BAN_SECONDS + 1)
    assert [r.public_key for r in book.to_dial(set(), BAN_SECONDS + 1, 5)] == [A]


def test_addresses_are_deduplicated_newest_first_and_bounded():
    book = PeerBook(ME)
    for port in range(20):
        book.learn(A, [f"/ip4/127.0.0.1/tcp/{port}"])
    assert not book.learn(A, ["/ip4/127.0.0.1/tcp/19"])
    rec = book.get(A)
    assert rec.addrs[0].endswith("/19") and len(rec.addrs) == 8
