"""What the node knows about other nodes: where they listen, when to dial them again,
and how well they behave. Plain data and rules; the node does the dialing.

- Addresses come from bootstrap settings, peer exchange and peers' own announcements.
- A failed dial backs off exponentially per peer (``BACKOFF_MIN`` doubling to
  ``BACKOFF_MAX``); a success resets it. A peer whose connection was lost (``lost``) is
  *wanted* for ``REDIAL_PATIENCE`` seconds: due for a dial at once, and its backoff is
  capped at ``REDIAL_MAX`` meanwhile, so that it is back within seconds of a partition's
  heal rather than a minute later.
- Misbehaviour lowers a peer's score; at ``BAN_SCORE`` it is disconnected and not dialed
  or accepted for ``BAN_SECONDS``. Good behaviour never raises a score above 0: trust is
  not earned by talking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0
REDIAL_MAX = 2.0  # seconds: the backoff's cap while a lost peer is wanted
REDIAL_PATIENCE = 600.0  # seconds a lost peer stays wanted
BAN_SCORE = -100
BAN_SECONDS = 600.0
MAX_KNOWN = 1_000  # peers remembered; beyond it, new ones are ignored

# How much each kind of misbehaviour costs (see docs/protocol.md, "Misbehaviour").
PENALTY = {
    "bad_gossip": 10,  # a gossip message that fails validation
    "bad_frame": 50,  # a malformed or oversize stream frame
    "bad_entries": 25,  # entries that do not verify, sent in answer to a sync request
    "unexpected_message": 50,
}


@dataclass
class PeerRecord:
    public_key: bytes
    addrs: list[str] = field(default_factory=list)
    failures: int = 0
    next_dial: float = 0.0
    score: int = 0
    banned_until: float = 0.0
    bootstrap: bool = False
    wanted_until: float = 0.0  # redial with a capped backoff until then (``lost``)


class PeerBook:
    """Known peers by public key. Times are seconds on a monotonic clock passed in."""

    def __init__(self, own_key: bytes) -> None:
        self.own_key = own_key
        self.records: dict[bytes, PeerRecord] = {}

    def learn(self, public_key: bytes, addrs: list[str] | tuple[str, ...], *, bootstrap: bool = False) -> bool:
        """Remember where a peer listens; True if anything was new."""
        if public_key == self.own_key:
            return False
        rec = self.records.get(public_key)
        if rec is None:
            if len(self.records) >= MAX_KNOWN and not bootstrap:
                return False
            rec = self.records[public_key] = PeerRecord(public_key)
        rec.bootstrap = rec.bootstrap or bootstrap
        new = [a for a in addrs if a not in rec.addrs]
        rec.addrs = (new + rec.addrs)[:8]
        return bool(new)

    def get(self, public_key: bytes) -> PeerRecord | None:
        return self.records.get(public_key)

    def to_dial(self, connected: set[bytes], now: float, want: int) -> list[PeerRecord]:
        """Up to ``want`` peers not connected, not banned, whose backoff has passed;
        bootstrap peers first."""
        if want <= 0:
            return []
        ready = [
            r
            for r in self.records.values()
            if r.public_key not in connected and r.addrs and r.next_dial <= now and r.banned_until <= now
        ]
        ready.sort(key=lambda r: (not r.bootstrap, r.failures, r.next_dial))
        return ready[:want]

    def dialed(self, public_key: bytes, ok: bool, now: float) -> None:
        rec = self.records.get(public_key)
        if rec is None:
            return
        if ok:
            rec.failures, rec.next_dial = 0, now
        else:
            rec.failures += 1
            cap = REDIAL_MAX if now < rec.wanted_until else BACKOFF_MAX
            rec.next_dial = now + min(cap, BACKOFF_MIN * 2 ** min(rec.failures - 1, 32))

    def lost(self, public_key: bytes, now: float) -> None:
        """The connection to a known peer ended without our choosing: want it back, due
        for a dial now, with a capped backoff for ``REDIAL_PATIENCE`` seconds."""
        rec = self.records.get(public_key)
        if rec is None or not rec.addrs:
            return
        rec.wanted_until = now + REDIAL_PATIENCE
        rec.failures, rec.next_dial = 0, min(rec.next_dial, now)

    def penalise(self, public_key: bytes, reason: str, now: float) -> bool:
        """Lower the peer's score for ``reason``; True if it is now banned."""
        rec = self.records.get(public_key)
        if rec is None:
            rec = self.records[public_key] = PeerRecord(public_key)
        rec.score -= PENALTY.get(reason, 10)
        if rec.score <= BAN_SCORE:
            rec.banned_until = now + BAN_SECONDS
            rec.score = 0  # after the ban, a fresh start
            return True
        return False

    def banned(self, public_key: bytes, now: float) -> bool:
        rec = self.records.get(public_key)
        return rec is not None and rec.banned_until > now

    def score(self, public_key: bytes) -> int:
        rec = self.records.get(public_key)
        return rec.score if rec else 0

    def sample(self, n: int, exclude: set[bytes]) -> list[PeerRecord]:
        """Up to ``n`` known, unbanned peers with addresses, for peer exchange."""
        out = [r for r in self.records.values() if r.addrs and r.public_key not in exclude and r.banned_until == 0.0]
        out.sort(key=lambda r: (r.failures, not r.bootstrap))
        return out[:n]


ADDRESS_BANS = 8  # keys banned from one address within ADDRESS_WINDOW that ban the address itself
ADDRESS_WINDOW = 600.0
MAX_ADDRESSES = 4096  # addresses remembered; the oldest is forgotten first


class AddressBans:
    """Bans by address: keys are free, so a ban per key alone is no bar (200 bans in 6 s).
    Once ``ADDRESS_BANS`` keys connecting from one IP address have been banned within
    ``ADDRESS_WINDOW`` seconds, the address itself is banned for ``BAN_SECONDS``: every
    key connecting from it is refused. Bounded: at most ``MAX_ADDRESSES`` addresses."""

    def __init__(self) -> None:
        self._bans: dict[str, list[float]] = {}  # address -> when its keys were banned, in the window
        self._until: dict[str, float] = {}

    def key_banned(self, address: str, now: float) -> bool:
        """Note that a key from ``address`` was banned; True if the address is now banned."""
        if not address:
            return False
        recent = [t for t in self._bans.pop(address, []) if now - t < ADDRESS_WINDOW] + [now]
        self._bans[address] = recent[-ADDRESS_BANS:]
        while len(self._bans) > MAX_ADDRESSES:
            self._bans.pop(next(iter(self._bans)))
        if len(recent) >= ADDRESS_BANS:
            self._until[address] = now + BAN_SECONDS
            while len(self._until) > MAX_ADDRESSES:
                self._until.pop(next(iter(self._until)))
            return True
        return False

    def banned(self, address: str, now: float) -> bool:
        return bool(address) and self._until.get(address, 0.0) > now


def ip_of(multiaddr: str) -> str:
    """The IP address of a multiaddr (``/ip4/1.2.3.4/tcp/5`` -> ``1.2.3.4``), or ``""``."""
    parts = multiaddr.split("/")
    return parts[2] if len(parts) > 2 and parts[1] in ("ip4", "ip6") else ""
