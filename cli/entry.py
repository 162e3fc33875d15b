"""Where the ``p2pnode`` console script and ``python -m cli`` start: a few command lines
answered without click, every other one handed to click (cli/main.py) as it is.

Why: importing click (click.core, click.types, and inspect, typing, enum behind them)
takes about as long as starting Python itself, more than the call to the node that
``p2pnode status`` is for. A command in ``FAST_COMMANDS``, given in exactly the shape

    p2pnode [--home DIR | --home=DIR] COMMAND [--json]

is answered by its fast function instead, which prints the same bytes as its click
command (both print through the same click-free code). Any other shape (``--help``,
``--version``, another flag, an argument, ``--home`` twice or without its value), and any
failure of the fast function before it printed (no node running, a bad home, the node's
refusal), goes to click, which runs the command from the start and reports what went
wrong in its own words, with its exit status. ``--home`` falls back on ``P2PNODE_HOME``
then ``~/.p2pnode`` here as it does through click (p2pnode/homepath.py).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn

from cli.output import StdoutClosed, end_on_closed_stdout, stdout_closed

FAST_COMMANDS = {
    "status": "cli.nodeview:quick_status",
}
"""The commands answered without click: name -> ``"module:function"``. The function takes
``(home, as_json)`` (``--home``'s value or None, whether ``--json`` was given), asks what
it needs and returns what prints the answer; it raises, having printed nothing, on any
failure. What it prints must be what the click command prints (tests/cli/test_fast_status.py
holds each to that)."""

COMPLETION_VAR = "_P2PNODE_COMPLETE"
"""Set, it asks click for shell completion instead of a command (click's name for it,
from the program name ``p2pnode``): never answered here."""


def main() -> None:
    """The console script: a fast answer (``FAST_COMMANDS``) if the command line has the
    fast shape and the answer came, else click's. A closed stdout ends either quietly."""
    if not _answered_fast(sys.argv[1:]):
        from cli.main import main as click_main

        click_main()


def fast_command(args: list[str]) -> tuple[str, str | None, bool] | None:
    """``(command, --home's value or None, --json given)`` if ``args`` (the command line
    after the program) is ``[--home DIR | --home=DIR] COMMAND [--json]`` with COMMAND in
    ``FAST_COMMANDS``; None for anything else, which click answers."""
    home = None
    rest = list(args)
    if rest[:1] == ["--home"]:
        if len(rest) < 2:
            return None
        home, rest = rest[1], rest[2:]
    elif rest and rest[0].startswith("--home="):
        home, rest = rest[0][len("--home="):], rest[1:]
    if home is not None and (not home or home.startswith("-")):
        return None  # an empty home, or one like a flag: rare, and click's to judge
    if not rest or rest[0] not in FAST_COMMANDS or rest[1:] not in ([], ["--json"]):
        return None
    return rest[0], home, len(rest) == 2


def _answered_fast(args: list[str]) -> bool:
    """Whether the fast path answered ``args`` (and printed the answer)."""
    shape = fast_command(args)
    if shape is None or os.environ.get(COMPLETION_VAR):
        return False
    name, home, as_json = shape
    module, _, function = FAST_COMMANDS[name].partition(":")
    try:
        # (__import__: importlib.import_module's imports are missing from -X importtime)
        show = getattr(__import__(module, fromlist=[function]), function)(home, as_json)
    except KeyboardInterrupt:
        _aborted()
    except Exception:
        return False  # nothing printed yet: click runs the command and reports the failure
    _print(show)
    return True


def _print(show: Callable[[], None]) -> None:
    """Run ``show``, ending as the click path does (cli/main.py) when stdout's reader has
    gone: quietly, by SIGPIPE."""
    try:
        show()
        sys.stdout.flush()  # here, not at interpreter exit, where a failure is only a warning
    except StdoutClosed:
        end_on_closed_stdout()
    except BrokenPipeError:
        if not stdout_closed():
            raise
        end_on_closed_stdout()
    except KeyboardInterrupt:
        _aborted()


def _aborted() -> NoReturn:
    """End on Ctrl-C as click's standalone mode does: ``Aborted!`` on stderr, exit 1."""
    sys.stderr.write("\nAborted!\n")
    sys.stderr.flush()
    sys.exit(1)
