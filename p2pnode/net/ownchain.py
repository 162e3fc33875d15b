"""At start, before the node signs anything new, it fetches back what its peers hold of
its own chain beyond the head of its store.

Why: a store restored from a backup, or repaired after damage, can end below entries the
node signed and peers already hold. Signing on top of that old head makes a second entry
at a seq peers hold: a fork of the node's own chain, whose proof marks it as fraudulent
on every node that sees it. An honest node must never fork itself.

``OwnChainCheck.run`` promises:

- appends are held (``Ledger.hold``) from ``hold()``, called before the node serves,
  until ``run`` returns, and released whatever happens (``finally``);
- with no peers configured (no bootstrap address, no mDNS) or a ``wait`` of 0 it
  releases at once: state ``no_peers`` or ``skipped``;
- otherwise it waits for peers to connect and pulls the own chain alone (``only``, so a
  long sync of other chains does not delay it) from each peer connected, as they come;
  the first pull that ends without an error ends the check: state ``checked``;
- it takes at most ``wait`` seconds: then the state is ``timed_out``, a warning is
  logged and appends go on (``unchecked`` if ``MAX_PEERS_ASKED`` peers all failed
  first). The routine sync still pulls the own chain from every peer,
  and a fork it finds is recorded and reported, never hidden.

``state()`` is what ``status`` shows: the state, the own head before and now, and how
many own entries came back.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from protocol.keys import peer_id

from p2pnode.clock import Clock
from p2pnode.ledger.writer import Ledger
from p2pnode.net.connections import Connections
from p2pnode.net.syncer import Syncer

log = logging.getLogger("p2pnode.ownchain")

MAX_PEERS_ASKED = 64  # peers asked at most, one after another, within the wait


class OwnChainCheck:
    """The check of one start (module docstring): ``hold()``, then ``run()`` as a task."""

    def __init__(self, ledger: Ledger, conns: Connections, syncer: Syncer, clock: Clock, *, wait: float,
                 peers_configured: bool) -> None:
        assert wait >= 0
        self.ledger = ledger
        self.conns = conns
        self.syncer = syncer
        self.clock = clock
        self.wait = wait
        self.peers_configured = peers_configured
        self.status = "pending"
        self.asked = 0
        self.fetched = 0
        self.head_before = 0
        self._connected = trio.Event()
        conns.on_connect(lambda pk: self._connected.set())

    def hold(self) -> None:
        """Hold appends until ``run`` has ended (call before the node serves)."""
        head = self.ledger.store.head(self.ledger.key.public_key)
        self.head_before = head.seq if head else 0
        if self.peers_configured and self.wait > 0:
            self.ledger.hold()
            self.status = "checking"

    async def run(self) -> None:
        try:
            if not self.peers_configured:
                self.status = "no_peers"
                return
            if self.wait <= 0:
                self.status = "skipped"
                return
            started = self.clock.monotonic()
            with trio.move_on_after(self.wait):
                await self._ask_peers()
                return
            self.status = "timed_out"
            log.warning("no peer answered for the own chain within %.0f s (%d asked): signing goes on; "
                        "the routine sync keeps pulling it", self.clock.monotonic() - started, self.asked)
        finally:
            self.ledger.release()

    async def _ask_peers(self) -> None:
        own = self.ledger.key.public_key
        tried: set[bytes] = set()
        while self.asked < MAX_PEERS_ASKED:
            fresh = [pk for pk in self.conns.connected if pk not in tried]
            if not fresh:  # wait for the next peer (no await since ``fresh`` was read: none is missed)
                self._connected = trio.Event()
                await self._connected.wait()
                continue
            pk = fresh[0]
            tried.add(pk)
            self.asked += 1
            try:
                result = await self.syncer.pull_chain(pk, own)
            except Exception as e:  # the peer left, timed out or misbehaved: ask the next one
                log.info("asking %s for the own chain failed: %s", peer_id(pk), e)
                continue
            if result.forks:
                log.error("the own chain is forked: a peer holds another entry at seq %d", result.forks[0].seq)
            if not result.errors:
                # Counted by the head: the routine pull from the same peer may have brought them first.
                head = self.ledger.store.head(own)
                self.fetched = max(0, (head.seq if head else 0) - self.head_before)
                if self.fetched:
                    log.warning("fetched back %d entries of the own chain that the store lacked", self.fetched)
                self.status = "checked"
                return
        self.status = "unchecked"
        log.warning("%d peers asked for the own chain, none answered cleanly: signing goes on", self.asked)

    def state(self) -> dict[str, Any]:
        head = self.ledger.store.head(self.ledger.key.public_key)
        return {"state": self.status, "held": self.ledger.held, "head_at_start": self.head_before,
                "head": head.seq if head else 0, "fetched": self.fetched, "peers_asked": self.asked,
                "wait_s": self.wait}
