"""``p2pnode status|peers|connect|stop``: ask the running node over its control socket."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import (FAILED, console, emit_json, fail, iso_ms, peer_label, peers_table, stdout_is_tty,
                        table)
from cli.syncprogress import done as sync_done, sync_progress

RPC_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 30.0


def duration(seconds: float) -> str:
    """``3h 02m 05s``-style text of a duration, for people."""
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m:02d}m {s:02d}s"
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h {m:02d}m"


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
    if watch:
        if as_json:
            raise click.UsageError("--watch draws progress for people; without it, --json prints the status once")
        _watch(c, timeout)
        return
    names = None if as_json else _names(c)
    st = node_call(c, "node.status")
    if as_json:
        emit_json(st)
        return
    sync = st["sync"]
    last = iso_ms(sync["last_round_ms"]) if sync.get("last_round_ms") is not None else "never"
    click.echo(f"peer ID     {st['peer_id']}")
    click.echo(f"public key  {st['public_key']}")
    click.echo(f"process     pid {st['pid']}, p2pnode {st['version']}, up {duration(st['uptime_s'])}")
    for i, addr in enumerate(st["listen"] or ["(none)"]):
        click.echo(f"{'listening' if i == 0 else '':<12}{addr}")
    click.echo(f"sync        {sync['state']}, last round {last}, {sync['entries_received']} entries received")
    said = sync_progress(sync)
    if said and not sync_done(sync):  # (unknown progress matters only mid-sync)
        click.echo(f"{'':<12}{said}")
    _store_lines(st)
    if st["forked"]:
        click.echo(f"FORKED      {len(st['forked'])} author(s) signed two histories: "
                   + ", ".join(peer_label(a, names) for a in st["forked"]))
    tasks = st.get("tasks") or {}
    if tasks.get("failures"):
        last = tasks["last_failure"]
        click.echo(f"tasks       {tasks['failures']} failure(s), {tasks['restarts']} restart(s); "
                   f"last: {last['task']}: {last['error']} (the node's log has the traceback)")
    click.echo("")
    _peer_table(f"peers ({len(st['peers'])})", st["peers"], names, detailed=False)
    click.echo("")
    own = st["peer_id"]
    peers_table(
        f"chains held ({len(st['heads'])})",
        ["author", "seq", "last entry", "time (UTC)", ""],
        [
            [h["author"], str(h["seq"]), h["id"][:16], iso_ms(h["ts"]),
             ("own " if h["author"] == own else "") + ("FORKED" if h["forked"] else "")]
            for h in st["heads"]
        ],
        names,
    )
    if st["counters"]:
        click.echo("")
        table("counters", ["counter", "value"], [[k, str(v)] for k, v in st["counters"].items()])


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _store_lines(st: dict) -> None:
    """The store's state (fail-stop, free space, reserves) and the own-chain check at start."""
    store, own = st.get("store"), st.get("own_chain")
    if store:
        free = "free space unknown" if store["free_bytes"] is None else f"{_mib(store['free_bytes'])} free"
        reserves = f"reserve {_mib(store['reserve_own_bytes'])} own, {_mib(store['reserve_others_bytes'])} others"
        if store["state"] == "failed":
            click.echo(f"STORE FAILED at {iso_ms(store['failed_at_ms'])}: {store['error']}")
            click.echo(f"{'':<12}it takes no writes until the node restarts: free disk space or fix the cause, "
                       "then `p2pnode stop` and `p2pnode start`")
        else:
            click.echo(f"store       ok, {free} ({reserves})")
    if own:
        state = {"checking": "asking peers for it, appends wait", "checked": "checked with peers",
                 "no_peers": "no peers configured", "skipped": "not checked (wait 0)",
                 "timed_out": "no peer answered in time", "unchecked": "no peer answered cleanly"}.get(
                     own["state"], own["state"])
        fetched = f", {own['fetched']} entries fetched back" if own["fetched"] else ""
        click.echo(f"own chain   seq {own['head']}, {state}{fetched}")
    strangers = st.get("strangers")
    if strangers:
        click.echo(f"strangers   {strangers['held']:,} of {strangers['budget']:,} chains held (ledger.stranger_chains)")


def _watch(c: Ctx, timeout: float) -> None:
    from cli.syncprogress import watch

    try:
        idle = watch(lambda: node_call(c, "node.status"), timeout, stdout_is_tty(), console())
    except KeyboardInterrupt:
        sys.exit(130)  # as a shell reports a command ended by Ctrl-C; nothing to report
    if not idle:
        fail(f"the node is still syncing after {timeout:g} s", code="timeout", exit_code=FAILED)


def _names(c: Ctx) -> Any:
    """The names the user gave peers (cli/petnames.py, imported here: JSON needs none)."""
    from cli.petnames import load

    return load(c.home.path)


def _name(peer: str, names: Any) -> str:
    return (names.name_of(peer) if names is not None else None) or ""


def _ping(ms: Any) -> str:
    """The round trip of the last keepalive ping, or "-" until one has come back."""
    return "-" if ms is None else f"{ms:,.0f} ms"


def _peer_table(title: str, peers: list[dict], names: Any, *, detailed: bool) -> None:
    if not peers:
        click.echo(f"{title}: none connected")
        return
    columns = ["peer ID", "address", "direction"] + (["connected", "score", "ping"] if detailed else [])
    rows = [
        [p["peer_id"], p["addr"], p["direction"]]
        + ([duration(p["connected_s"]), str(p["score"]), _ping(p.get("ping_ms"))] if detailed else [])
        for p in peers
    ]
    peers_table(title, columns, rows, names)


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
        _peer_table(f"peers ({len(answer['peers'])})", answer["peers"], names, detailed=True)


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
