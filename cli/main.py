"""The ``p2pnode`` command line: parse, call the node (or its store), render.

This module never imports libp2p: commands must answer fast. Each command's docstring is
its help text.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from cli.output import (EXIT_OF_CODE, FAILED, HOME, KEY, LOCKED, NOT_RUNNING, USAGE, CommandError, StdoutClosed,
                        emit_json, end_on_closed_stdout, fail, stdout_closed)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Ctx:
    """What the top-level options say, shared by every subcommand."""

    def __init__(self, home: str | None) -> None:
        from p2pnode.home import Home, resolve_home

        self.home = Home(resolve_home(home))
        self._registry = None

    @property
    def registry(self):
        if self._registry is None:
            from p2pnode.extensions import load_registry

            self._registry = load_registry()
        return self._registry


pass_ctx = click.make_pass_decorator(Ctx)


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
    """The exit status and code for an expected failure, or None for a bug."""
    from cli.rpc import NodeNotRunning, RpcError

    if isinstance(e, RpcError):  # the node's refusal, or a broken exchange with it
        return EXIT_OF_CODE.get(e.code, FAILED), e.code
    if isinstance(e, NodeNotRunning):
        return NOT_RUNNING, e.code
    from p2pnode.errors import ApiError

    if isinstance(e, ApiError):  # the same refusal, from the API run here without a node
        return EXIT_OF_CODE.get(e.code, FAILED), e.code
    from p2pnode.home import HomeError
    from p2pnode.keyfile import KeyFileError
    from p2pnode.ledger.export import ExportFileError
    from p2pnode.ledger.store import StoreError, StoreLocked, StoreMissing
    from protocol.errors import ProtocolError

    if isinstance(e, StoreLocked):
        return LOCKED, e.code
    if isinstance(e, (HomeError, StoreMissing)):
        return HOME, e.code
    if isinstance(e, KeyFileError):
        return KEY, e.code
    if isinstance(e, (StoreError, ProtocolError, ExportFileError)):
        return FAILED, e.code
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


@click.group(context_settings=CONTEXT)
@click.option(
    "--home",
    metavar="DIR",
    envvar="P2PNODE_HOME",
    help="Node home directory (default ~/.p2pnode; env P2PNODE_HOME).",
)
@click.version_option(package_name="p2pnode", message="p2pnode %(version)s")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """p2pnode: lend to people, with no platform in the middle.

    Each person runs a node. The node keeps its owner's signed, hash-chained ledger and
    (with `p2pnode start`) shares it with peers. Start with `p2pnode init`.
    """
    ctx.obj = Ctx(home)


@cli.command()
@click.option("--name", default="", help="A display name written into the genesis entry.")
@passphrase_option
@json_option
@pass_ctx
@handles_errors
def init(c: Ctx, name: str, passphrase_file: Path | None, as_json: bool) -> None:
    """Create a node: key, config, store and genesis entry.

    The key is encrypted if a passphrase is given (--passphrase-file or
    P2PNODE_PASSPHRASE). Refuses to touch a home that already holds a node.
    """
    from p2pnode.home import init_home
    from protocol.keys import peer_id

    if len(name) > 64:
        fail("--name is at most 64 characters", code="bad_name", exit_code=FAILED)
    passphrase = read_passphrase(passphrase_file)
    home, genesis = init_home(c.home.path, registry=c.registry, name=name, passphrase=passphrase)
    info = {
        "home": str(home.path),
        "peer_id": peer_id(genesis.author),
        "public_key": genesis.author.hex(),
        "encrypted": bool(passphrase),
        "genesis_id": genesis.id.hex(),
    }
    if as_json:
        emit_json(info)
        return
    click.echo(f"Initialised a node in {info['home']}")
    click.echo(f"  peer ID     {info['peer_id']}")
    click.echo(f"  key         {home.key_file} ({'encrypted' if passphrase else 'not encrypted'}, mode 0600)")
    click.echo(f"  config      {home.config_file}")
    click.echo(f"  genesis     {info['genesis_id']}")
    if not passphrase:
        click.echo("Back up node.key: whoever holds it is you. See docs/operations.md.")


@cli.command("id")
@json_option
@pass_ctx
@handles_errors
def id_(c: Ctx, as_json: bool) -> None:
    """Print this node's peer ID and public key."""
    from protocol.keys import peer_id

    pk = c.home.public_key()
    info = {"peer_id": peer_id(pk), "public_key": pk.hex(), "home": str(c.home.path)}
    if as_json:
        emit_json(info)
    else:
        click.echo(f"peer ID     {info['peer_id']}")
        click.echo(f"public key  {info['public_key']}")


def _register_groups() -> None:
    from cli.ledger import ledger
    from cli.node import connect, peers, status, stop
    from cli.start import start
    from cli.testnet import testnet

    cli.add_command(ledger)
    cli.add_command(start)
    for command in (status, peers, connect, stop):
        cli.add_command(command)
    cli.add_command(testnet)
    from cli.name import name; cli.add_command(name)  # noqa: E702
    from cli.lending.schedule import schedule; cli.add_command(schedule)  # noqa: E702
    from cli.lending.loan import loan; cli.add_command(loan)  # noqa: E702
    from cli.lending.offer import offer, request; cli.add_command(offer); cli.add_command(request)  # noqa: E702


_register_groups()


def main() -> None:
    """The console script. A closed stdout ends any command quietly (cli/output.py)."""
    stdout = sys.stdout
    try:
        cli(prog_name="p2pnode")  # ends by SystemExit: click's standalone mode
    except StdoutClosed:
        end_on_closed_stdout()
    except SystemExit:
        # click met the closed pipe itself (writing help or usage) if it swapped stdout
        # for its quiet wrapper; its own answer to that is exit 1, which means "refused".
        if sys.stdout is not stdout and stdout_closed():
            end_on_closed_stdout()
        try:
            sys.stdout.flush()  # here, not at interpreter exit, where a failure is only a warning
        except BrokenPipeError:
            end_on_closed_stdout()
        raise
