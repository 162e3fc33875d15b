"""Extensions in the command line: their commands added to ``p2pnode``, their start flags,
and ``p2pnode extensions`` to see what is loaded and what was left out, and why."""

from __future__ import annotations

from typing import Any, Callable

import click

from cli.context import Ctx, handles_errors, json_option, pass_ctx
from cli.output import emit_json, table

_CLI_FAILURES: list[tuple[str, str]] = []
"""Extensions whose commands could not be added: (name, why)."""


def add_extension_commands(group: click.Group, home: str | None,
                           taken: Callable[[str], bool] | None = None) -> None:
    """Add the commands of every extension the home runs (``home`` as ``--home`` gave it;
    those its config disables are left out) to ``group``, and their flags to ``start``.
    An extension whose commands cannot be imported, or clash with a command already
    there (``taken(name)``, by default: in ``group.commands``), is left out of the CLI
    and reported by ``p2pnode extensions``."""
    from cli.context import load_extensions
    from cli.start import add_extension_flags
    from p2pnode.extension import resolve

    if taken is None:
        taken = group.commands.__contains__
    loaded = load_extensions(_disabled(home))
    add_extension_flags(loaded.extensions)
    for ext in loaded.extensions:
        if not ext.cli:
            continue
        try:
            got = resolve(ext.cli)
            commands = list(got) if isinstance(got, (list, tuple)) else [got]
            for cmd in commands:
                if not isinstance(cmd, click.Command):
                    raise TypeError(f"{ext.cli} holds a {type(cmd).__name__}, not a click command")
                if taken(cmd.name):
                    raise ValueError(f"command {cmd.name} is taken")
            for cmd in commands:
                group.add_command(cmd)
        except Exception as e:  # a broken extension must not break the CLI
            _CLI_FAILURES.append((ext.name, f"its commands cannot be added: {type(e).__name__}: {e}"))


def _disabled(home: str | None) -> list[str]:
    """The extensions the home's config disables (none if it cannot be read: the command
    that needs the config says why)."""
    from p2pnode.home import Home
    from p2pnode.homepath import resolve_home
    from protocol.errors import CodedError

    try:
        return Home(resolve_home(home)).disabled_extensions()
    except CodedError:
        return []


@click.command()
@json_option
@pass_ctx
@handles_errors
def extensions(c: Ctx, as_json: bool) -> None:
    """List the extensions this node runs, what each adds, and those left out.

    Extensions are installed Python packages that declare an entry point in the group
    `p2pnode.extensions` (docs/extensions.md); a home leaves some out with `disabled` in
    the `[extensions]` section of its config.toml.
    """
    from cli.rpc import NodeNotRunning, call
    from p2pnode.extensions import describe_extensions

    try:  # a running node's own view: it also knows the services that failed to start
        answer = call(c.home.path, "node.extensions", timeout=10.0)
        answer["running"] = True
    except NodeNotRunning:
        answer = describe_extensions(c.loaded)
        answer["running"] = False
    disabled = c.home.disabled_extensions()
    answer["disabled"] = disabled
    answer["failures"] += [{"name": n, "error": why} for n, why in _CLI_FAILURES]
    if as_json:
        emit_json(answer)
        return
    where = "the running node" if answer["running"] else "this home (no node running)"
    table(f"extensions of {where} ({len(answer['extensions'])})", ["name", "version", "from", "adds"],
          [[e["name"], e["version"], e["source"], _adds(e)] for e in answer["extensions"]])
    if disabled:
        click.echo(f"\ndisabled by config: {', '.join(disabled)}")
    if answer["failures"]:
        click.echo("")
        table("left out", ["name", "why"], [[f["name"], f["error"]] for f in answer["failures"]])


def _adds(e: dict[str, Any]) -> str:
    parts = []
    for key, what in (("kinds", "kinds"), ("topics", "topics"), ("streams", "streams"), ("methods", "methods")):
        if e[key]:
            parts.append(f"{len(e[key])} {what}")
    return ", ".join(parts) or "-"
