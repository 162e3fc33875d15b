"""The running node: one store, one libp2p host, gossip, sync, peer exchange and the
control socket, all as tasks of one trio nursery.

``Node.run`` promises: when it returns (after ``stop()``, SIGINT or SIGTERM) every task
has ended, the host is closed, the control socket is removed and the store is closed,
so a new node can start on the same home at once. Nothing a peer sends can end it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio

from protocol import wire
from protocol.lending.agree import AGREE_PROTOCOL
from protocol.entry import Entry
from protocol.errors import ProtocolError
from protocol.fork import ForkProof
from protocol.keys import SigningKey, peer_id, public_key_from_peer_id
from protocol.kinds import KindRegistry

from p2pnode.control.server import ApiError, serve_control, socket_path
from p2pnode.home import Home, now_ms
from p2pnode.net.peers import PeerBook
from p2pnode.ledger.store import Store

log = logging.getLogger("p2pnode")

SYNC_INTERVAL = 5.0  # seconds between routine head exchanges with each peer
PEX_INTERVAL = 30.0  # seconds between peer-exchange rounds
DIAL_INTERVAL = 2.0  # seconds between checks for peers to dial
WATCH_INTERVAL = 0.2  # seconds between checks for new and lost connections
TARGET_PEERS = 4  # dial known peers while connected to fewer than this (each link costs CPU)
DIAL_TIMEOUT = 10.0
MAX_INBOUND_STREAMS = 4  # concurrent inbound sync (or pex) streams one peer may hold
MAX_INBOUND_AGREE = 32  # proposals one peer may have in flight: each is one short stream
INLINE_INGEST = 64  # batches up to this size are verified on the event loop
MAX_SYNC_ROUNDS = 1_000  # consecutive pulls from one peer before yielding the slot
GOSSIP_WINDOW = 0.05  # seconds: at most one entries message per window; entries appended
# meanwhile go out together. Each gossip message costs every node ~1 ms of CPU whatever
# its size, so under load batching is what keeps a network of small machines on time.
ANNOUNCE_LIMIT = 64  # a larger change is announced by its last entry only; peers sync the rest
ARRIVALS_KEPT = 10_000  # recent foreign entries remembered with when and how they came


@dataclass
class NodeSettings:
    listen: list[str]
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = False
    sync_interval: float = SYNC_INTERVAL
    pex: bool = True  # exchange and dial peers; off only to keep a test topology fixed
    review: bool = False  # hold incoming loan proposals for the owner (`loan pending`)
    auto_confirm: bool = False  # sign the disbursement receipt when the lender declares it
    max_rate_bp: int | None = None  # refuse proposals above this yearly rate


@dataclass
class Connected:
    peer_id: str
    addr: str
    direction: str
    since: float


class Node:
    """A node on ``home``, signing with ``key``. Build, then ``await run()``."""

    def __init__(self, home: Home, key: SigningKey, settings: NodeSettings, registry: KindRegistry) -> None:
        self.home = home
        self.key = key
        self.settings = settings
        self.registry = registry
        self.peer_id = peer_id(key.public_key)
        self.book = PeerBook(key.public_key)
        self.connected: dict[bytes, Connected] = {}
        self.counters: dict[str, int] = {}
        self.started = time.monotonic()
        self.store: Store | None = None
        self.host: Any = None
        self.pubsub: Any = None
        self._stop = trio.Event()
        self._write_lock = trio.Lock()
        self._syncing: dict[bytes, bool] = {}  # peer -> "sync again when done"
        self._last_round_ms: int | None = None
        self._nursery: trio.Nursery | None = None
        self.methods: dict[str, Any] = {}
        # (author, seq, ts, received_ms, via) of recently stored foreign entries
        self.arrivals: deque[tuple[bytes, int, int, int, str]] = deque(maxlen=ARRIVALS_KEPT)
        self._inbound: dict[tuple[bytes | None, str], int] = {}  # open inbound streams per (peer, protocol)
        self._outbox: list[bytes] = []  # own and imported entries waiting to be gossiped
        self._outbox_ready = trio.Event()
        from p2pnode.lending.loans import LoanService

        self.loans = LoanService(self)
        from p2pnode.lending.offers import OfferService

        self.offers = OfferService(self)

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the node to shut down; ``run`` returns once it has."""
        self._stop.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from libp2p.tools.anyio_service import background_trio_service

        from p2pnode.net.host import build_host, build_pubsub

        listen = [multiaddr.Multiaddr(a) for a in self.settings.listen]
        self.store = self.home.open_store()  # first: a running node on this home says so
        try:
            check_ports_free(self.settings.listen)
        except OSError:
            self.store.close()
            raise
        try:
            self.host = build_host(self.key, listen, mdns=self.settings.mdns)
            self.pubsub, gossipsub = build_pubsub(self.host)
            try:
                async with self.host.run(listen_addrs=listen):
                    try:
                        async with background_trio_service(self.pubsub), background_trio_service(gossipsub):
                            await self.pubsub.wait_until_ready()
                            await self._serve(task_status)
                            await self._hang_up()
                    finally:
                        with trio.CancelScope(shield=True), trio.move_on_after(5):
                            await self.host.close()
            except Exception as e:
                if not self._stop.is_set():
                    raise
                # py-libp2p may still hand a message that arrived mid-shutdown to the pubsub
                # service it has just closed ("Nursery is closed to new arrivals"): nothing
                # of ours is lost by that, and a stop must end cleanly.
                log.debug("libp2p while stopping: %r", e)
        finally:
            self.store.close()
            log.info("stopped")

    async def _hang_up(self) -> None:
        """Close every connection while pubsub still runs, so that no peer's message
        reaches a pubsub service that is shutting down."""
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            for pid in list(self.host.get_connected_peers()):
                try:
                    await self.host.disconnect(pid)
                except Exception as e:  # already gone
                    log.debug("disconnect %s: %s", pid, e)

    async def _serve(self, task_status: Any) -> None:
        self.host.set_stream_handler(wire.SYNC_PROTOCOL, self._on_sync_stream)
        self.host.set_stream_handler(wire.PEX_PROTOCOL, self._on_pex_stream)
        self.host.set_stream_handler(AGREE_PROTOCOL, self._on_agree_stream)
        self.loans.load()
        for topic in wire.TOPICS:
            self.pubsub.set_topic_validator(topic, self._validator(topic), False)
        subs = {topic: await self.pubsub.subscribe(topic) for topic in wire.TOPICS}
        for addr in self.settings.bootstrap:
            self._learn_bootstrap(addr)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.methods = self._methods()
            await nursery.start(serve_control, socket_path(self.home.path), self.methods)
            for topic, sub in subs.items():
                nursery.start_soon(self._read_topic, topic, sub)
            nursery.start_soon(self._watch_connections)
            nursery.start_soon(self._routine_sync)
            nursery.start_soon(self._gossip_entries)
            nursery.start_soon(self.loans.retry_loop)
            nursery.start_soon(self.offers.loop)
            if self.settings.pex:
                nursery.start_soon(self._dial_loop)
                nursery.start_soon(self._pex_loop)
            nursery.start_soon(self._signals)
            for a in self.listen_addrs():
                log.info("listening on %s", a)
            task_status.started(self)
            await self._stop.wait()
            log.info("stopping")
            nursery.cancel_scope.cancel()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                self.stop()
                return

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (with ``/p2p/<id>``) the host listens on."""
        return [str(a) for a in self.host.get_addrs()]

    def _announce_addrs(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.host.get_transport_addrs())[: wire.MAX_ADDRS]

    # -- counters and misbehaviour -----------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    async def _penalise(self, pk: bytes, reason: str, detail: str) -> None:
        self.count(f"misbehaviour.{reason}")
        banned = self.book.penalise(pk, reason, time.monotonic())
        log.warning("peer %s misbehaved (%s): %s; score %d", peer_id(pk), reason, detail, self.book.score(pk))
        if banned:
            log.warning("peer %s banned for misbehaviour; disconnecting", peer_id(pk))
            from p2pnode.net.host import peer_id_of

            try:
                self.pubsub.add_to_blacklist(peer_id_of(pk))
            except Exception:
                pass
            await self._disconnect(pk)

    def _unblacklist(self, pk: bytes) -> None:
        """A peer whose ban has run out gets gossip again: pubsub's blacklist has no expiry
        of its own, so the node lifts it when the peer reconnects after its ban."""
        from p2pnode.net.host import peer_id_of

        try:
            pid = peer_id_of(pk)
            if self.pubsub.is_peer_blacklisted(pid):
                self.pubsub.remove_from_blacklist(pid)
                log.info("peer %s ban over; gossip with it again", peer_id(pk))
        except Exception as e:  # best effort: the peer still syncs
            log.debug("unblacklist %s: %s", peer_id(pk), e)

    async def _disconnect(self, pk: bytes) -> None:
        from p2pnode.net.host import peer_id_of

        with trio.move_on_after(5):
            try:
                await self.host.disconnect(peer_id_of(pk))
            except Exception as e:  # already gone: nothing to do
                log.debug("disconnect %s: %s", peer_id(pk), e)

    # -- connections -------------------------------------------------------------------

    def _learn_bootstrap(self, addr: str) -> None:
        try:
            pk, plain = split_p2p_addr(addr)
        except ValueError as e:
            log.warning("ignoring bootstrap address %s: %s", addr, e)
            return
        self.book.learn(pk, [plain], bootstrap=True)

    async def connect(self, addr: str) -> str:
        """Dial ``addr`` (a multiaddr ending in ``/p2p/<id>``); the peer ID connected to."""
        from libp2p.peer.peerinfo import info_from_p2p_addr

        pk, plain = split_p2p_addr(addr)
        if pk == self.key.public_key:
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
        self.book.dialed(pk, True, time.monotonic())
        return peer_id(pk)

    def _learn_from_mdns(self) -> None:
        """mDNS puts the peers it finds into libp2p's peerstore and dials none of them
        (py-libp2p leaves that to its auto-connector, which the node turns off): take
        them into the peer book, so the dialer below reaches them."""
        store = self.host.get_peerstore()
        for pid in store.peers_with_addrs():
            try:
                pk = public_key_from_peer_id(pid.to_base58())
            except ProtocolError:
                continue
            if pk != self.key.public_key and self.book.get(pk) is None:
                addrs = [str(a) for a in store.addrs(pid) if "/tcp/" in str(a)]
                if addrs and self.book.learn(pk, addrs):
                    log.info("found %s on the local network", peer_id(pk))

    async def _dial_loop(self) -> None:
        while True:
            if self.settings.mdns:
                try:
                    self._learn_from_mdns()
                except Exception as e:  # discovery is optional; dialing goes on
                    log.debug("mdns peers: %s", e)
            want = TARGET_PEERS - len(self.connected)
            for rec in self.book.to_dial(set(self.connected), time.monotonic(), want):
                self._nursery.start_soon(self._dial, rec.public_key, rec.addrs[0])
                rec.next_dial = time.monotonic() + DIAL_TIMEOUT  # not again while in flight
            await trio.sleep(DIAL_INTERVAL)

    async def _dial(self, pk: bytes, plain: str) -> None:
        addr = f"{plain}/p2p/{peer_id(pk)}"
        try:
            await self.connect(addr)
        except (Exception, trio.TooSlowError) as e:
            self.book.dialed(pk, False, time.monotonic())
            log.info("dial %s failed: %s", addr, str(e) or type(e).__name__)

    async def _watch_connections(self) -> None:
        """React to connections opened and closed, whoever dialed."""
        while True:
            now = set()
            for pid in self.host.get_connected_peers():
                try:
                    now.add(public_key_from_peer_id(pid.to_base58()))
                except ProtocolError:
                    continue  # not an Ed25519 identity: not one of ours
            for pk in now - set(self.connected):
                if self.book.banned(pk, time.monotonic()):
                    await self._disconnect(pk)
                    continue
                self._unblacklist(pk)
                self.connected[pk] = self._describe(pk)
                log.info("peer connected %s (%s %s)", peer_id(pk), self.connected[pk].direction, self.connected[pk].addr)
                self.request_sync(pk)
                self.offers.peer_joined()
                if self.settings.pex:
                    self._nursery.start_soon(self._exchange_peers, pk)
            for pk in set(self.connected) - now:
                del self.connected[pk]
                log.info("peer disconnected %s", peer_id(pk))
            await trio.sleep(WATCH_INTERVAL)

    def _describe(self, pk: bytes) -> Connected:
        from p2pnode.net.host import peer_id_of

        addr, direction = "", "?"
        conns = self.host.get_network().connections.get(peer_id_of(pk))
        conn = conns[0] if isinstance(conns, list) and conns else conns
        if conn is not None:
            try:
                addrs = conn.get_transport_addresses()
                addr = str(addrs[0]) if addrs else ""
            except Exception:
                pass
            d = str(getattr(conn, "direction", "")).lower()
            direction = "in" if "inbound" in d else "out" if "outbound" in d else "?"
        return Connected(peer_id(pk), addr, direction, time.monotonic())

    # -- streams -------------------------------------------------------------------------

    async def _open(self, pk: bytes, protocol: str) -> Any:
        from p2pnode.net.host import peer_id_of

        with trio.fail_after(DIAL_TIMEOUT):
            return await self.host.new_stream(peer_id_of(pk), [protocol])

    @staticmethod
    def _remote(stream: Any) -> bytes | None:
        try:
            return public_key_from_peer_id(stream.muxed_conn.peer_id.to_base58())
        except Exception:
            return None

    async def _guard_stream(self, stream: Any, what: str, serve: Any) -> None:
        """Run ``serve(pk)`` for an inbound stream: a peer breaking the rules is penalised,
        one that leaves is let go, anything else is logged; the stream is always closed."""
        from p2pnode.net.sync import PeerGone, PeerMisbehaved

        pk = self._remote(stream)
        key = (pk, what)
        if self._inbound.get(key, 0) >= (MAX_INBOUND_AGREE if what == "agree" else MAX_INBOUND_STREAMS):
            # A peer has no reason to run many pulls at once: refuse, do not queue.
            self.count(f"streams.refused.{what}")
            await _close(stream)
            return
        self._inbound[key] = self._inbound.get(key, 0) + 1
        try:
            await serve(pk)
        except PeerMisbehaved as e:
            if pk:
                await self._penalise(pk, "bad_frame", f"{what} stream: {e}")
        except PeerGone:
            pass
        except Exception:
            log.exception("%s stream from %s failed", what, peer_id(pk) if pk else "?")
        finally:
            self._inbound[key] -= 1
            if not self._inbound[key]:
                del self._inbound[key]
            await _close(stream)

    async def _on_sync_stream(self, stream: Any) -> None:
        from p2pnode.net.sync import serve_sync

        async def serve(pk: bytes | None) -> None:
            self.count("sync.entries_sent", await serve_sync(stream, self.store.heads, self._chain_slice))

        await self._guard_stream(stream, "sync", serve)

    async def _on_agree_stream(self, stream: Any) -> None:
        async def serve(pk: bytes | None) -> None:
            await self.loans.serve(stream, pk)

        await self._guard_stream(stream, "agree", serve)

    def _chain_slice(self, author: bytes, start: int, limit: int) -> list[bytes]:
        return list(self.store.chain(author, start=start, limit=limit))

    async def _on_pex_stream(self, stream: Any) -> None:
        from p2pnode.net.sync import serve_pex

        async def serve(pk: bytes | None) -> None:
            def hello(addrs: tuple[str, ...]) -> None:
                if pk is not None:
                    self.book.learn(pk, list(self._usable(addrs, stream)))

            await serve_pex(stream, hello, lambda: self._known_peers(exclude={pk} if pk else set()))

        await self._guard_stream(stream, "pex", serve)

    @staticmethod
    def _usable(addrs: tuple[str, ...], stream: Any) -> list[str]:
        """Announced addresses, with a wildcard IP replaced by the one the peer came from."""
        observed = None
        try:
            observed = str(stream.muxed_conn.get_transport_addresses()[0]).split("/")[2]
        except Exception:
            pass
        return wire.usable_addrs(addrs, observed)

    def _known_peers(self, exclude: set[bytes]) -> wire.Peers:
        me = (self.key.public_key, self._announce_addrs())
        others = [(r.public_key, tuple(r.addrs[: wire.MAX_ADDRS])) for r in self.book.sample(wire.MAX_PEERS, exclude)]
        return wire.Peers(tuple([me] + others))

    async def _exchange_peers(self, pk: bytes) -> None:
        from p2pnode.net.sync import PeerGone, PeerMisbehaved, ask_pex

        stream = None
        try:
            stream = await self._open(pk, wire.PEX_PROTOCOL)
            answer = await ask_pex(stream, self._announce_addrs())
            for other, addrs in answer.peers:
                if other != self.key.public_key:
                    self.book.learn(other, list(addrs))
            self.count("pex.rounds")
        except PeerMisbehaved as e:
            await self._penalise(pk, "bad_frame", f"pex answer: {e}")
        except (PeerGone, trio.TooSlowError):
            pass
        except Exception as e:
            log.info("peer exchange with %s failed: %s", peer_id(pk), e)
        finally:
            if stream is not None:
                await _close(stream)

    async def _pex_loop(self) -> None:
        while True:
            await trio.sleep(PEX_INTERVAL)
            for pk in list(self.connected):
                self._nursery.start_soon(self._exchange_peers, pk)

    # -- sync ------------------------------------------------------------------------------

    def request_sync(self, pk: bytes) -> None:
        """Pull from ``pk`` now, or once more after the pull under way."""
        if pk in self._syncing:
            self._syncing[pk] = True
            return
        self._syncing[pk] = False
        self._nursery.start_soon(self._sync_with, pk)

    async def _routine_sync(self) -> None:
        while True:
            await trio.sleep(self.settings.sync_interval)
            for pk in list(self.connected):
                self.request_sync(pk)

    async def _sync_with(self, pk: bytes) -> None:
        from p2pnode.net.sync import PeerGone, PeerMisbehaved, pull

        try:
            for _ in range(MAX_SYNC_ROUNDS):
                self._syncing[pk] = False
                stream = None
                try:
                    stream = await self._open(pk, wire.SYNC_PROTOCOL)
                    result = await pull(stream, self.store.heads, self.ingest)
                    self._last_round_ms = now_ms()
                    if result.added:
                        log.info("synced %d entries from %s", result.added, peer_id(pk))
                    if result.errors and not result.forks:  # a peer relaying a fork is not at fault
                        first = result.errors[0]
                        await self._penalise(pk, "bad_entries", f"seq {first.seq}: {first.message}")
                except PeerMisbehaved as e:
                    await self._penalise(pk, "bad_frame", f"sync answer: {e}")
                except (PeerGone, trio.TooSlowError) as e:
                    log.debug("sync with %s ended: %s", peer_id(pk), e)
                except Exception as e:
                    if pk in self.connected:
                        log.info("sync with %s failed: %s", peer_id(pk), e)
                finally:
                    if stream is not None:
                        await _close(stream)
                if not self._syncing.get(pk):
                    break
        finally:
            self._syncing.pop(pk, None)

    async def ingest(self, envelopes: list[bytes], author: bytes | None = None, *, via: str = "sync") -> Any:
        """Verify and store foreign entries in one write (only ``author``'s, if given);
        publish any fork found."""

        def work() -> Any:
            return self.store.ingest(envelopes, registry=self.registry, author=author)

        async with self._write_lock:
            report = work() if len(envelopes) <= INLINE_INGEST else await trio.to_thread.run_sync(work)
        self.count("entries.received", len(envelopes))
        self.count("entries.added", len(report.added))
        received = now_ms()
        self.arrivals.extend((e.author, e.seq, e.ts, received, via) for e in report.added)
        for proof in report.forks:
            await self._fork_found(proof)
        await self.loans.on_entries(report.added)
        return report

    async def _fork_found(self, proof: ForkProof) -> None:
        log.warning("FORK: %s signed two entries at seq %d", peer_id(proof.author), proof.seq)
        self.count("forks.found")
        await self._publish(wire.TOPIC_FRAUD, proof.encode())

    # -- gossip ----------------------------------------------------------------------------

    def _validator(self, topic: str):
        def validate(forwarder: Any, msg: Any) -> bool:
            try:
                wire.check_gossip(topic, msg.data)
                return True
            except ProtocolError as e:
                self.count(f"gossip.rejected.{topic.rsplit('/', 1)[-1]}")
                try:
                    pk = public_key_from_peer_id(forwarder.to_base58())
                except Exception:
                    return False
                if self._nursery is not None and pk != self.key.public_key:
                    self._nursery.start_soon(self._penalise, pk, "bad_gossip", f"{topic}: {e.message}")
                return False
            except Exception:  # a validator must never raise into libp2p
                log.exception("validator for %s failed", topic)
                return False

        return validate

    async def _read_topic(self, topic: str, sub: Any) -> None:
        while True:
            msg = await sub.get()
            try:
                await self._on_gossip(topic, msg)
            except ProtocolError as e:
                self.count("gossip.dropped")
                log.debug("gossip on %s dropped: %s", topic, e)
            except Exception:
                log.exception("handling gossip on %s failed", topic)

    async def _on_gossip(self, topic: str, msg: Any) -> None:
        self.count(f"gossip.received.{topic.rsplit('/', 1)[-1]}")
        if topic == wire.TOPIC_ENTRIES:
            entries = wire.check_gossip(topic, msg.data)
            new = [e.envelope for e in entries if self.store.locate(e.id) is None]
            if not new:
                return
            report = await self.ingest(new, via="gossip")
            if report.errors:  # a gap: the entries before it come by sync
                self._sync_from_origin(msg)
        elif topic == wire.TOPIC_FRAUD:
            proof = wire.check_gossip(topic, msg.data)
            async with self._write_lock:
                new = self.store.record_fork(proof)
            if new:
                log.warning("FORK proof received: %s signed two entries at seq %d", peer_id(proof.author), proof.seq)
                self.count("forks.received")
        else:
            self.count("offers.received")
            await self.offers.on_gossip(msg.data)

    def _sync_from_origin(self, msg: Any) -> None:
        try:
            origin = public_key_from_peer_id(_peer_b58(msg.from_id))
        except Exception:
            origin = None
        targets = [origin] if origin in self.connected else list(self.connected)
        for pk in targets:
            self.request_sync(pk)

    async def _publish(self, topic: str, data: bytes) -> None:
        try:
            await self.pubsub.publish(topic, data)
            self.count(f"gossip.published.{topic.rsplit('/', 1)[-1]}")
        except Exception as e:  # best effort: sync delivers what gossip drops
            log.info("publish on %s failed: %s", topic, e)

    def announce(self, entries: list[Entry]) -> None:
        """Queue new entries (of one author) for gossip. A change of more than
        ``ANNOUNCE_LIMIT`` entries is announced by its last entry only: peers that see
        the gap pull the rest by sync instead of flooding the mesh."""
        chosen = entries if len(entries) <= ANNOUNCE_LIMIT else entries[-1:]
        self._outbox.extend(e.envelope for e in chosen)
        if self._outbox:
            self._outbox_ready.set()

    async def _gossip_entries(self) -> None:
        """Publish what ``announce`` queued: at once after a quiet window, else together
        with whatever else was appended within the window."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready = trio.Event()
            batch, self._outbox = self._outbox, []
            for group in wire.split_entries(batch):
                await self._publish(wire.TOPIC_ENTRIES, wire.entries_message(group))
            await trio.sleep(GOSSIP_WINDOW)

    # -- control API ---------------------------------------------------------------------------

    async def call(self, method: str, params: dict | None = None) -> Any:
        """What the control API answers to ``method`` (for in-process callers and tests)."""
        return await self.methods[method](params or {})

    def status(self) -> dict:
        heads = self.store.heads()
        forked = self.store.forked_authors()
        return {
            "peer_id": self.peer_id,
            "public_key": self.key.public_key.hex(),
            "pid": os.getpid(),
            "version": _version(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "listen": self.listen_addrs(),
            "peers": [{"peer_id": c.peer_id, "addr": c.addr, "direction": c.direction} for c in self.connected.values()],
            "heads": [
                {"author": peer_id(a), "seq": h.seq, "id": h.id.hex(), "ts": h.ts, "forked": a in forked}
                for a, h in sorted(heads.items())
            ],
            "forked": sorted(peer_id(a) for a in forked),
            "sync": {
                "state": "syncing" if self._syncing else "idle",
                "last_round_ms": self._last_round_ms,
                "entries_received": self.counters.get("entries.added", 0),
            },
            "counters": dict(sorted(self.counters.items())),
        }

    def peers(self) -> dict:
        now = time.monotonic()
        return {
            "peers": [
                {
                    "peer_id": c.peer_id,
                    "addr": c.addr,
                    "direction": c.direction,
                    "connected_s": round(now - c.since, 3),
                    "score": self.book.score(pk),
                }
                for pk, c in self.connected.items()
            ]
        }

    def _methods(self) -> dict:
        from p2pnode.ledger.ops import ledger_methods

        async def status(params: dict) -> dict:
            return self.status()

        async def peers(params: dict) -> dict:
            return self.peers()

        async def connect(params: dict) -> dict:
            addr = params.get("addr")
            if not isinstance(addr, str):
                raise ApiError("connect needs 'addr', a multiaddr ending in /p2p/<peer id>", code="bad_params")
            try:
                pid = await self.connect(addr)
            except ValueError as e:
                raise ApiError(f"bad address {addr}: {e}", code="bad_address") from None
            except trio.TooSlowError:
                raise ApiError(f"no answer from {addr} within {DIAL_TIMEOUT:.0f} s", code="dial_failed") from None
            except Exception as e:
                raise ApiError(f"cannot connect to {addr}: {e}", code="dial_failed") from None
            return {"peer_id": pid, "connected": True}

        async def arrivals(params: dict) -> dict:
            return {
                "arrivals": [
                    {"author": peer_id(a), "seq": seq, "ts": ts, "received_ms": r, "via": via}
                    for a, seq, ts, r, via in self.arrivals
                ]
            }

        async def stop(params: dict) -> dict:
            self.stop()
            return {"stopping": True}

        def on_append(entries: list[Entry]) -> None:
            self.announce(entries)

        async def on_ingest(report: Any) -> None:
            received = now_ms()
            self.arrivals.extend((e.author, e.seq, e.ts, received, "import") for e in report.added)
            for proof in report.forks:
                await self._fork_found(proof)
            by_author: dict[bytes, list[Entry]] = {}
            for e in report.added:
                by_author.setdefault(e.author, []).append(e)
            for entries in by_author.values():
                self.announce(entries)
            await self.loans.on_entries(report.added)

        methods = ledger_methods(
            self.store, self.key, self.registry, now_ms=now_ms, on_append=on_append, on_ingest=on_ingest,
            lock=self._write_lock, check=self.loans.check_append,
        )
        methods.update(self.loans.methods())
        methods.update(self.offers.methods())
        methods.update(
            {"node.status": status, "node.peers": peers, "node.connect": connect, "node.stop": stop, "node.arrivals": arrivals}
        )
        return methods


class PortInUse(OSError):
    """A listen address is taken: by another node, most likely."""


def check_ports_free(addrs: list[str]) -> None:
    """Raise ``PortInUse`` naming the first TCP listen address that another socket holds.

    py-libp2p listens with SO_REUSEPORT (for hole punching), so a second node on a taken
    port would start without error and share the port with the first, the kernel handing
    each incoming connection to either. A plain bind tells the truth.
    """
    import socket

    for a in addrs:
        parts = a.split("/")
        if len(parts) < 5 or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp" or parts[4] in ("", "0"):
            continue
        family = socket.AF_INET if parts[1] == "ip4" else socket.AF_INET6
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is fine
            try:
                s.bind((parts[2], int(parts[4])))
            except OSError as e:
                raise PortInUse(e.errno, f"cannot listen on {a}: {e.strerror} (is another node using port {parts[4]}?)") from None


def split_p2p_addr(addr: str) -> tuple[bytes, str]:
    """(public key, address without /p2p/...) of a multiaddr ending in ``/p2p/<id>``."""
    head, sep, pid = addr.rpartition("/p2p/")
    if not sep or not head or "/" in pid:
        raise ValueError("a peer address ends in /p2p/<peer id>")
    try:
        pk = public_key_from_peer_id(pid)
    except ProtocolError as e:
        raise ValueError(e.message) from None
    try:
        multiaddr.Multiaddr(head)
    except Exception as e:
        raise ValueError(f"not a multiaddr: {e}") from None
    return pk, head


def _peer_b58(raw: bytes) -> str:
    from libp2p.peer.id import ID

    return ID(raw).to_base58()


async def _close(stream: Any) -> None:
    with trio.move_on_after(2):
        try:
            await stream.close()
        except Exception:
            pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("p2pnode")
    except PackageNotFoundError:
        return "0+unknown"
