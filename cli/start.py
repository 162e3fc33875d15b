"""``p2pnode start``: run the node in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from cli.main import Ctx, handles_errors, pass_ctx, passphrase_option, read_passphrase
from cli.output import FAILED, fail


class _UtcFormatter(logging.Formatter):
    converter = __import__("time").gmtime
    default_msec_format = "%s.%03dZ"


def _setup_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libp2p's own chatter: warnings and worse only
    logging.getLogger("p2pnode").setLevel(level.upper())


@click.command()
@click.option("--listen", multiple=True, metavar="MULTIADDR", help="Listen here (repeatable); default: the config's network.listen.")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR", help="Dial this peer at start (repeatable), added to the config's.")
@click.option("--mdns/--no-mdns", default=None, help="Find peers on the local network by mDNS (default: the config's, off).")
@click.option("--review/--no-review", default=None,
              help="Hold incoming loan proposals for you to accept or reject (`loan pending`) instead of "
                   "countersigning by policy alone (default: the config's loans.review, off).")
@click.option("--auto-confirm/--no-auto-confirm", default=None,
              help="Sign the disbursement receipt as soon as the lender declares it (default: the config's "
                   "loans.auto_confirm, off).")
@click.option("--max-rate", metavar="RATE", help="Refuse proposals above this yearly rate, e.g. 20% "
              "(default: the config's loans.max_rate, none).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Append the log here instead of stderr.")
@passphrase_option
@pass_ctx
@handles_errors
def start(
    c: Ctx,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    mdns: bool | None,
    review: bool | None,
    auto_confirm: bool | None,
    max_rate: str | None,
    log_level: str,
    log_file: Path | None,
    passphrase_file: Path | None,
) -> None:
    """Run the node in the foreground: share the ledger with peers and answer commands.

    Other commands (status, ledger append, ...) talk to it over the control socket in
    the home. Stop it with Ctrl-C, SIGTERM or `p2pnode stop`; it exits 0 after closing
    the host and the store. One line is logged per notable event.
    """
    import trio

    from p2pnode.node import Node, NodeSettings, PortInUse, split_p2p_addr

    config = c.home.config()
    c.home.require()
    key = c.home.signing_key(read_passphrase(passphrase_file))
    for addr in bootstrap:
        try:
            split_p2p_addr(addr)
        except ValueError as e:
            raise click.BadParameter(f"{addr}: {e}", param_hint="--bootstrap") from None
    settings = NodeSettings(
        listen=list(listen) or list(config.listen),
        bootstrap=list(dict.fromkeys(list(config.bootstrap) + list(bootstrap))),
        mdns=config.mdns if mdns is None else mdns,
        review=config.review if review is None else review,
        auto_confirm=config.auto_confirm if auto_confirm is None else auto_confirm,
        max_rate_bp=_rate(max_rate, "--max-rate") if max_rate else _rate(config.max_rate, "loans.max_rate"),
    )
    _check_listen(settings.listen)
    _setup_logging(log_level, log_file)
    node = Node(c.home, key, settings, c.registry)
    try:
        trio.run(node.run)
    except PortInUse as e:
        fail(str(e.strerror), code="port_in_use", exit_code=FAILED)
    except OSError as e:
        fail(f"cannot start the node: {e.strerror or e}", code="start_failed", exit_code=FAILED)


def _rate(text: str | None, where: str) -> int | None:
    from protocol.lending.money import MoneyError, parse_rate

    if not text:
        return None
    try:
        return parse_rate(text)
    except MoneyError as e:
        raise click.BadParameter(e.message, param_hint=where) from None


def _check_listen(addrs: list[str]) -> None:
    import multiaddr

    for a in addrs:
        try:
            multiaddr.Multiaddr(a)
        except Exception as e:
            raise click.BadParameter(f"{a}: {e}", param_hint="--listen") from None
