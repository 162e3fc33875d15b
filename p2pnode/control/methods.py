"""Declared control-API methods: each says in one place its name, parameters, result and
help (as Bitcoin Core's ``RPCHelpMan`` does), and that one declaration drives the
server's parameter checks, the CLI's calls and the method reference in docs/api.md.

Rules:

1. A method's name is ``group.verb`` (lower case, ``[a-z][a-z0-9_]*`` each), unique in a
   node. The core declares ``node.*`` and ``ledger.*``; an extension declares its own.
2. Params are by name. ``check`` refuses (``bad_params``, naming the param) a name not
   declared, a required one missing, or a value not of its declared type or range, before
   any handler runs; it fills in declared defaults. Types: ``str``, ``int``, ``bool``,
   ``peer`` (a peer ID string), ``hex`` (lower or upper case hex digits), ``object``,
   ``list`` (of ``items``), ``any`` (any JSON value).
3. A handler is called with the checked params as keyword arguments and returns a JSON
   value. It refuses by raising a ``CodedError`` (``ApiError``, ``ProtocolError``, ...).
4. This module imports neither trio nor libp2p: the CLI reads the declarations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from p2pnode.errors import bad_params

TYPES = ("str", "int", "bool", "peer", "hex", "object", "list", "any")
_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
_UNSET = object()


@dataclass(frozen=True)
class Param:
    """One named parameter: its type (``TYPES``), what it means, whether it must be given,
    its default, and bounds (``low``/``high`` for ints; ``max_len`` for text and lists;
    ``choices`` for text)."""

    name: str
    type: str
    help: str
    required: bool = False
    default: Any = None
    low: int | None = None
    high: int | None = None
    max_len: int | None = None
    choices: tuple[str, ...] = ()
    items: str = "str"

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"param {self.name}: type {self.type!r} is not one of {TYPES}")

    def describe(self) -> str:
        """The type with its bounds, for people: ``int 1..10000``, ``str (lend|borrow)``."""
        t = f"list of {self.items}" if self.type == "list" else self.type
        if self.low is not None or self.high is not None:
            t += f" {'' if self.low is None else self.low}..{'' if self.high is None else self.high}"
        if self.choices:
            t += f" ({'|'.join(self.choices)})"
        if self.max_len is not None:
            t += f", at most {self.max_len}"
        return t

    def check(self, value: Any) -> Any:
        """``value`` if it is of this param's type and within its bounds; ``bad_params``."""
        ok = _fits(self.type, value)
        if ok and self.type == "list":
            ok = all(_fits(self.items, v) for v in value)
        if ok and self.type == "int":
            ok = (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        if ok and self.max_len is not None and self.type in ("str", "list", "hex"):
            ok = len(value) <= self.max_len
        if ok and self.choices:
            ok = value in self.choices
        if not ok:
            raise bad_params(f'"{self.name}" must be {self.describe()}: {self.help}')
        return value


def _fits(type_: str, value: Any) -> bool:
    if type_ == "any":
        return True
    if type_ == "str":
        return isinstance(value, str)
    if type_ == "peer":
        from protocol.errors import ProtocolError
        from protocol.keys import public_key_from_peer_id

        try:
            public_key_from_peer_id(value) if isinstance(value, str) else None
        except ProtocolError:
            return False
        return isinstance(value, str)
    if type_ == "hex":
        return isinstance(value, str) and all(c in "0123456789abcdefABCDEF" for c in value)
    if type_ == "int":
        return type(value) is int
    if type_ == "bool":
        return type(value) is bool
    if type_ == "object":
        return isinstance(value, dict)
    return isinstance(value, list)


@dataclass(frozen=True)
class Method:
    """A declared control method (rule 1); ``handler`` names what runs it: for an
    extension, an attribute of its service; for the core, a key the node binds."""

    name: str
    help: str
    params: tuple[Param, ...] = ()
    result: str = ""
    handler: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"method name {self.name!r} is not group.verb")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.name}: a param is declared twice")

    def check(self, params: dict) -> dict:
        """Rule 2: the params, checked and with defaults filled in; ``bad_params`` otherwise."""
        declared = {p.name: p for p in self.params}
        extra = sorted(set(params) - set(declared))
        if extra:
            known = ", ".join(sorted(declared)) or "none"
            raise bad_params(f"unknown param(s) {', '.join(extra)} for {self.name}; it takes {known}")
        out = {}
        for p in self.params:
            value = params.get(p.name, _UNSET)
            if value is _UNSET or value is None:
                if p.required:
                    raise bad_params(f'{self.name} needs "{p.name}": {p.help}')
                out[p.name] = p.default
            else:
                out[p.name] = p.check(value)
        return out


Handler = Callable[..., Awaitable[Any]]


@dataclass
class MethodTable:
    """The methods a node serves: declarations and, in a running node, their handlers."""

    methods: dict[str, Method] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def declare(self, method: Method, owner: str, handler: Handler | None = None) -> None:
        if method.name in self.methods:
            raise ValueError(f"method {method.name} is declared already (by {self.owners[method.name]})")
        self.methods[method.name] = method
        self.owners[method.name] = owner
        if handler is not None:
            self.handlers[method.name] = handler

    def declare_all(self, methods: Iterable[Method], owner: str) -> None:
        for m in methods:
            self.declare(m, owner)

    def bind(self, name: str, handler: Handler) -> None:
        if name not in self.methods:
            raise ValueError(f"no method {name} is declared")
        self.handlers[name] = handler

    def get(self, name: str) -> Method | None:
        return self.methods.get(name)

    async def call(self, name: str, params: dict) -> Any:
        """Rule 2 then rule 3. ``KeyError`` for a name with no handler."""
        handler = self.handlers[name]
        return await handler(**self.methods[name].check(params))

    def unbound(self) -> list[str]:
        return sorted(set(self.methods) - set(self.handlers))


def reference(table: MethodTable) -> str:
    """The method reference of docs/api.md (Markdown), from the declarations alone."""
    out: list[str] = []
    groups: dict[str, list[Method]] = {}
    for m in table.methods.values():
        groups.setdefault(m.name.split(".")[0], []).append(m)
    for group in sorted(groups, key=lambda g: (g not in ("node", "ledger"), g != "node", g)):
        owner = table.owners[groups[group][0].name]
        out.append(f"### `{group}.*`" + ("" if owner == "core" else f" (extension `{owner}`)"))
        out.append("")
        for m in sorted(groups[group], key=lambda m: m.name):
            out.append(f"#### `{m.name}`")
            out.append("")
            out.append(m.help.strip())
            out.append("")
            if m.params:
                out.append("| param | type | | meaning |")
                out.append("|---|---|---|---|")
                for p in m.params:
                    need = "required" if p.required else ("default " + _json(p.default) if p.default is not None else "optional")
                    out.append(f"| `{p.name}` | {p.describe()} | {need} | {p.help} |")
            else:
                out.append("No params.")
            out.append("")
            if m.result:
                out.append(f"Result: {m.result.strip()}")
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def _json(value: Any) -> str:
    import json

    return f"`{json.dumps(value)}`"
