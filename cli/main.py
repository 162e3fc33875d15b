"""The ``p2pnode`` command line: parse, call the node (or its store), render.

The core's commands are here; every extension adds its own (its declaration names them,
``p2pnode.extension``), lending's among them. This module never imports libp2p or trio:
commands must answer fast. Each command's docstring is its help text.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from cli.context import CONTEXT, Ctx, handles_errors, json_option, pass_ctx, passphrase_option, read_passphrase
from cli.output import FAILED, StdoutClosed, emit_json, end_on_closed_stdout, fail, stdout_closed

CORE_COMMANDS = {
    "ledger": "cli.ledger:ledger",
    "start": "cli.start:start",
    "status": "cli.node:status",
    "peers": "cli.node:peers",
    "connect": "cli.node:connect",
    "stop": "cli.node:stop",
    "testnet": "cli.testnet:testnet",
    "name": "cli.name:name",
    "extensions": "cli.extensions:extensions",
    "api": "cli.api:api",
}
"""The core's commands defined outside this module: name -> ``"module:attribute"``, each
module imported when its command is asked for (run, or listed by ``--help``)."""


class Commands(click.Group):
    """The core's commands and each installed extension's, each imported on first need:
    ``status`` imports cli/node.py and nothing of the other commands nor any extension,
    so it starts fast. Listing them all (``--help``) imports them all."""

    _extensions_added = False

    def _add_extensions(self, ctx: click.Context) -> None:
        if not self._extensions_added:
            self._extensions_added = True
            from cli.extensions import add_extension_commands

            add_extension_commands(self, ctx.params.get("home"), taken=self.taken)

    def _add_core(self, name: str) -> None:
        if name in CORE_COMMANDS and name not in self.commands:
            module, _, attribute = CORE_COMMANDS[name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert command.name == name, (CORE_COMMANDS[name], command.name)
            self.add_command(command)

    def taken(self, name: str) -> bool:
        """Whether a command ``name`` is there already, imported or not."""
        return name in self.commands or name in CORE_COMMANDS

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._add_core(name)
        if name == "start" or name not in self.commands:  # start takes the extensions' flags
            self._add_extensions(ctx)
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for name in CORE_COMMANDS:
            self._add_core(name)
        self._add_extensions(ctx)
        return super().list_commands(ctx)


@click.group(cls=Commands, context_settings=CONTEXT)
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
    home, genesis = init_home(c.home.path, registry=c.registry, name=name, passphrase=passphrase,
                              extensions=c.loaded.extensions)
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


def main() -> None:
    """The console script's click path: every command line that cli/entry.py does not
    answer itself comes here. A closed stdout ends any command quietly (cli/output.py)."""
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
