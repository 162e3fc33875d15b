"""The running node: one store, one libp2p host, gossip, sync, peer exchange, the control
socket and the extensions' services, all as tasks of one trio nursery.

This module only puts the parts together (p2pnode/net/, p2pnode/ledger/, p2pnode/control/,
p2pnode/services.py); each part says what it promises. It knows no extension by name.

``Node.run`` promises: when it returns (after ``stop()``, SIGINT or SIGTERM) every task
has ended, the host is closed, the control socket is removed, the signature workers have
exited and the store is closed, so a new node can start on the same home at once.
Nothing a peer sends can end it.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio

from protocol import wire
from protocol.entry import Entry
from protocol.fork import ForkProof
from protocol.keys import SigningKey, peer_id

from p2pnode.clock import SYSTEM, Clock
from p2pnode.context import Peers
from p2pnode.control.methods import MethodTable
from p2pnode.control.server import serve_control, socket_path
from p2pnode.errors import ApiError
from p2pnode.extensions import Loaded, describe_extensions
from p2pnode.home import DEFAULT_OWN_CHAIN_WAIT, Home
from p2pnode.ledger.handlers import ledger_handlers
from p2pnode.ledger.sigpool import SignaturePool
from p2pnode.ledger.store import Reserve, Store, StoreError, free_bytes
from p2pnode.ledger.writer import Ledger
from p2pnode.net.addresses import check_ports_free
from p2pnode.net.connections import DIAL_TIMEOUT, Connections
from p2pnode.net.gossip import Gossip, TopicSpec
from p2pnode.net.keepalive import DEFAULT_INTERVAL as PING_INTERVAL, DEFAULT_TIMEOUT as PING_TIMEOUT, Keepalive
from p2pnode.net.ownchain import OwnChainCheck
from p2pnode.net.peers import PeerBook
from p2pnode.net.pex import PeerExchange
from p2pnode.net.streams import StreamRouter
from p2pnode.net.syncer import SYNC_INTERVAL, Syncer
from p2pnode.services import Parts, Running, check_append, peer_connected, start_services, start_tasks
from p2pnode.net.interest import STRANGER_BUDGET, Interest
from p2pnode.supervisor import Supervisor

log = logging.getLogger("p2pnode")


ENTRIES_RATE = (100.0, 500)  # entries-topic messages per second and burst, per forwarding peer
FRAUD_RATE = (5.0, 50)  # fork proofs: rare by nature


@dataclass
class NodeSettings:
    listen: list[str]
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = False
    sync_interval: float = SYNC_INTERVAL
    pex: bool = True  # exchange and dial peers; off only to keep a test topology fixed
    ping_interval: float = PING_INTERVAL
    """Seconds between keepalive pings of each peer (keepalive.py)."""
    ping_timeout: float = PING_TIMEOUT
    """Seconds a ping may take before its connection is taken for dead, closed and redialled."""
    reserve: Reserve = field(default_factory=Reserve)
    """Free disk space the store keeps (store.py, "The disk")."""
    own_chain_wait: float = DEFAULT_OWN_CHAIN_WAIT
    """Seconds appends are held at start while peers are asked for the own chain (ownchain.py)."""
    stranger_budget: int = STRANGER_BUDGET
    """Chains of strangers (no standing with any extension) the node holds at most (interest.py)."""
    extensions: dict[str, dict] = field(default_factory=dict)
    """Each extension's settings by its name, checked (``extensions.settings_of``)."""
    verify_workers: int | None = None
    """Signature worker processes (p2pnode/ledger/sigpool.py): None, one per core (at most
    ``sigpool.MAX_WORKERS``), started on the first big batch; 0, none (all in-process)."""


class Node:
    """A node on ``home``, signing with ``key``, running the ``loaded`` extensions. Build,
    then ``await run()``; the parts below exist once ``run`` has started the node."""

    def __init__(self, home: Home, key: SigningKey, settings: NodeSettings, loaded: Loaded,
                 clock: Clock = SYSTEM) -> None:
        self.home = home
        self.key = key
        self.settings = settings
        self.loaded = loaded
        self.registry = loaded.registry
        self.clock = clock
        self.peer_id = peer_id(key.public_key)
        self.book = PeerBook(key.public_key)
        self.counters: dict[str, int] = {}
        self.store: Store | None = None
        self.sigpool: SignaturePool | None = None
        self.ledger: Ledger | None = None
        self.host: Any = None
        self.pubsub: Any = None
        self.conns: Connections | None = None
        self.gossip: Gossip | None = None
        self.syncer: Syncer | None = None
        self.tasks: Supervisor | None = None
        self.own_chain: OwnChainCheck | None = None
        self.methods = MethodTable(dict(loaded.methods.methods), {}, dict(loaded.methods.owners))
        self.services: dict[str, Any] = {}
        self._running: list[Running] = []
        self._stop = trio.Event()
        self._started_at = 0.0

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the node to shut down; ``run`` returns once it has."""
        self._stop.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from libp2p.tools.anyio_service import background_trio_service

        from p2pnode.net.host import build_host, build_pubsub

        listen = [multiaddr.Multiaddr(a) for a in self.settings.listen]
        self.store = self.home.open_store(self.settings.reserve)  # first: a running node on this home says so
        try:
            self.loaded.prepare(self.store)
            check_ports_free(self.settings.listen)
        except BaseException:
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
                            await self.conns.hang_up()
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
            if self.sigpool is not None:
                self.sigpool.close()  # (waits for the workers: none is left once run returns)
            self.store.close()
            log.info("stopped")

    def _build(self) -> None:
        """The parts, wired to each other; nothing runs yet."""
        self.sigpool = SignaturePool(self.settings.verify_workers, count=self.count)  # (no process until used)
        self.ledger = Ledger(self.store, self.key, self.registry, self.clock, count=self.count, pool=self.sigpool)
        self.conns = Connections(self.host, self.pubsub, self.book, self.clock, own_key=self.key.public_key,
                                 mdns=self.settings.mdns, count=self.count)
        self.streams = StreamRouter(self.host, penalise=self.conns.penalise, count=self.count)
        self.syncer = Syncer(self.ledger, self.conns, self.streams, self.clock, interval=self.settings.sync_interval,
                             count=self.count)
        dials = self.settings.pex and (bool(self.settings.bootstrap) or self.settings.mdns)  # (the dialer runs with pex)
        self.own_chain = OwnChainCheck(self.ledger, self.conns, self.syncer, self.clock,
                                       wait=self.settings.own_chain_wait, peers_configured=dials)
        self.keepalive = Keepalive(self.host, self.conns, self.clock, interval=self.settings.ping_interval,
                                   timeout=self.settings.ping_timeout, count=self.count)
        self.pex = PeerExchange(self.conns, self.streams, own_key=self.key.public_key,
                                announce_addrs=self._announce_addrs, count=self.count)
        self.gossip = Gossip(self.pubsub, own_key=self.key.public_key, count=self.count, penalise=self.conns.penalise)
        # Rates per forwarding peer (gossip.py): a node sends at most one entries message per
        # 100 ms window of its own, so 100/s leaves room for the many authors a forwarder
        # relays; what is over it is dropped unforwarded, and sync brings it if it matters.
        self.gossip.add(TopicSpec(wire.TOPIC_ENTRIES, lambda d: wire.check_gossip(wire.TOPIC_ENTRIES, d),
                                  self._on_entries_gossip, wire.MAX_GOSSIP_SIZE, rate=ENTRIES_RATE))
        self.gossip.add(TopicSpec(wire.TOPIC_FRAUD, lambda d: wire.check_gossip(wire.TOPIC_FRAUD, d),
                                  self._on_fraud_gossip, 256 * 1024, rate=FRAUD_RATE))
        self.ledger.on_announce(self.gossip.announce)
        self.ledger.on_fork(self._fork_found)

    async def _serve(self, task_status: Any) -> None:
        self._build()
        for addr in self.settings.bootstrap:
            self.conns.learn_bootstrap(addr)
        async with trio.open_nursery() as nursery:
            self.tasks = tasks = Supervisor(nursery, self.clock)
            self.syncer.start(nursery)
            self.own_chain.hold()  # before anything can append: services, handlers, hooks
            tasks.spawn("own_chain.check", self.own_chain.run)
            parts = Parts(self.key, self.clock, self.ledger, self.gossip, self.streams, self.methods,
                          Peers(lambda: set(self.conns.connected), self.syncer.request), self.count,
                          self.home.config_file)
            self._running = await start_services(self.loaded, parts, self.settings.extensions, tasks)
            self.services = {r.extension.name: r.service for r in self._running}
            standings = [fn for fn in (getattr(r.service, "standing", None) for r in self._running) if callable(fn)]
            self.ledger.interest = Interest(self.key.public_key, self.store, self.registry, standings,
                                            self.settings.stranger_budget, self.count)
            handlers = ledger_handlers(self.ledger, checks=self.loaded.verify_checks(),
                                       check_append=check_append(self._running, self.registry))
            for name, handler in {**handlers, **self._node_handlers()}.items():
                self.methods.bind(name, handler)
            self.conns.on_connect(self._peer_connected)
            self.conns.on_another_connection(self.syncer.pull_over)
            await self.gossip.start(nursery)
            self._started_at = self.clock.monotonic()
            await nursery.start(serve_control, socket_path(self.home.path), self.methods)
            tasks.loop("connections.watch", self.conns.watch)
            tasks.loop("sync.routine", self.syncer.routine)
            tasks.loop("keepalive", self.keepalive.run)
            if self.settings.pex:
                tasks.loop("connections.dial", self.conns.dial_loop, nursery)
                tasks.loop("pex.loop", self.pex.loop, nursery)
            start_tasks(self._running, tasks)
            nursery.start_soon(self._signals)
            for a in self.listen_addrs():
                log.info("listening on %s", a)
            task_status.started(self)
            await self._stop.wait()
            log.info("stopping")
            nursery.cancel_scope.cancel()

    def _peer_connected(self, pk: bytes) -> None:
        self.syncer.request(pk)
        peer_connected(self._running, self.tasks, pk)
        if self.settings.pex:
            self.tasks.spawn("pex.exchange", self.pex.exchange, pk)

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

    # -- what the parts share ------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    @property
    def connected(self) -> dict:
        return self.conns.connected if self.conns else {}

    async def connect(self, addr: str) -> str:
        return await self.conns.connect(addr)

    async def _fork_found(self, proof: ForkProof) -> None:
        await self.gossip.publish(wire.TOPIC_FRAUD, proof.encode())

    # -- core gossip ------------------------------------------------------------------------

    async def _on_entries_gossip(self, data: bytes, sender: bytes | None, entries: list[Entry]) -> None:
        """``entries``: what the topic's validator made of ``data`` (each entry parsed and
        its signature verified, so not verified again); ``sender``: the peer that
        forwarded them, which is asked first for what they lack (gossip.py)."""
        new = [e for e in entries if self.store.locate(e.id) is None]
        if not new:
            return
        try:
            report = await self.ledger.ingest(new, via="gossip", parsed=True)
        except StoreError as e:  # below the reserve, or failed: status says so; sync brings them later
            self.count("entries.refused")
            log.debug("gossip entries not stored: %s", e)
            return
        if report.errors:  # a gap: the entries before it come by sync
            for e in entries:
                head = self.store.head(e.author)
                if head is None or head.seq < e.seq:
                    self.syncer.note_gap(e.author, e.seq)
            targets = [sender] if sender in self.conns.connected else list(self.conns.connected)
            for pk in targets:
                self.syncer.request(pk)

    async def _on_fraud_gossip(self, data: bytes, sender: bytes | None, proof: ForkProof) -> None:
        try:
            recorded = await self.ledger.record_fork(proof)
        except StoreError as e:  # below the reserve, or failed: the proof comes again with sync
            log.debug("fork proof not stored: %s", e)
            return
        if recorded:
            log.warning("FORK proof received: %s signed two entries at seq %d", peer_id(proof.author), proof.seq)
            self.count("forks.received")

    # -- control API ---------------------------------------------------------------------------

    async def call(self, method: str, params: dict | None = None) -> Any:
        """What the control API answers to ``method`` (for in-process callers and tests)."""
        return await self.methods.call(method, params or {})

    def status(self) -> dict:
        heads = self.store.heads()
        forked = self.store.forked_authors()
        return {
            "peer_id": self.peer_id,
            "public_key": self.key.public_key.hex(),
            "pid": os.getpid(),
            "version": _version(),
            "uptime_s": round(self.clock.monotonic() - self._started_at, 3),
            "listen": self.listen_addrs(),
            "peers": [{"peer_id": c.peer_id, "addr": c.addr, "direction": c.direction}
                      for c in self.conns.connected.values()],
            "heads": [
                {"author": peer_id(a), "seq": h.seq, "id": h.id.hex(), "ts": h.ts, "forked": a in forked}
                for a, h in sorted(heads.items())
            ],
            "forked": sorted(peer_id(a) for a in forked),
            "store": self._store_state(),
            "own_chain": self.own_chain.state(),
            "strangers": self.ledger.interest.state() if self.ledger.interest else None,
            "sync": {
                "state": "syncing" if self.syncer.busy else "idle",
                "last_round_ms": self.syncer.last_round_ms,
                "entries_received": self.counters.get("entries.added", 0),
                "progress": self.syncer.progress(),
            },
            "extensions": [{"name": e.name, "version": e.version, "source": self.loaded.sources.get(e.name, "?")}
                           for e in self.loaded.extensions],
            "extension_failures": [f.json() for f in self.loaded.failures],
            "tasks": self.tasks.json() if self.tasks else None,
            "counters": dict(sorted(self.counters.items())),
        }

    def _store_state(self) -> dict:
        """The store's part of ``status``: ``state`` "ok" or "failed" (then ``error`` and
        ``failed_at_ms`` say what and when), the free bytes and the reserves."""
        store = self.store
        try:
            free: int | None = free_bytes(store.path)
        except OSError:
            free = None
        return {"state": "failed" if store.failure else "ok", "error": store.failure,
                "failed_at_ms": store.failed_at_ms, "path": str(store.path), "free_bytes": free,
                "reserve_own_bytes": store.reserve.own, "reserve_others_bytes": store.reserve.others}

    def _node_handlers(self) -> dict[str, Any]:
        async def status() -> dict:
            return self.status()

        async def peers() -> dict:
            return {"peers": self.conns.peers()}

        async def connect(addr: str) -> dict:
            try:
                pid = await self.conns.connect(addr)
            except ValueError as e:
                raise ApiError(f"bad address {addr}: {e}", code="bad_address") from None
            except trio.TooSlowError:
                raise ApiError(f"no answer from {addr} within {DIAL_TIMEOUT:.0f} s", code="dial_failed") from None
            except Exception as e:
                raise ApiError(f"cannot connect to {addr}: {e}", code="dial_failed") from None
            return {"peer_id": pid, "connected": True}

        async def arrivals() -> dict:
            return {"arrivals": [{"author": peer_id(a.author), "seq": a.seq, "ts": a.ts,
                                  "received_ms": a.received_ms, "via": a.via} for a in self.ledger.arrivals]}

        async def extensions() -> dict:
            return describe_extensions(self.loaded)

        async def stop() -> dict:
            self.stop()
            return {"stopping": True}

        return {"node.status": status, "node.peers": peers, "node.connect": connect, "node.stop": stop,
                "node.arrivals": arrivals, "node.extensions": extensions}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("p2pnode")
    except PackageNotFoundError:
        return "0+unknown"
