"""Extensions inside a running node: each service built with its ``Context``, then its
topics, streams, methods, entry hooks, append checks and tasks routed to it.

``start_services`` promises: an extension whose service cannot be imported or built, or
whose declared handler is missing, is reported (``Loaded.drop``: ``node.status`` lists it
with why) and left out whole, never half-wired; the node still starts. Wiring happens
before the node subscribes to any topic or answers any request, so nothing reaches a
service before it exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from p2pnode.context import Context, Peers
from p2pnode.control.methods import MethodTable
from p2pnode.extension import Extension, resolve
from p2pnode.extensions import Loaded
from p2pnode.ledger.writer import Ledger
from p2pnode.net.gossip import Gossip, TopicSpec
from p2pnode.net.streams import FramedStream, StreamRouter
from p2pnode.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class Running:
    """One extension's service, running."""

    extension: Extension
    service: Any


@dataclass
class Parts:
    """What of the node a service is given (through its Context) and routed into."""

    key: Any
    clock: Any
    ledger: Ledger
    gossip: Gossip
    streams: StreamRouter
    methods: MethodTable
    peers: Peers
    count: Callable[..., None]
    config_file: Any = None  # the home's config.toml (a Path), where ``save_settings`` writes


def build_context(ext: Extension, parts: Parts, settings: dict, tasks: Supervisor) -> Context:
    store = parts.ledger.store
    topics = {t.name for t in ext.topics}
    protocols = {s.protocol_id: s for s in ext.streams}

    async def publish(topic: str, data: bytes) -> None:
        if topic not in topics:
            raise ValueError(f"extension {ext.name} did not declare gossip topic {topic}")
        await parts.gossip.publish(topic, data)

    async def open_stream(peer: bytes, protocol_id: str) -> FramedStream:
        spec = protocols.get(protocol_id)
        if spec is None:
            raise ValueError(f"extension {ext.name} did not declare stream protocol {protocol_id}")
        raw = await parts.streams.open(peer, protocol_id)
        return FramedStream(raw, peer, spec.codec.encode, spec.codec.decode, spec.max_frame)

    def count(name: str, n: int = 1) -> None:
        parts.count(name, n)

    from p2pnode.ledger.store import Chains

    def save_settings(values: dict) -> None:
        if parts.config_file is None:
            raise ValueError("this node has no config file to save settings in")
        from p2pnode.home import save_settings as save

        save(parts.config_file, ext, values)

    return Context(
        extension=ext.name, key=parts.key, clock=parts.clock, chains=Chains(store),
        records=store.records(ext.name), index=store.index(ext.name), writer=parts.ledger, publish=publish,
        open_stream=open_stream, spawn=_spawner(tasks, ext.name), peers=parts.peers,
        settings=dict(settings), count=count, log=logging.getLogger(f"p2pnode.ext.{ext.name}"),
        save_settings=save_settings,
    )


async def start_services(loaded: Loaded, parts: Parts, settings: dict[str, dict],
                         tasks: Supervisor) -> list[Running]:
    """Build every loaded extension's service and route its declarations to it (module
    docstring). Returns the running ones, in load order."""
    running = []
    for ext in list(loaded.extensions):
        try:
            service = None
            if ext.service is not None:
                cls = resolve(ext.service)
                service = cls(build_context(ext, parts, settings.get(ext.name, {}), tasks))
                start = getattr(service, "start", None)
                if start is not None:
                    await start()
            _check_handlers(ext, service)
        except Exception as e:  # an extension's bug must not take the node down
            log.exception("extension %s left out", ext.name)
            loaded.drop(ext.name, f"its service did not start: {type(e).__name__}: {e}")
            continue
        _route(ext, service, parts)
        running.append(Running(ext, service))
    return running


def _check_handlers(ext: Extension, service: Any) -> None:
    """Every name the declaration routes to the service must be an attribute of it."""
    wanted = [t.handler for t in ext.topics] + [s.handler for s in ext.streams] + [m.handler for m in ext.methods]
    wanted += list(ext.tasks) + (["on_entries"] if ext.reacts else [])
    missing = sorted({w for w in wanted if service is None or not callable(getattr(service, w, None))})
    if missing:
        raise AttributeError(f"the service has no {', '.join(missing)}")


def _route(ext: Extension, service: Any, parts: Parts) -> None:
    for t in ext.topics:
        parts.gossip.add(TopicSpec(t.name, t.validate, _topic_handler(getattr(service, t.handler)), t.max_size,
                                   t.rate))
    for s in ext.streams:
        parts.streams.add(s.protocol_id, ext.name, _stream_handler(getattr(service, s.handler), s), s.max_per_peer)
    for m in ext.methods:
        parts.methods.bind(m.name, getattr(service, m.handler))
    if ext.reacts:
        parts.ledger.add_hook(ext.reacts, service.on_entries)


def _topic_handler(fn: Callable[..., Any]) -> Callable[[bytes, bytes | None, Any], Any]:
    """An extension's ``async (data, sender)`` as a topic handler (gossip.py), which is
    also handed the validator's value: an extension's handler decodes ``data`` itself."""

    async def handle(data: bytes, sender: bytes | None, value: Any) -> None:
        await fn(data, sender)

    return handle


def _stream_handler(fn: Callable[..., Any], spec: Any) -> Callable[[Any, bytes | None], Any]:
    async def serve(raw: Any, pk: bytes | None) -> None:
        if pk is None:
            return  # not one of ours: nothing to answer
        await fn(FramedStream(raw, pk, spec.codec.encode, spec.codec.decode, spec.max_frame), pk)

    return serve


def check_append(running: list[Running], registry: Any) -> Callable[[str, Any], None]:
    """``check(kind, body)``: the ``check_append`` of the service that owns ``kind``, if any."""
    by_name = {r.extension.name: r.service for r in running}

    def check(kind: str, body: Any) -> None:
        service = by_name.get(registry.owner(kind) or "")
        fn = getattr(service, "check_append", None)
        if fn is not None:
            fn(kind, body)

    return check


def peer_connected(running: list[Running], tasks: Supervisor, pk: bytes) -> None:
    """Tell every service that wants to know (``on_peer_connected``) that ``pk`` connected."""
    for r in running:
        fn = getattr(r.service, "on_peer_connected", None)
        if fn is not None:
            tasks.spawn(f"{r.extension.name}.on_peer_connected", fn, pk)


def start_tasks(running: list[Running], tasks: Supervisor) -> None:
    """Every extension's declared tasks, each started again after a backoff if it fails."""
    for r in running:
        for name in r.extension.tasks:
            tasks.loop(f"{r.extension.name}.{name}", getattr(r.service, name))


def _spawner(tasks: Supervisor, extension: str) -> Callable[..., None]:
    """``Context.spawn`` for ``extension``: one-shot tasks named after it and the function."""

    def spawn(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        tasks.spawn(f"{extension}.{getattr(fn, '__name__', 'task')}", fn, *args)

    return spawn
