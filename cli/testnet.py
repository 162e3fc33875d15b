"""``p2pnode testnet up|status|down``: a local test network of node processes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.context import Ctx, handles_errors, json_option, pass_ctx
from cli.output import FAILED, emit_json, fail, table

DIR_OPTION = click.option(
    "--dir",
    "dir_",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("testnet"),
    show_default=True,
    help="Directory holding the nodes' homes (DIR/node1 ... DIR/nodeN) and logs.",
)


def _status(member) -> dict | None:
    from cli.rpc import NodeNotRunning, RpcError, call

    try:
        return call(Path(member.home), "node.status", timeout=5.0)
    except (NodeNotRunning, RpcError, OSError, TimeoutError):
        return None


def _ask_stop(member) -> bool:
    from cli.rpc import NodeNotRunning, RpcError, call

    try:
        call(Path(member.home), "node.stop", timeout=5.0)
        return True
    except (NodeNotRunning, RpcError, OSError, TimeoutError):
        return False


def _guard(f):
    """TestnetError -> a clear message and exit 1."""
    import functools

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from p2pnode.testnet import TestnetError

        try:
            return f(*args, **kwargs)
        except TestnetError as e:
            fail(str(e), code=e.code, exit_code=FAILED)

    return wrapper


@click.group()
def testnet() -> None:
    """A local test network: several nodes as processes on 127.0.0.1.

    Run any command against node K with `p2pnode --home DIR/nodeK ...`.
    """


@testnet.command()
@click.option("--nodes", "-n", type=click.IntRange(1, 64), default=3, show_default=True, help="How many nodes.")
@DIR_OPTION
@click.option("--timeout", type=click.FloatRange(1, 600), default=60, show_default=True, help="Seconds to wait for the network to form.")
@json_option
@pass_ctx
@handles_errors
@_guard
def up(c: Ctx, nodes: int, dir_: Path, timeout: float, as_json: bool) -> None:
    """Start N nodes (creating homes that do not exist yet) and wait until they form one
    network. Nodes of DIR already running are left as they are."""
    from p2pnode import testnet as tn

    dir_ = dir_.absolute()
    old = {m.name: m for m in tn.load(dir_)}
    members = tn.prepare(dir_, nodes, c.loaded)
    extra = [m for name, m in old.items() if name not in {x.name for x in members}]
    log_from: dict[str, int] = {}  # where each node started now begins to write its log

    def start(m) -> None:
        log_from[m.name] = tn.log_size(m)
        m.pid = tn.spawn(m)

    moves: dict[str, int] = {}

    def revive(m) -> bool:
        """A node that exited because another process took its port (chosen free when
        its home was made, bound only now) gets a new port and starts again; so do the
        nodes that dial it first."""
        if m.name not in log_from or moves.get(m.name, 0) >= tn.PORT_MOVES or not tn.lost_its_port(m, log_from[m.name]):
            return False
        moves[m.name] = moves.get(m.name, 0) + 1
        for other in tn.move_port(m, members, c.loaded):
            tn.stop(other, _ask_stop)
            start(other)
        start(m)
        tn.save(dir_, members + extra)
        return True

    for m in members:
        prev = old.get(m.name)
        if prev is not None and tn.pid_alive(prev.pid) and _status(prev) is not None:
            m.pid = prev.pid
            continue
        start(m)
    tn.save(dir_, members + extra)
    if not as_json and sys.stderr.isatty():
        click.echo(f"waiting (at most {timeout:g} s) for {len(members)} nodes to connect...", err=True)
    statuses = tn.wait_connected(members, _status, timeout, revive)
    rows = [
        {
            "name": m.name,
            "peer_id": m.peer_id,
            "addr": m.addr,
            "home": m.home,
            "pid": m.pid,
            "peers": len(statuses[m.name]["peers"]),
        }
        for m in members
    ]
    if as_json:
        emit_json({"dir": str(dir_), "nodes": rows})
        return
    table(
        f"testnet in {dir_}: {len(rows)} nodes, connected",
        ["name", "peer ID", "address", "home", "peers"],
        [[r["name"], r["peer_id"], r["addr"].split("/p2p/")[0], r["home"], str(r["peers"])] for r in rows],
    )
    click.echo(f"Run a command on a node:  p2pnode --home {rows[0]['home']} status")
    click.echo(f"Stop them all:            p2pnode testnet down --dir {dir_}")


@testnet.command()
@DIR_OPTION
@json_option
@pass_ctx
@handles_errors
@_guard
def status(c: Ctx, dir_: Path, as_json: bool) -> None:
    """Show each node of the test network: running or not, peers, chains held."""
    from p2pnode import testnet as tn

    members = tn.load(dir_.absolute())
    if not members:
        fail(f"no test network in {dir_.absolute()} (start one with `p2pnode testnet up`)", code="no_testnet")
    rows = []
    for m in members:
        st = _status(m) if tn.pid_alive(m.pid) else None
        rows.append(
            {
                "name": m.name,
                "peer_id": m.peer_id,
                "addr": m.addr,
                "home": m.home,
                "pid": m.pid,
                "running": st is not None,
                "peers": len(st["peers"]) if st else None,
                "chains": len(st["heads"]) if st else None,
                "entries": sum(h["seq"] for h in st["heads"]) if st else None,
            }
        )
    if as_json:
        emit_json({"dir": str(dir_.absolute()), "nodes": rows})
        return
    table(
        None,
        ["name", "peer ID", "running", "pid", "peers", "chains", "entries"],
        [
            [r["name"], r["peer_id"], "yes" if r["running"] else "no", str(r["pid"] or "-"),
             str(r["peers"] if r["running"] else "-"), str(r["chains"] if r["running"] else "-"),
             str(r["entries"] if r["running"] else "-")]
            for r in rows
        ],
    )


@testnet.command()
@DIR_OPTION
@json_option
@pass_ctx
@handles_errors
@_guard
def down(c: Ctx, dir_: Path, as_json: bool) -> None:
    """Stop every node of the test network, by the process ids recorded at start. Homes
    and logs stay; `testnet up` starts the same nodes again."""
    from p2pnode import testnet as tn

    members = tn.load(dir_.absolute())
    results = {m.name: tn.stop(m, _ask_stop) for m in members}
    for m in members:
        m.pid = None
    if members:
        tn.save(dir_.absolute(), members)
    if as_json:
        emit_json({"dir": str(dir_.absolute()), "stopped": results})
        return
    if not members:
        click.echo(f"no test network in {dir_.absolute()}")
    for name, how in results.items():
        click.echo(f"{name}: {how}")
