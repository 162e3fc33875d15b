"""What every command shares: the context of the top-level options (the home, its
extensions), the common options, calling the node, and turning failures into a message
and an exit status (cli/output.py). Imports neither trio nor libp2p."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import click

from cli.output import EXIT_OF_CODE, FAILED, KEY, NOT_RUNNING, USAGE, CommandError, StdoutClosed, fail, stdout_closed

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class HomeRef:
    """The node's home as the top-level options name it: its ``path`` at once, and any
    other attribute of its ``p2pnode.home.Home`` (key, config, store) from the ``Home``
    made on first use. A command that only calls the running node (``status``) needs the
    path alone, and so never imports what reads the home (cryptography, LevelDB)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._home: Any = None

    def __getattr__(self, name: str) -> Any:  # called only for names not set in __init__
        if self._home is None:
            from p2pnode.home import Home

            self._home = Home(self.path)
        return getattr(self._home, name)


class Ctx:
    """What the top-level options say, shared by every subcommand."""

    def __init__(self, home: str | None) -> None:
        from p2pnode.homepath import resolve_home

        self.home = HomeRef(resolve_home(home))
        self._loaded = None

    @property
    def loaded(self):
        """The extensions this home runs (``p2pnode.extensions.load``; ``[extensions]
        disabled`` in its config leaves some out), read on first use."""
        if self._loaded is None:
            self._loaded = load_extensions(self.home.disabled_extensions())
        return self._loaded

    @property
    def registry(self):
        return self.loaded.registry


pass_ctx = click.make_pass_decorator(Ctx)

_LOADED: dict[frozenset[str], Any] = {}
"""``load_extensions``'s answers in this process, by the names left out."""


def load_extensions(disabled: Iterable[str]) -> Any:
    """``p2pnode.extensions.load(disabled)``, read once a process: adding an extension's
    commands and calling its methods both need it, and each read scans every installed
    distribution's entry points. (Installing or removing an extension takes effect at
    the next command, a new process.)"""
    key = frozenset(disabled)
    if key not in _LOADED:
        from p2pnode.extensions import load

        _LOADED[key] = load(key)
    return _LOADED[key]


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")(f)


def passphrase_option(f: Callable) -> Callable:
    return click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File whose first line is the key's passphrase (default: $P2PNODE_PASSPHRASE).",
    )(f)


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase from ``--passphrase-file`` or ``P2PNODE_PASSPHRASE``, else None."""
    if path is not None:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as e:
            fail(f"cannot read passphrase file {path}: {e.strerror}", code="bad_passphrase_file", exit_code=KEY)
        if not lines or not lines[0]:
            fail(f"passphrase file {path} is empty", code="bad_passphrase_file", exit_code=KEY)
        return lines[0]
    env = os.environ.get("P2PNODE_PASSPHRASE")
    return env.encode() if env else None


def _exit_code_of(e: Exception) -> tuple[int, str] | None:
    """The exit status and code for an expected failure, or None for a bug. Every
    expected failure is a ``CodedError``; its code alone chooses the status."""
    from protocol.errors import CodedError

    if isinstance(e, CodedError):
        return EXIT_OF_CODE.get(e.code, FAILED), e.code
    if isinstance(e, OSError):
        return FAILED, "os_error"
    return None


def handles_errors(f: Callable) -> Callable:
    """Turn expected failures into a clear message and the documented exit status."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        try:
            return f(*args, **kwargs)
        except CommandError as e:
            e.json_mode = as_json
            raise
        except click.UsageError as e:  # a bad option value found by the command itself
            if not as_json:
                raise
            err = CommandError(e.format_message(), code="usage_error", exit_code=USAGE)
            err.json_mode = True
            raise err from None
        except Exception as e:
            if isinstance(e, BrokenPipeError) and stdout_closed():
                raise StdoutClosed() from None  # the reader has gone: not a failure to report
            mapped = _exit_code_of(e)
            if mapped is None:
                raise
            message = str(e) if not isinstance(e, OSError) else f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
            err = CommandError(message, code=mapped[1], exit_code=mapped[0], details=getattr(e, "details", None))
            err.json_mode = as_json
            raise err from None

    return wrapper


def node_call(c: Ctx, method: str, params: dict | None = None, *, timeout: float = 30.0) -> Any:
    """The running node's answer to ``method``; exit 6 if no node runs at the home.

    ``params`` (None values left out) are checked against the method's declaration first,
    the same check the node makes, so a bad value is refused here in the node's words."""
    from cli.rpc import NodeNotRunning, call

    params = {k: v for k, v in (params or {}).items() if v is not None}
    spec = declared(c, method)
    if spec is None:
        owner = method.split(".")[0]
        fail(f"no extension this home runs declares {method}: is the extension that adds `{owner}` "
             "disabled or broken? (`p2pnode extensions`)", code="unknown_method", exit_code=USAGE)
    spec.check(params)
    try:
        return call(c.home.path, method, params, timeout=timeout)
    except NodeNotRunning:
        home = c.home.path
        fail(f"no node is running at {home} (start one with `p2pnode --home {home} start`)",
             code="not_running", exit_code=NOT_RUNNING)


def declared(c: Ctx, method: str) -> Any:
    """The declaration of ``method``: the core's without loading any extension (so core
    commands start fast), else the loaded extensions'."""
    from p2pnode.control.core import CORE_METHODS

    core = next((m for m in CORE_METHODS if m.name == method), None)
    return core if core is not None else c.loaded.methods.get(method)
