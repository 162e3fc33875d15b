"""How commands print: JSON for scripts, tables for people, and one way to fail.

Exit codes (docs/cli.md) are a promise to scripts:

    0 success
    1 refused or damaged data (invalid body, bad import file, ``ledger verify`` found damage)
    2 usage error (unknown command or flag, bad value)
    3 node home problem (not initialised, already initialised, bad config)
    4 the store is held by a running node
    5 key problem (passphrase needed or wrong, key file damaged)
    6 no node is running at the home (for commands that need one: status, peers, stop, ...)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, NoReturn

import click

from p2pnode.errors import EXIT_OF_CODE, FAILED, HOME, KEY, LOCKED, NOT_RUNNING, OK, USAGE  # noqa: F401


class CommandError(click.ClickException):
    """Ends a command with a message, a machine-readable code and an exit status."""

    def __init__(self, message: str, *, code: str, exit_code: int, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code
        self.details = details
        self.json_mode = False

    def show(self, file: Any = None) -> None:
        if self.json_mode:
            err: dict[str, Any] = {"code": self.code, "message": self.message}
            if self.details is not None:
                err["details"] = self.details
            click.echo(json.dumps({"error": err}), err=True)
        else:
            click.echo(f"p2pnode: error: {self.message}", err=True)


def fail(message: str, *, code: str, exit_code: int = FAILED, details: Any = None) -> NoReturn:
    raise CommandError(message, code=code, exit_code=exit_code, details=details)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


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

    stream = sys.stderr if stderr else sys.stdout
    # Piped output is read by people in pagers and logs: do not fold it at 80 columns.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


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
