"""Petnames: the names a user gives peers, kept in ``HOME/names.toml``, never sent anywhere.

A peer ID (``12D3KooW...``) is the identity; a petname is only this user's way to recognise
it, so it is local by construction: nothing here talks to a node. The file is TOML with one
table, one peer a line, the value a peer ID or an address ending in ``/p2p/<peer ID>``
(which `p2pnode connect NAME` dials):

    [names]
    alice = "12D3KooW..."
    bob = "/ip4/192.0.2.7/tcp/7420/p2p/12D3KooW..."

It is read line by line (a strict subset of TOML: no escapes, nothing but that table) so
that every error names its file and line. A name is 1 to 32 letters, digits, ``-`` or ``_``,
starting with a letter; names are unique without regard to case, and a peer has one name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import CodedError

NAMES_FILE = "names.toml"
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
NAME_RULE = "1 to 32 letters, digits, - or _, starting with a letter"

_BLANK = re.compile(r"\s*(#.*)?")
_HEADER = re.compile(r"\s*\[\s*names\s*\]\s*(#.*)?")
_ENTRY = re.compile(r"""\s*(?:(?P<bare>[A-Za-z0-9_-]+)|"(?P<dq>[^"\\]*)"|'(?P<sq>[^']*)')\s*=\s*"""
                    r"""(?:"(?P<vdq>[^"\\]*)"|'(?P<vsq>[^']*)')\s*(#.*)?""")


class NamesFileError(CodedError):
    """``names.toml`` cannot be read or is not as described above (exit 3, like a bad config)."""

    code = "bad_names_file"


@dataclass(frozen=True)
class Petname:
    name: str
    peer_id: str
    addr: str | None  # a multiaddr ending in /p2p/<peer_id>, or None

    def to_json(self) -> dict:
        return {"name": self.name, "peer_id": self.peer_id, "addr": self.addr}


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a petname, or None if it can."""
    if not NAME.fullmatch(name):
        return f"{name!r} is not a name: use {NAME_RULE}"
    return None


def parse_peer(value: str) -> tuple[str, str | None]:
    """``(peer ID, address or None)`` of a peer ID or of an address ending in
    ``/p2p/<peer ID>``; ``ValueError`` saying why not."""
    from protocol.keys import KeyFormatError, public_key_from_peer_id

    addr, pid = None, value
    if value.startswith("/"):
        where, _, pid = value.rpartition("/p2p/")
        if not where:
            raise ValueError(f"{value!r} is not an address ending in /p2p/<peer ID> "
                             "(e.g. /ip4/HOST/tcp/PORT/p2p/12D3KooW...)")
        addr = value
    try:
        public_key_from_peer_id(pid)
    except KeyFormatError as e:
        raise ValueError(str(e)) from None
    return pid, addr


class Petnames:
    """The names of one home, as read from its file (empty if there is none)."""

    def __init__(self, path: Path, entries: list[Petname]) -> None:
        self.path = path
        self.entries = entries
        self._by_peer = {e.peer_id: e for e in entries}
        self._by_name = {e.name.lower(): e for e in entries}

    def name_of(self, peer_id: str) -> str | None:
        e = self._by_peer.get(peer_id)
        return e.name if e else None

    def get(self, name: str) -> Petname | None:
        return self._by_name.get(name.lower())

    def of_peer(self, peer_id: str) -> Petname | None:
        return self._by_peer.get(peer_id)

    def set(self, name: str, peer_id: str, addr: str | None) -> tuple["Petnames", Petname | None]:
        """The names with ``name`` given to ``peer_id`` (a peer's old name is replaced; an
        address already known is kept unless a new one is given), and the entry replaced."""
        old = self._by_peer.get(peer_id)
        new = Petname(name, peer_id, addr or (old.addr if old else None))
        rest = [e for e in self.entries if e.peer_id != peer_id]
        return Petnames(self.path, sorted(rest + [new], key=lambda e: e.name.lower())), old

    def without(self, entry: Petname) -> "Petnames":
        return Petnames(self.path, [e for e in self.entries if e != entry])

    def save(self) -> None:
        """Write the file atomically: a temporary file in the home, synced, renamed over it."""
        import tempfile  # here: commands that only read names (status) never need it

        lines = ["# Names you gave peers (p2pnode name set|rm|list). Local: never sent to anyone.",
                 "# NAME = \"PEER ID\", or \"ADDRESS/p2p/PEER ID\" to let `p2pnode connect NAME` dial it.",
                 "", "[names]"]
        lines += [f'"{e.name}" = "{e.addr or e.peer_id}"' for e in self.entries]
        fd, tmp = tempfile.mkstemp(prefix=".names-", suffix=".tmp", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)


def names_path(home: Path) -> Path:
    return home / NAMES_FILE


def load(home: Path) -> Petnames:
    """The petnames of ``home``; ``NamesFileError`` naming the file and line of a fault."""
    path = names_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Petnames(path, [])
    except (OSError, UnicodeDecodeError) as e:
        raise NamesFileError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return Petnames(path, parse(text, path))


def parse(text: str, path: Path) -> list[Petname]:
    entries: list[Petname] = []
    seen_name: dict[str, int] = {}
    seen_peer: dict[str, int] = {}
    in_table = False
    for n, line in enumerate(text.splitlines(), 1):

        def bad(why: str) -> NamesFileError:
            return NamesFileError(f"{path}, line {n}: {why}")

        if _BLANK.fullmatch(line):
            continue
        if _HEADER.fullmatch(line):
            in_table = True
            continue
        m = _ENTRY.fullmatch(line)
        if m is None:
            raise bad('expected NAME = "PEER ID" (or a comment, or [names])')
        if not in_table:
            raise bad("names belong under a [names] line")
        name = next(g for g in (m["bare"], m["dq"], m["sq"]) if g is not None)
        value = m["vdq"] if m["vdq"] is not None else m["vsq"]
        why = check_name(name)
        if why:
            raise bad(why)
        try:
            pid, addr = parse_peer(value)
        except ValueError as e:
            raise bad(str(e)) from None
        if name.lower() in seen_name:
            raise bad(f"the name {name!r} is given already on line {seen_name[name.lower()]}")
        if pid in seen_peer:
            raise bad(f"peer {pid} is named already on line {seen_peer[pid]}")
        seen_name[name.lower()], seen_peer[pid] = n, n
        entries.append(Petname(name, pid, addr))
    return entries


# -- PEER arguments ----------------------------------------------------------------------------


def resolve_peer(home: Path, text: str, param_hint: str) -> str:
    """The peer ID a PEER argument names: a peer ID as it is, else the peer a petname names
    (the file is read only then, so a full peer ID works whatever the file holds)."""
    import click

    from protocol.keys import KeyFormatError, public_key_from_peer_id

    try:
        public_key_from_peer_id(text)
        return text
    except KeyFormatError:
        pass
    entry = load(home).get(text) if NAME.fullmatch(text) else None
    if entry is None:
        raise click.BadParameter(f"{text!r} is neither a peer ID (12D3KooW...) nor a name you gave a peer "
                                 "(see `p2pnode name list`)", param_hint=param_hint)
    return entry.peer_id


def resolve_addr(home: Path, text: str, param_hint: str) -> str:
    """The address an ADDR argument names: a multiaddr as it is, else the address saved
    with a petname."""
    import click

    if text.startswith("/"):
        return text
    entry = load(home).get(text) if NAME.fullmatch(text) else None
    if entry is None:
        raise click.BadParameter(f"{text!r} is neither an address (/ip4/HOST/tcp/PORT/p2p/<peer ID>) nor a name "
                                 "you gave a peer (see `p2pnode name list`)", param_hint=param_hint)
    if entry.addr is None:
        raise click.BadParameter(f"no address is saved with the name {entry.name}: save one with "
                                 f"`p2pnode name set /ip4/HOST/tcp/PORT/p2p/{entry.peer_id} {entry.name}`",
                                 param_hint=param_hint)
    return entry.addr
