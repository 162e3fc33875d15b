"""What an extension's service gets from the node: ``Context`` (extension contract, rule 5).

Each field is one capability, typed, and the service reaches the node through nothing
else: no handle to the node itself, no private field of anyone. What the fields promise:

- ``key``: the node's signing key (``key.public_key`` is the node's identity, ``me``).
- ``clock``: the node's one clock (p2pnode/clock.py): ``now_ms()`` for what is signed and
  ``today()`` for calendar days; every wait goes through trio, so a test's ``MockClock``
  drives both.
- ``chains``: read-only: every chain held (``head``, ``heads``, ``chain``, ``entry``,
  ``locate``, ``forked_authors``) — the store itself, whose writes go through ``writer``.
- ``records``: the extension's own key space (``Records``), and ``index``: the keys its
  kinds' index functions gave for the stored entries (read-only).
- ``writer``: own-chain appends and foreign ingests (``Ledger``): serialised, durable,
  followed by the hooks (gossip, fork proofs, ``on_entries``); ``wait_head`` wakes on a
  write.
- ``publish(topic, data)``: best-effort gossip on a topic the extension declared.
- ``open_stream(peer, protocol_id)``: a ``FramedStream`` to ``peer`` on a stream protocol
  the extension declared, speaking its codec (close it when done).
- ``spawn(fn, *args)``: run ``fn(*args)`` as a task in the node's nursery: it ends when the
  node stops; an exception it raises is logged and counted in ``status`` (``tasks``) and
  does not end the node (p2pnode/supervisor.py).
- ``peers``: the connected peers and a way to ask for a sync with one.
- ``settings``: the extension's config section, checked against its declared settings,
  with the ``p2pnode start`` flags applied.
- ``count(name, n)``: add to a counter shown by ``p2pnode status``.
- ``save_settings(values)``: write some of the extension's settings (by name) to the
  home's config.toml, checked, so that the next start reads them; ``ConfigError`` if it
  cannot. It changes nothing in ``settings``: the service applies a new value itself.
- ``log``: the extension's logger (``p2pnode.ext.<name>``), shown at the node's
  ``--log-level``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from protocol.keys import SigningKey

from p2pnode.clock import Clock
from p2pnode.ledger.store import Chains, IndexView, Records
from p2pnode.ledger.writer import Ledger
from p2pnode.net.streams import FramedStream

log = logging.getLogger(__name__)


class Peers:
    """The peers a service may talk to."""

    def __init__(self, connected: Callable[[], set[bytes]], request_sync: Callable[[bytes], None]) -> None:
        self._connected = connected
        self._request_sync = request_sync

    def connected(self) -> set[bytes]:
        """Public keys of the peers connected now."""
        return self._connected()

    def is_connected(self, pk: bytes) -> bool:
        return pk in self._connected()

    def request_sync(self, pk: bytes) -> None:
        """Pull ``pk``'s news now (or right after the pull under way); no-op if not connected."""
        if pk in self._connected():
            self._request_sync(pk)


@dataclass(frozen=True)
class Context:
    extension: str
    key: SigningKey
    clock: Clock
    chains: Chains
    records: Records
    index: IndexView
    writer: Ledger
    publish: Callable[[str, bytes], Awaitable[None]]
    open_stream: Callable[[bytes, str], Awaitable[FramedStream]]
    spawn: Callable[..., None]
    peers: Peers
    settings: Mapping[str, Any] = field(default_factory=dict)
    count: Callable[..., None] = lambda name, n=1: None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("p2pnode.ext"))
    save_settings: Callable[[dict], None] = lambda values: None

    @property
    def me(self) -> bytes:
        return self.key.public_key
