"""Finding and checking extensions: the ``p2pnode.extensions`` entry-point group.

``load`` reads every entry point of the group (built into p2pnode first, then the others
by name), checks each declaration against the contract (p2pnode/extension.py, rules 2 to
4) and against what is loaded before it, and returns the ones that pass with the kind
registry and method table they make, plus a failure for each that does not: a broken
extension is reported and left out, never fatal. Lending is found here like any other.

Imports neither trio nor libp2p: the CLI calls it for every command.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable

from protocol import wire
from protocol.kinds import KindRegistry, core_registry

from p2pnode.control.core import CORE_METHODS
from p2pnode.control.methods import MethodTable
from p2pnode.extension import API_VERSION, NAME, Extension

GROUP = "p2pnode.extensions"
BUILTIN_DISTRIBUTION = "p2pnode"
CORE_STREAMS = (*wire.SYNC_PROTOCOLS, wire.PEX_PROTOCOL)
CORE_FLAGS = frozenset({"--listen", "--bootstrap", "--mdns", "--no-mdns", "--log-level", "--log-file",
                        "--passphrase-file", "--help", "-h"})
SETTING_TYPES = {"bool": bool, "int": int, "str": str, "list": list}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """An extension left out, and why."""

    name: str
    reason: str

    def json(self) -> dict:
        return {"name": self.name, "error": self.reason}


@dataclass
class Loaded:
    """The extensions that passed, in load order, and what they make together."""

    extensions: list[Extension] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    registry: KindRegistry = field(default_factory=core_registry)
    methods: MethodTable = field(default_factory=MethodTable)
    sources: dict[str, str] = field(default_factory=dict)  # name -> distribution it came from

    def get(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)

    def fail(self, name: str, reason: str) -> None:
        log.debug("extension %s left out: %s", name, reason)  # the node logs its failures at start
        self.failures.append(Failure(name, reason))

    def prepare(self, store: Any) -> list[str]:
        """Make ``store`` fit these extensions before writing with them (``Store.use``:
        old keys adopted, indexes of absent extensions unmarked, new ones built)."""
        return store.use(self.registry, {e.name: dict(e.legacy_prefixes) for e in self.extensions},
                         {e.name: e.index_version for e in self.extensions})

    def verify_checks(self) -> list[tuple[str, Any]]:
        """``(name, check)`` of every loaded extension's verify check that can be imported;
        one that cannot is reported as a failing check."""
        from p2pnode.extension import resolve

        checks = []
        for ext in self.extensions:
            if not ext.verify:
                continue
            try:
                checks.append((ext.name, resolve(ext.verify)))
            except Exception as e:
                checks.append((ext.name, _broken_check(f"its verify check cannot be imported: {e}")))
        return checks

    def drop(self, name: str, reason: str) -> None:
        """Leave out an extension that loaded but failed later (its service did not start).
        Its kinds stay registered, so that entries of them are still classified."""
        self.extensions = [e for e in self.extensions if e.name != name]
        self.fail(name, reason)


def _broken_check(reason: str) -> Any:
    def check(store: Any, problem: Any) -> None:
        problem("check_failed", reason)

    return check


def load(disabled: Iterable[str] = (), *, points: Iterable[EntryPoint] | None = None) -> Loaded:
    """The extensions installed here minus ``disabled`` (names), checked (module docstring)."""
    out = Loaded()
    out.methods.declare_all(CORE_METHODS, "core")
    skip = set(disabled)
    found = list(entry_points(group=GROUP) if points is None else points)
    found.sort(key=lambda ep: (_distribution(ep) != BUILTIN_DISTRIBUTION, ep.name))
    for ep in found:
        if ep.name in skip:
            continue
        try:
            ext = ep.load()
        except Exception as e:  # an extension's bug must not take the node down
            out.fail(ep.name, f"cannot be imported: {type(e).__name__}: {e}")
            continue
        try:
            admit(out, ext, ep.name)
        except ValueError as e:
            out.fail(ep.name, str(e))
            continue
        out.sources[ext.name] = _distribution(ep) or "?"
    return out


def admit(out: Loaded, ext: Any, entry_name: str) -> None:
    """Add ``ext`` to ``out`` if it keeps the contract and clashes with nothing loaded;
    ``ValueError`` saying why not (and then ``out`` is unchanged)."""
    if not isinstance(ext, Extension):
        raise ValueError(f"entry point {entry_name} names a {type(ext).__name__}, not an Extension")
    if not NAME.fullmatch(ext.name):
        raise ValueError(f"name {ext.name!r} is not [a-z][a-z0-9_]{{0,31}}")
    if ext.api != API_VERSION:
        raise ValueError(f"written for extension contract {ext.api}; this p2pnode has {API_VERSION}")
    if out.get(ext.name) is not None:
        raise ValueError(f"an extension named {ext.name} is loaded already")
    if type(ext.index_version) is not int or not 1 <= ext.index_version < 2**31:
        raise ValueError(f"index_version {ext.index_version!r} is not an integer from 1")
    for t in ext.topics:
        if t.rate is not None and not (len(t.rate) == 2 and t.rate[0] > 0 and type(t.rate[1]) is int
                                       and t.rate[1] >= 1):
            raise ValueError(f"topic {t.name}: rate {t.rate!r} is not (messages per second > 0, burst >= 1)")
    _check_unique(ext, out)
    registry = out.registry.copy()
    for kind in ext.kinds:
        registry.register(kind, ext.name)  # ValueError if taken
    for name in ext.reacts:
        if name not in {k.name for k in ext.kinds}:
            raise ValueError(f"it reacts to kind {name}, which it does not declare")
    methods = MethodTable(dict(out.methods.methods), {}, dict(out.methods.owners))
    for m in ext.methods:
        methods.declare(m, ext.name)  # ValueError if taken
    for s in ext.settings:
        if s.type not in SETTING_TYPES:
            raise ValueError(f"setting {s.name}: type {s.type!r} is not one of {sorted(SETTING_TYPES)}")
    out.registry, out.methods = registry, methods
    out.extensions.append(ext)


def _check_unique(ext: Extension, out: Loaded) -> None:
    topics = set(wire.TOPICS) | {t.name for e in out.extensions for t in e.topics}
    for t in ext.topics:
        if t.name in topics:
            raise ValueError(f"gossip topic {t.name} is taken")
        topics.add(t.name)
    streams = set(CORE_STREAMS) | {s.protocol_id for e in out.extensions for s in e.streams}
    for s in ext.streams:
        if s.protocol_id in streams:
            raise ValueError(f"stream protocol {s.protocol_id} is taken")
        streams.add(s.protocol_id)
    flags = set(CORE_FLAGS) | {f for e in out.extensions for s in e.settings for f in _flags(s.flag)}
    for s in ext.settings:
        for f in _flags(s.flag):
            if f in flags:
                raise ValueError(f"start flag {f} is taken")
            flags.add(f)
    groups = {m.split(".")[0]: out.methods.owners[m] for m in out.methods.methods}
    for m in ext.methods:
        owner = groups.get(m.name.split(".")[0])
        if owner is not None and owner != ext.name:
            raise ValueError(f"method group {m.name.split('.')[0]}.* belongs to {owner}")
    sections = {c for e in out.extensions for c in e.config_sections} | {"node", "network", "ledger", "extensions"}
    for section in ext.config_sections:
        if section in sections:
            raise ValueError(f"config section [{section}] is taken")
    if len({s.name for s in ext.settings}) != len(ext.settings):
        raise ValueError("two settings have one name")


def _flags(flag: str | None) -> list[str]:
    if not flag:
        return []
    if not flag.startswith("--") or not flag[2:].replace("-", "").isalnum():
        raise ValueError(f"start flag {flag!r} is not --word[-word]")
    return [flag, "--no-" + flag[2:]]


def _distribution(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return getattr(dist, "name", None) if dist is not None else None


def settings_of(ext: Extension, section: dict, *, where: str, others: dict[str, dict] | None = None) -> dict[str, Any]:
    """``ext``'s settings from its config ``section`` (and, for a setting that lives in
    another section it owns, from ``others[that section]``): declared defaults, then the
    sections' values, each checked; ``ValueError`` naming the key and ``where``."""
    tables = {ext.config_section: section, **{k: v for k, v in (others or {}).items() if k != ext.config_section}}
    for name in sorted(set(section) & set(ext.retired_settings)):
        log.warning("%s: [%s] %s is no longer a setting of %s; its value is ignored", where,
                    ext.config_section, name, ext.name)
    for sec in ext.config_sections:
        declared = {s.name for s in ext.settings if ext.section_of(s) == sec}
        retired = set(ext.retired_settings) if sec == ext.config_section else set()
        extra = sorted(set(tables.get(sec, {})) - declared - retired)
        if extra:
            raise ValueError(f"{where}: [{sec}] has no setting {', '.join(extra)} "
                             f"(it takes {', '.join(sorted(declared)) or 'none'})")
    out = {}
    for s in ext.settings:
        sec = ext.section_of(s)
        value = tables.get(sec, {}).get(s.name, s.default)
        out[s.name] = check_setting(s, value, where=f"{where}: {sec}.{s.name}")
    return out


def check_setting(s: Any, value: Any, *, where: str) -> Any:
    """``value`` checked against setting ``s`` (type, then its own check); ``ValueError``."""
    want = SETTING_TYPES[s.type]
    if type(value) is not want or (want is list and not all(isinstance(v, str) for v in value)):
        raise ValueError(f"{where} must be {'a list of text' if want is list else s.type}")
    if s.check is not None:
        try:
            s.check(value)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return value


def describe_extensions(loaded: Loaded) -> dict:
    """``node.extensions``'s answer: what each loaded extension declares, and the failures."""
    return {
        "extensions": [
            {"name": e.name, "version": e.version, "description": e.description,
             "source": loaded.sources.get(e.name, "?"), "kinds": [k.name for k in e.kinds],
             "topics": [t.name for t in e.topics], "streams": [s.protocol_id for s in e.streams],
             "methods": [m.name for m in e.methods], "tasks": list(e.tasks)}
            for e in loaded.extensions
        ],
        "failures": [f.json() for f in loaded.failures],
    }
