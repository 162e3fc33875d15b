"""``p2pnode status|peers|connect|stop``: ask the running node over its control socket."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.nodeview import load_names, peer_table, show_status
from cli.output import FAILED, console, emit_json, fail, stdout_is_tty

RPC_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30.0


@click.command()
@click.option("--watch", is_flag=True,
              help="Follow the sync until the node is idle: a progress bar at a terminal, else a line a second.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=7 * 86400), default=3600.0, show_default=True,
              help="With --watch: give up (exit 1) after this many seconds.")
@json_option
@pass_ctx
@handles_errors
def status(c: Ctx, watch: bool, timeout: float, as_json: bool) -> None:
    """Show the running node: identity, addresses, peers, chains held, sync and counters.

    With --watch, follow its sync instead until the node is idle (exit 0), --timeout
    passes (exit 1) or Ctrl-C (exit 130).
    """
    # `status [--json]` alone is mostly answered before click is imported, by the same
    # calls in the same order (cli/entry.py, cli/nodeview.py's quick_status); this is
    # what answers it when that path stood back, and every other form.
    if watch:
        if as_json:
            raise click.UsageError("--watch draws progress for people; without it, --json prints the status once")
        _watch(c, timeout)
        return
    names = None if as_json else _names(c)
    show_status(node_call(c, "node.status"), names, as_json)


def _watch(c: Ctx, timeout: float) -> None:
    from cli.syncprogress import watch

    try:
        idle = watch(lambda: node_call(c, "node.status"), timeout, stdout_is_tty(), console())
    except KeyboardInterrupt:
        sys.exit(130)  # as a shell reports a command ended by Ctrl-C; nothing to report
    if not idle:
        fail(f"the node is still syncing after {timeout:g} s", code="timeout", exit_code=FAILED)


def _names(c: Ctx) -> Any:
    return load_names(c.home.path)


def _name(peer: str, names: Any) -> str:
    return (names.name_of(peer) if names is not None else None) or ""


@click.command()
@json_option
@pass_ctx
@handles_errors
def peers(c: Ctx, as_json: bool) -> None:
    """List the peers the running node is connected to."""
    names = None if as_json else _names(c)
    answer = node_call(c, "node.peers")
    if as_json:
        emit_json(answer)
    else:
        peer_table(f"peers ({len(answer['peers'])})", answer["peers"], names, detailed=True)


@click.command()
@click.argument("addr", metavar="ADDR|NAME")
@json_option
@pass_ctx
@handles_errors
def connect(c: Ctx, addr: str, as_json: bool) -> None:
    """Connect the running node to a peer at ADDR, a multiaddr ending in /p2p/<peer ID>,
    e.g. /ip4/192.0.2.7/tcp/7420/p2p/12D3KooW..., or to the peer NAME names if its
    address was saved with it (`p2pnode name set ADDR NAME`)."""
    from cli.petnames import resolve_addr

    addr = resolve_addr(c.home.path, addr, "ADDR")
    names = None if as_json else _names(c)
    answer = node_call(c, "node.connect", {"addr": addr})
    if as_json:
        emit_json(answer)
    else:
        click.echo(f"connected to {answer['peer_id']}" + (f" ({n})" if (n := _name(answer["peer_id"], names)) else ""))


@click.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=3600),
    default=DEFAULT_STOP_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the node to exit.",
)
@json_option
@pass_ctx
@handles_errors
def stop(c: Ctx, timeout: float, as_json: bool) -> None:
    """Ask the running node to shut down, and wait until it has exited.

    Exits 0 once the node's control socket is gone and its process has ended, 1 if it
    is still running after --timeout seconds, 6 if no node was running.
    """
    from cli.rpc import NodeNotRunning, RpcError, call

    st = node_call(c, "node.status")
    pid, who = st.get("pid"), st.get("peer_id")
    t0 = time.monotonic()
    try:
        call(c.home.path, "node.stop", timeout=min(timeout, RPC_TIMEOUT))
    except NodeNotRunning:
        pass  # it stopped between the two calls
    except RpcError as e:
        if e.code != "connection_lost":  # a node may close the socket as it stops
            raise
    gone = _wait_gone(c.home.path, pid, t0 + timeout)
    waited = round(time.monotonic() - t0, 3)
    if not gone:
        fail(
            f"the node {who} (pid {pid}) is still running after {timeout:g} s; see its log, "
            f"or end it with `kill -TERM {pid}`",
            code="stop_timeout",
            exit_code=FAILED,
            details={"peer_id": who, "pid": pid, "waited_s": waited},
        )
    if as_json:
        emit_json({"stopped": True, "peer_id": who, "pid": pid, "waited_s": waited})
    else:
        click.echo(f"stopped node {who} (pid {pid}) in {waited:.1f} s")


def _wait_gone(home: Path, pid: int | None, deadline: float) -> bool:
    """Whether, before ``deadline`` (monotonic), the socket stopped answering and the
    process ``pid`` ended. Polls every 50 ms."""
    from cli.rpc import node_running

    while True:
        if not node_running(home) and not pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def pid_alive(pid: int | None) -> bool:
    from p2pnode.testnet import pid_alive as alive

    return alive(pid)
