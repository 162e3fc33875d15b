"""The extension contract, version 1 (docs/extensions.md walks through it).

An application on p2pnode is a set of extensions; the core (ledger, sync, gossip, peers,
control) knows none of them. Lending is the first, and it comes in through exactly this
door. An extension is one ``Extension`` value, named by an entry point in the group
``p2pnode.extensions``:

    [project.entry-points."p2pnode.extensions"]
    endorse = "p2pnode_endorse:EXTENSION"

Rules:

1. Everything in an ``Extension`` is a declaration. The module that holds it (and this
   one) imports neither trio nor libp2p, so the CLI reads every extension's kinds,
   methods, settings and commands fast. What runs inside the node is the *service*,
   named as ``"module:Class"`` and imported by the node alone; the CLI commands and the
   verify check are named the same way and imported by the CLI alone.
2. ``name`` (``[a-z][a-z0-9_]{0,31}``) is unique in a node. It names the extension's
   store spaces (``Records``: its own keys; its index) and, unless ``section`` says
   otherwise, its section of config.toml.
3. Each part is optional:
   - ``kinds``: entry kinds (``protocol.kinds.Kind``: a body validator and an index
     function), and with ``reacts`` the service's ``on_entries(entries)`` is called with
     every new stored entry (own or foreign) of those kinds whose body is valid;
   - ``topics``: gossip topics, each with a validator run inside libp2p before a message
     is delivered or forwarded, a size limit, and the service method that handles it;
   - ``streams``: stream protocols, each with its codec (frame payload to message and
     back), the service method that serves an inbound stream, a per-peer cap on
     concurrent inbound streams, and a frame size limit;
   - ``methods``: control-API methods (``p2pnode.control.methods.Method``), each bound
     to the service method its ``handler`` names;
   - ``tasks``: names of service methods run as background tasks in the node's nursery,
     started after the service and cancelled when the node stops; one that raises is
     logged, counted in ``status`` and started again after a backoff (supervisor.py);
   - ``cli``: a click command or group (or a list of them) added to ``p2pnode``;
   - ``verify``: a check of the extension's own records, run by ``ledger verify``
     (``p2pnode.ledger.verify.Check``);
   - ``settings``: the keys of its config section, typed, with defaults and help; a
     setting with a ``flag`` is also an option of ``p2pnode start``; a setting with a
     ``section`` lives in that section of config.toml instead (the extension owns it
     too: lending's ``[policy]``), and its name is unique among the extension's settings;
   - ``legacy_prefixes``: single-byte store prefixes its keys had before it had a space
     of its own (moved into its spaces when it loads);
   - ``index_version``: bumped whenever its kinds' index functions change, so that a
     store indexed by an older version has its index rebuilt once, at the next start;
   - ``retired_settings``: names of settings it no longer has; an old config.toml that
     still sets one starts all the same, the value ignored and a warning logged.
4. A name an extension declares (kind, topic, stream protocol, method, start flag) must
   not be taken by the core or by an extension loaded before it. A broken extension (it
   does not import, its declaration is invalid or clashes, its service fails to start)
   is reported and left out; the node still starts.
5. The service is built as ``Class(context)`` with a ``p2pnode.context.Context``: the
   node's key, clock, store views, writer, publish, open-stream, spawn, peers view,
   settings, counters and logger. It reaches the node through nothing else. Besides the
   handlers its declaration names, a service may define, and the node then calls:
   - ``async start()``: once, after it is built and before the node serves anything
     (load what a previous run left);
   - ``async on_entries(entries)``: with ``reacts`` (rule 3); entries stored while the
     extension was not loaded are not replayed to it (its index is rebuilt: read that);
   - ``async on_peer_connected(peer)``: a peer connected (as a task of its own);
   - ``standing(author) -> int``: how much the extension vouches for ``author`` (0:
     not at all); the node holds the chains of authors any extension gives standing,
     and those of others within a bounded budget (p2pnode/net/interest.py);
   - ``save_settings(values)`` (a Context capability, not a hook): write some of its
     settings to the home's config.toml, checked as at start, so that they survive a
     restart (``policy set``); the section's other lines are kept;
   - ``check_append(kind, body)``: before a running node signs ``ledger.append`` of one of
     its kinds, under the write lock; it refuses by raising a ``CodedError``. An append
     made with no node running (``p2pnode ledger append`` on a stopped home) is checked by
     the kind's validator only.
   A handler, hook or task that raises is logged and never ends the node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from protocol.kinds import Kind

from p2pnode.control.methods import Method

API_VERSION = 1
"""The version of this contract. An extension declares the version it was written for; a
node refuses (rule 4) one whose ``api`` differs."""

NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class Topic:
    """A gossip topic. ``validate(data)`` raises ``ProtocolError`` for a message that
    must be neither delivered nor forwarded (it runs in libp2p's validator: pure and
    fast); ``handler`` names the service method ``async (data, sender) -> None`` that
    takes a delivered message (``sender``: the forwarder's public key, or None).
    ``rate`` (messages per second, burst) limits what each forwarding peer may send on
    it: messages over it are neither delivered nor forwarded (counted
    ``gossip.rate_limited.<topic>``), so a peer is slowed down long before any ban."""

    name: str
    validate: Callable[[bytes], Any]
    handler: str
    max_size: int = 64 * 1024
    rate: tuple[float, int] | None = None


@dataclass(frozen=True)
class Codec:
    """How one stream protocol's frame payloads map to messages: ``decode(payload)``
    raises ``ProtocolError`` for a payload that breaks the protocol's rules."""

    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


@dataclass(frozen=True)
class StreamProtocol:
    """A stream protocol: frames are a 4-byte big-endian length and a payload of at most
    ``max_frame`` bytes. ``handler`` names the service method
    ``async (stream: FramedStream, peer: bytes) -> None`` that serves one inbound stream;
    a peer may hold at most ``max_per_peer`` of them at once (more are refused)."""

    protocol_id: str
    codec: Codec
    handler: str
    max_per_peer: int = 4
    max_frame: int = 256 * 1024


@dataclass(frozen=True)
class Setting:
    """One key of the extension's config section. ``type`` is ``bool``, ``int``, ``str``
    or ``list`` (of text); ``check(value)`` may refuse a value by raising ``ValueError``
    with the reason. A ``flag`` (``--review``) makes it an option of ``p2pnode start``.
    ``section`` names the config section it lives in, if not the extension's own."""

    name: str
    type: str
    default: Any
    help: str
    flag: str | None = None
    check: Callable[[Any], Any] | None = None
    section: str | None = None


@dataclass(frozen=True)
class Extension:
    """One extension's declaration (rules 1 to 5)."""

    name: str
    version: str
    description: str
    api: int = API_VERSION
    kinds: tuple[Kind, ...] = ()
    reacts: tuple[str, ...] = ()
    topics: tuple[Topic, ...] = ()
    streams: tuple[StreamProtocol, ...] = ()
    methods: tuple[Method, ...] = ()
    tasks: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = ()
    section: str | None = None
    service: str | None = None
    cli: str | None = None
    verify: str | None = None
    legacy_prefixes: tuple[tuple[bytes, str], ...] = ()
    index_version: int = 1
    retired_settings: tuple[str, ...] = ()

    @property
    def config_section(self) -> str:
        return self.section or self.name

    @property
    def config_sections(self) -> tuple[str, ...]:
        """Every config section it owns: its own, then those its settings name."""
        out = [self.config_section]
        for s in self.settings:
            if s.section and s.section not in out:
                out.append(s.section)
        return tuple(out)

    def section_of(self, setting: Setting) -> str:
        return setting.section or self.config_section


def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names (rule 1)."""
    import importlib

    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"{ref!r} is not 'module:attribute'")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
