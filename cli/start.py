"""``p2pnode start``: run the node in the foreground until SIGINT or SIGTERM.

The command checks its options, then becomes the node program (``python -m p2pnode``,
p2pnode/daemon.py) in the same process: the same pid, signals and exit status. Each
extension setting with a ``flag`` (lending's ``--review``,
``--max-rate``) is an option here, passed on as ``--set EXTENSION.SETTING=JSON``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cli.context import Ctx, handles_errors, pass_ctx, passphrase_option


def _check_bootstrap(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from p2pnode.net.addresses import split_p2p_addr

    for addr in value:
        try:
            split_p2p_addr(addr)
        except ValueError as e:
            raise click.BadParameter(f"{addr}: {e}") from None
    return value


def _check_listen(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from p2pnode.net.addresses import check_multiaddr

    for addr in value:
        try:
            check_multiaddr(addr)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", multiple=True, metavar="MULTIADDR", callback=_check_listen,
              help="Listen here (repeatable); default: the config's network.listen.")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR", callback=_check_bootstrap,
              help="Dial this peer at start (repeatable), added to the config's.")
@click.option("--mdns/--no-mdns", default=None, help="Find peers on the local network by mDNS (default: the config's, off).")
@click.option("--reserve-mib", type=click.IntRange(0, 1 << 30), default=None, metavar="MIB",
              help="Refuse to sign own entries below this much free disk (default: the config's ledger.reserve_mib, 32).")
@click.option("--others-reserve-mib", type=click.IntRange(0, 1 << 30), default=None, metavar="MIB",
              help="Store no other author's entries below this much free disk (default: the config's "
                   "ledger.others_reserve_mib, 128).")
@click.option("--own-chain-wait", type=click.FloatRange(0, 20), default=None, metavar="SECONDS",
              help="Hold appends at start at most this long while peers are asked for the own chain "
                   "(default: the config's ledger.own_chain_wait_s, 10).")
@click.option("--stranger-chains", type=click.IntRange(0, 1_000_000), default=None, metavar="N",
              help="Hold at most this many chains of strangers, authors no extension vouches for (default: the "
                   "config's ledger.stranger_chains, 1000).")
@click.option("--verify-workers", type=click.IntRange(0, 8), default=None, metavar="N",
              help="Worker processes that verify the signatures of big synced batches; 0: none (default: the "
                   "config's ledger.verify_workers, else one per core, at most 8).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Append the log here instead of stderr.")
@passphrase_option
@pass_ctx
@handles_errors
def start(c: Ctx, listen: tuple[str, ...], bootstrap: tuple[str, ...], mdns: bool | None, reserve_mib: int | None,
          others_reserve_mib: int | None, own_chain_wait: float | None, stranger_chains: int | None,
          verify_workers: int | None, log_level: str,
          log_file: Path | None, passphrase_file: Path | None, **extension_flags: Any) -> None:
    """Run the node in the foreground: share the ledger with peers and answer commands.

    Other commands (status, ledger append, ...) talk to it over the control socket in
    the home. Stop it with Ctrl-C, SIGTERM or `p2pnode stop`; it exits 0 after closing
    the host and the store. One line is logged per notable event. Options an extension
    adds override its section of config.toml.
    """
    c.home.config()  # a broken config fails here, exit 3, before anything starts
    c.home.require()
    argv = [sys.executable, "-m", "p2pnode", "--home", str(c.home.path), "--log-level", log_level]
    for a in listen:
        argv += ["--listen", a]
    for a in bootstrap:
        argv += ["--bootstrap", a]
    if mdns is not None:
        argv.append("--mdns" if mdns else "--no-mdns")
    for flag, value in (("--reserve-mib", reserve_mib), ("--others-reserve-mib", others_reserve_mib),
                        ("--own-chain-wait", own_chain_wait), ("--stranger-chains", stranger_chains),
                        ("--verify-workers", verify_workers)):
        if value is not None:
            argv += [flag, str(value)]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    if passphrase_file is not None:
        argv += ["--passphrase-file", str(passphrase_file)]
    for option, value in extension_flags.items():
        if value is not None:
            argv += ["--set", f"{_FLAG_SETTINGS[option]}={json.dumps(value)}"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


_FLAG_SETTINGS: dict[str, str] = {}
"""Click's parameter name of each extension flag -> ``EXTENSION.SETTING``."""


def add_extension_flags(extensions: list[Any]) -> None:
    """Give ``start`` an option for every setting of ``extensions`` that declares a flag."""
    for ext in extensions:
        for s in ext.settings:
            if not s.flag:
                continue
            word = s.flag[2:]
            name = f"x_{ext.name}_{s.name}"
            _FLAG_SETTINGS[name] = f"{ext.name}.{s.name}"
            help_ = f"{s.help} (default: the config's {ext.section_of(s)}.{s.name})"
            if s.type == "bool":
                opt = click.Option([f"--{word}/--no-{word}", name], default=None, help=help_)
            else:
                kind = {"int": int, "str": str}.get(s.type, str)
                opt = click.Option([s.flag, name], type=kind, default=None, metavar=s.type.upper(), help=help_,
                                   callback=_check(s))
            start.params.insert(len(start.params) - 1, opt)


def _check(setting: Any) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        from p2pnode.extensions import check_setting

        if value is None:
            return value
        try:
            return check_setting(setting, value, where=setting.flag)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return callback
