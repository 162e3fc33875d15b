"""How a command fails: ``fail`` ends it with a message, a machine-readable code and an
exit status (cli/output.py lists them), shown by click as text or, under ``--json``, as
``{"error": {...}}`` on stderr.

Apart from cli/output.py because it needs click (a ``click.ClickException`` is what
click's standalone mode shows and exits with), and printing must not: the fast path of
``status`` (cli/entry.py) prints through cli/output.py without importing click.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click

from p2pnode.errors import FAILED


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
