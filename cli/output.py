"""How commands print: JSON for scripts, tables for people, a closed stdout.

Exit codes (docs/cli.md) are a promise to scripts:

    0 success
    1 refused or damaged data (invalid body, bad import file, ``ledger verify`` found damage)
    2 usage error (unknown command or flag, bad value)
    3 node home problem (not initialised, already initialised, bad config)
    4 the store is held by a running node
    5 key problem (passphrase needed or wrong, key file damaged)
    6 no node is running at the home (for commands that need one: status, peers, stop, ...)

A command whose stdout is closed early (a pager quit, ``head`` had enough) ends as cat and
git do: silently, killed by SIGPIPE (status 141 in a shell). See ``StdoutClosed``.

This module never imports click, so that a command can answer without it (the fast path
of ``status``, cli/entry.py): ``echo`` writes a line as ``click.echo`` does. How a command
fails (``fail``, ``CommandError``) needs click and lives in cli/failure.py; both names are
still reachable here, imported on first use (``__getattr__`` below).
"""

from __future__ import annotations

import codecs
import json
import os
import select
import signal
import sys
from datetime import datetime, timezone
from typing import Any, NoReturn

from p2pnode.errors import EXIT_OF_CODE, FAILED, HOME, KEY, LOCKED, NOT_RUNNING, OK, USAGE  # noqa: F401


def __getattr__(name: str) -> Any:
    """``CommandError`` and ``fail``, from cli/failure.py (which imports click) when first
    asked for: every command module imports them from here, printing never needs them."""
    if name in ("CommandError", "fail"):
        from cli import failure

        return getattr(failure, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ANSI_STYLE = r"\033\[[0-?]*[ -/]*[@-~]"
"""An ANSI style code, as click's ``echo`` finds them to strip them (click/_compat.py)."""


def echo(text: str = "") -> None:
    """Write ``text`` and a newline to stdout and flush, as ``click.echo(text)`` does: a
    style code is stripped unless stdout is a terminal, and a stdout whose encoding is
    ASCII (a misconfigured locale) gets UTF-8, undecodable characters replaced."""
    stream = sys.stdout
    if stream is None:  # no stdout at all (a detached process): nothing to write to
        return
    text += "\n"
    if "\033" in text and not _isatty(stream):
        import re

        text = re.sub(ANSI_STYLE, "", text)
    buffer = getattr(stream, "buffer", None)
    if buffer is not None and _is_ascii(getattr(stream, "encoding", None) or "ascii"):
        stream.flush()
        buffer.write(text.encode("utf-8", "replace"))
        buffer.flush()
        return
    stream.write(text)
    stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # a stream that cannot tell is no terminal (as click decides)
        return False


def _is_ascii(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return False


def emit_json(obj: Any) -> None:
    echo(json.dumps(obj, indent=2, ensure_ascii=False))


def iso_ms(ts: int) -> str:
    """A ms timestamp as UTC ISO 8601 with milliseconds."""
    try:
        return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    except (OverflowError, OSError, ValueError):
        return str(ts)


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def console(stderr: bool = False):
    from rich.console import Console  # imported on use: commands that print JSON stay fast

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit 1, which scripts read as "refused": end like every command instead.
            raise StdoutClosed()

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people in pagers and logs: do not fold it at 80 columns.
    width = None if stream.isatty() else 200
    return _Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=None, header_style="bold")
    for i, c in enumerate(columns):
        last = i == len(columns) - 1
        t.add_column(c, overflow="fold", no_wrap=not last)
    for r in rows:
        t.add_row(*r)
    console().print(t)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


# -- peers ----------------------------------------------------------------------------------

SHORT_PEER_CHARS = 8
"""Characters of a peer ID its short form keeps: the last 8 of base58, about 47 random
bits (every Ed25519 peer ID starts with the same ``12D3KooW``, so its head tells nothing)."""


def as_peer_id(peer: str) -> str:
    """A peer ID as it is; a 64-hex Ed25519 public key (some views give those) as its peer ID."""
    if len(peer) == 64 and all(c in "0123456789abcdef" for c in peer.lower()):
        from protocol.keys import peer_id

        return peer_id(bytes.fromhex(peer))
    return peer


def short_peer(peer: str) -> str:
    """The one short form of a peer in text output: ``…`` and the last characters of its
    peer ID, e.g. ``…K51V7QaD`` (docs/cli.md, "Peers")."""
    return "…" + as_peer_id(peer)[-SHORT_PEER_CHARS:]


def peer_label(peer: str | None, names: Any = None) -> str:
    """How a table or a one-line message names a peer: the name the user gave it
    (``p2pnode name``), else its short form. ``names`` is a ``cli.petnames.Petnames``."""
    if not peer:
        return "-"
    pid = as_peer_id(peer)
    name = names.name_of(pid) if names is not None else None
    return name or short_peer(pid)


def peer_full(peer: str, names: Any = None) -> str:
    """How a detailed view names a peer: its full peer ID, after its name if it has one."""
    pid = as_peer_id(peer)
    name = names.name_of(pid) if names is not None else None
    return f"{name} ({pid})" if name else pid


def peers_table(title: str | None, columns: list[str], rows: list[list[str]], names: Any = None) -> None:
    """A table whose first column is full peer IDs, with a "name" column beside it when
    the user has named any of them."""
    named = [(names.name_of(r[0]) if names is not None else None) or "" for r in rows]
    if any(named):
        columns = [columns[0], "name", *columns[1:]]
        rows = [[r[0], n, *r[1:]] for r, n in zip(rows, named)]
    table(title, columns, rows)


# -- a closed stdout --------------------------------------------------------------------------


class StdoutClosed(BaseException):
    """stdout's reader has gone (a pager quit, ``head`` had enough).

    A BaseException, so that no handler of errors on the way (ours, click's, rich's)
    reports it as a failure; ``cli.main.main`` ends the process quietly once the command
    has unwound (stores closed, temporary files removed)."""


def stdout_closed() -> bool:
    """Whether stdout (fd 1) is a pipe or socket that nobody reads any more.

    Asked before taking a ``BrokenPipeError`` for a closed stdout: a write to a node's
    socket can break a pipe too, and that is a failure to report."""
    try:
        poller = select.poll()
        poller.register(1, 0)  # POLLERR and POLLHUP are reported whatever is asked for
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def end_on_closed_stdout() -> NoReturn:
    """End the process as cat and git do when their reader has gone: silently, by SIGPIPE
    (a shell sees status 141; ``set -o pipefail`` knows what it means)."""
    try:
        # What Python still buffers for stdout is flushed at exit: send it nowhere, quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    except OSError:
        pass
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # not reached: the signal ends the process first
