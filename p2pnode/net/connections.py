"""Whom the node is connected to, and how it gets there: dialing known peers with
backoff, noticing connections opened and lost (whoever dialed), mDNS finds, and bans.

``Connections`` promises: ``connected`` always maps the public keys of the peers with a
live connection to how they came; ``on_connect(pk)`` is called once each time a peer
not connected before connects (a banned peer is disconnected instead); a dial never
takes longer than ``DIAL_TIMEOUT``; a peer scored down to the ban is disconnected and
kept away (``peers.PeerBook``) and off gossip until its ban runs out.

One peer ID, several connections: libp2p keeps every connection a peer ID opens, and
opens streams on the busiest, so a second process with the same key (a forker's copy,
issue 9) would never be asked anything. Each connection that appears for a peer already
connected is handed to ``on_another_connection(pk, conn)`` (the syncer pulls over it),
once, within ``WATCH_INTERVAL``.

Lost peers come back (issue 9, partitions): a peer whose connection ended without the
node choosing it (``drop`` by the keepalive, or closed by the other end or the network)
is *wanted* (``PeerBook.lost``): it is dialled again at once, then with a backoff capped
at ``peers.REDIAL_MAX`` seconds while it stays wanted, and the dialer looks for peers to
dial every ``DIAL_INTERVAL``. So after a partition heals, a connection is back within
about ``DIAL_TIMEOUT - 7 + REDIAL_MAX + DIAL_INTERVAL`` seconds at worst (a dial in flight
whose last SYN was sent before the heal; TCP sends them at 0, 1, 3 and 7 s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import multiaddr
import trio

from protocol.errors import ProtocolError
from protocol.keys import peer_id, public_key_from_peer_id

from p2pnode.clock import Clock
from p2pnode.net.addresses import split_p2p_addr
from p2pnode.net.host import peer_id_of
from p2pnode.net.peers import ADDRESS_BANS, ADDRESS_WINDOW, AddressBans, PeerBook, ip_of

log = logging.getLogger(__name__)

DIAL_INTERVAL = 1.0  # seconds between checks for peers to dial
WATCH_INTERVAL = 0.2  # seconds between checks for new and lost connections
TARGET_PEERS = 4  # dial known peers while connected to fewer than this (each link costs CPU)
DIAL_TIMEOUT = 10.0


@dataclass
class Connected:
    peer_id: str
    addr: str
    direction: str
    since: float
    ping_ms: float | None = None  # the last keepalive's round trip (keepalive.py)


class Connections:
    """The node's connections over ``host``, with ``book`` as its memory of peers."""

    def __init__(self, host: Any, pubsub: Any, book: PeerBook, clock: Clock, *, own_key: bytes, mdns: bool,
                 count: Callable[[str, int], None]) -> None:
        self.host = host
        self.pubsub = pubsub
        self.book = book
        self.clock = clock
        self.own_key = own_key
        self.mdns = mdns
        self.connected: dict[bytes, Connected] = {}
        self.address_bans = AddressBans()
        self._count = count
        self._on_connect: list[Callable[[bytes], None]] = []
        self._dropping: set[bytes] = set()  # closed by ``drop``: the watch must not take them for new
        self._on_another: list[Callable[[bytes, Any], None]] = []
        self._seen: dict[bytes, list[Any]] = {}  # the libp2p connections of each peer at the last look

    def on_connect(self, fn: Callable[[bytes], None]) -> None:
        """Call ``fn(pk)`` (it must not block: start tasks) when a peer connects."""
        self._on_connect.append(fn)

    def on_another_connection(self, fn: Callable[[bytes, Any], None]) -> None:
        """Call ``fn(pk, conn)`` (it must not block) when a peer already connected has a
        libp2p connection ``conn`` more (module docstring)."""
        self._on_another.append(fn)

    # -- dialing ---------------------------------------------------------------------------

    def learn_bootstrap(self, addr: str) -> None:
        try:
            pk, plain = split_p2p_addr(addr)
        except ValueError as e:
            log.warning("ignoring bootstrap address %s: %s", addr, e)
            return
        self.book.learn(pk, [plain], bootstrap=True)

    async def connect(self, addr: str) -> str:
        """Dial ``addr`` (a multiaddr ending in ``/p2p/<id>``); the peer ID connected to.
        ``ValueError`` for a bad or own address, ``trio.TooSlowError`` after ``DIAL_TIMEOUT``."""
        from libp2p.peer.peerinfo import info_from_p2p_addr

        pk, plain = split_p2p_addr(addr)
        if pk == self.own_key:
            raise ValueError("that address is this node's own")
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        # libp2p refuses for 60 s to redial a peer whose every address failed once; our
        # own backoff (peers.py) decides when to try again, e.g. after the peer restarts.
        try:
            self.host.get_network().unblock_peer(info.peer_id)
        except Exception:
            pass
        with trio.fail_after(DIAL_TIMEOUT):
            await self.host.connect(info)
        self.book.learn(pk, [plain])
        self.book.dialed(pk, True, self.clock.monotonic())
        return peer_id(pk)

    def _learn_from_mdns(self) -> None:
        """mDNS puts the peers it finds into libp2p's peerstore and dials none of them
        (py-libp2p leaves that to its auto-connector, which the node turns off): take
        them into the peer book, so the dialer reaches them."""
        store = self.host.get_peerstore()
        for pid in store.peers_with_addrs():
            try:
                pk = public_key_from_peer_id(pid.to_base58())
            except ProtocolError:
                continue
            if pk != self.own_key and self.book.get(pk) is None:
                addrs = [str(a) for a in store.addrs(pid) if "/tcp/" in str(a)]
                if addrs and self.book.learn(pk, addrs):
                    log.info("found %s on the local network", peer_id(pk))

    async def dial_loop(self, nursery: trio.Nursery) -> None:
        """Keep up to ``TARGET_PEERS`` connections, dialing in ``nursery``."""
        while True:
            if self.mdns:
                try:
                    self._learn_from_mdns()
                except Exception as e:  # discovery is optional; dialing goes on
                    log.debug("mdns peers: %s", e)
            want = TARGET_PEERS - len(self.connected)
            now = self.clock.monotonic()
            for rec in self.book.to_dial(set(self.connected), now, want):
                nursery.start_soon(self._dial, rec.public_key, rec.addrs[0])
                rec.next_dial = now + DIAL_TIMEOUT  # not again while in flight
            await trio.sleep(DIAL_INTERVAL)

    async def _dial(self, pk: bytes, plain: str) -> None:
        addr = f"{plain}/p2p/{peer_id(pk)}"
        try:
            await self.connect(addr)
        except (Exception, trio.TooSlowError) as e:
            self.book.dialed(pk, False, self.clock.monotonic())
            log.info("dial %s failed: %s", addr, str(e) or type(e).__name__)

    # -- watching ----------------------------------------------------------------------------

    async def watch(self) -> None:
        """React to connections opened and closed, whoever dialed."""
        while True:
            now = set()
            for pid in self.host.get_connected_peers():
                try:
                    now.add(public_key_from_peer_id(pid.to_base58()))
                except ProtocolError:
                    continue  # not an Ed25519 identity: not one of ours
            for pk in now - set(self.connected) - self._dropping:
                if self.book.banned(pk, self.clock.monotonic()):
                    await self.disconnect(pk)
                    continue
                described = self._describe(pk)
                if self.address_bans.banned(ip_of(described.addr), self.clock.monotonic()):
                    self._count("connections.refused.address_banned", 1)
                    await self.disconnect(pk)
                    continue
                self._unblacklist(pk)
                self.connected[pk] = described
                log.info("peer connected %s (%s %s)", peer_id(pk), self.connected[pk].direction,
                         self.connected[pk].addr)
                for fn in self._on_connect:
                    fn(pk)
            for pk in set(self.connected) - now:
                self._gone(pk)
                log.info("peer disconnected %s", peer_id(pk))
            self._look_for_other_connections()
            await trio.sleep(WATCH_INTERVAL)

    def _look_for_other_connections(self) -> None:
        """Hand each connection that a connected peer did not have at the last look to
        ``on_another_connection`` (for a peer that just connected, only if it came with
        more than one: the pull on connect asks one of them)."""
        for pk in list(self._seen):
            if pk not in self.connected:
                del self._seen[pk]
        for pk in self.connected:
            conns = self._connections_of(pk)
            seen = self._seen.get(pk)
            if seen is None:
                fresh = conns if len(conns) > 1 else []
            else:
                fresh = [c for c in conns if not any(c is s for s in seen)]
            self._seen[pk] = conns
            for conn in fresh:
                log.info("peer %s has another connection (%s): asking it too", peer_id(pk), _remote(conn))
                self._count("connections.another", 1)
                for fn in self._on_another:
                    fn(pk, conn)

    def _connections_of(self, pk: bytes) -> list[Any]:
        conns = self.host.get_network().connections.get(peer_id_of(pk))
        return list(conns) if isinstance(conns, list) else [conns] if conns is not None else []

    def _gone(self, pk: bytes) -> None:
        """``pk`` has no connection any more: forget it, and want it back unless banned."""
        del self.connected[pk]
        now = self.clock.monotonic()
        if not self.book.banned(pk, now):
            self.book.lost(pk, now)

    async def drop(self, pk: bytes, reason: str) -> None:
        """Close the connection to ``pk``, taken for dead for ``reason`` (no answer to a
        keepalive): the peer is forgotten at once, wanted back, and dialled again soon.
        The close is bounded in time; if libp2p's own close does not finish within it
        (writes to a dead connection may block), its connections are taken off the swarm
        all the same, so that the redial makes a new one instead of finding the old."""
        if pk not in self.connected:
            return
        log.warning("peer %s taken for dead (%s): closing its connection, dialling again", peer_id(pk), reason)
        self._count("connections.dropped_dead", 1)
        self._dropping.add(pk)
        try:
            dead = self._connections_of(pk)
            self._gone(pk)
            await self.disconnect(pk)
            self._forget_in_swarm(pk, dead)
        finally:
            self._dropping.discard(pk)

    def _forget_in_swarm(self, pk: bytes, dead: list[Any]) -> None:
        """Take the ``dead`` connections of ``pk`` off the swarm's records if its close left
        them there (a connection the peer opened meanwhile stays)."""
        network = self.host.get_network()
        for conn in dead:
            if any(conn is c for c in self._connections_of(pk)):
                try:
                    network.remove_conn(conn)
                except Exception as e:  # already gone
                    log.debug("forget connection of %s: %s", peer_id(pk), e)

    def _describe(self, pk: bytes) -> Connected:
        addr, direction = "", "?"
        conns = self._connections_of(pk)
        conn = conns[0] if conns else None
        if conn is not None:
            addr = _remote(conn)
            d = str(getattr(conn, "direction", "")).lower()
            direction = "in" if "inbound" in d else "out" if "outbound" in d else "?"
        return Connected(peer_id(pk), addr, direction, self.clock.monotonic())

    # -- misbehaviour ------------------------------------------------------------------------

    async def penalise(self, pk: bytes, reason: str, detail: str) -> None:
        """Score ``pk`` down for ``reason``; at the ban, disconnect it and keep it off gossip."""
        self._count(f"misbehaviour.{reason}", 1)
        banned = self.book.penalise(pk, reason, self.clock.monotonic())
        log.warning("peer %s misbehaved (%s): %s; score %d", peer_id(pk), reason, detail, self.book.score(pk))
        if banned:
            log.warning("peer %s banned for misbehaviour; disconnecting", peer_id(pk))
            c = self.connected.get(pk)
            address = ip_of(c.addr) if c else ""
            if self.address_bans.key_banned(address, self.clock.monotonic()):
                log.warning("address %s banned: %d keys from it were banned within %.0f s", address,
                            ADDRESS_BANS, ADDRESS_WINDOW)
            try:
                self.pubsub.add_to_blacklist(peer_id_of(pk))
            except Exception:
                pass
            await self.disconnect(pk)

    def _unblacklist(self, pk: bytes) -> None:
        """A peer whose ban has run out gets gossip again: pubsub's blacklist has no expiry
        of its own, so the node lifts it when the peer reconnects after its ban."""
        try:
            pid = peer_id_of(pk)
            if self.pubsub.is_peer_blacklisted(pid):
                self.pubsub.remove_from_blacklist(pid)
                log.info("peer %s ban over; gossip with it again", peer_id(pk))
        except Exception as e:  # best effort: the peer still syncs
            log.debug("unblacklist %s: %s", peer_id(pk), e)

    async def disconnect(self, pk: bytes) -> None:
        with trio.move_on_after(5):
            try:
                await self.host.disconnect(peer_id_of(pk))
            except Exception as e:  # already gone: nothing to do
                log.debug("disconnect %s: %s", peer_id(pk), e)

    async def hang_up(self) -> None:
        """Close every connection (while pubsub still runs, so that no peer's message
        reaches a pubsub service that is shutting down)."""
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            for pid in list(self.host.get_connected_peers()):
                try:
                    await self.host.disconnect(pid)
                except Exception as e:  # already gone
                    log.debug("disconnect %s: %s", pid, e)

    def peers(self) -> list[dict]:
        now = self.clock.monotonic()
        return [
            {"peer_id": c.peer_id, "addr": c.addr, "direction": c.direction, "connected_s": round(now - c.since, 3),
             "score": self.book.score(pk), "ping_ms": c.ping_ms}
            for pk, c in self.connected.items()
        ]


Penalise = Callable[[bytes, str, str], Awaitable[None]]


def _remote(conn: Any) -> str:
    """The remote address of a libp2p connection, or ``""``."""
    try:
        addrs = conn.get_transport_addresses()
        return str(addrs[0]) if addrs else ""
    except Exception:
        return ""
