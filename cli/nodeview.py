"""How the running node's status and peers are shown to people and scripts, without click:
the ``status`` command (cli/node.py) and its fast path (cli/entry.py) print through
``show_status``, so both answer in the same bytes.

``quick_status`` is that fast path: the answer of ``node.status`` got as the command gets
it, printed as the command prints it, with nothing imported that the command's parsing
needs (click). It prints nothing until the answer is in hand, so that on any failure the
click path can run instead and report it in its own words.
"""

from __future__ import annotations

from typing import Any, Callable

from cli.output import echo, emit_json, iso_ms, peer_label, peers_table, table
from cli.syncprogress import done as sync_done, sync_progress


def quick_status(home: str | None, as_json: bool) -> Callable[[], None]:
    """Ask the node at ``home`` (``--home``'s value, None if not given) for its status, as
    ``p2pnode status [--json]`` does; return what prints the answer. Raises whatever went
    wrong (no node, a bad home or names file, the node's refusal) before printing anything.

    The click path also checks the call against ``node.status``'s declaration first; with
    no params there is nothing it could refuse, so the check (and p2pnode.control.core, the
    declarations) is left out here. A failed call is handed to the click path as it is
    (``cli.rpc.fail_again``): reported in its words, without waiting for the node again."""
    from cli.rpc import call, fail_again
    from p2pnode.homepath import resolve_home
    from protocol.errors import CodedError

    path = resolve_home(home)  # what cli.context.Ctx does with --home
    names = None if as_json else load_names(path)  # read first, as the command does
    try:
        st = call(path, "node.status")
    except CodedError as e:  # no node, its refusal, no answer in time (30 s)
        fail_again(path, "node.status", e)  # click reports it without asking (waiting) again
        raise
    return lambda: show_status(st, names, as_json)


def load_names(home: Any) -> Any:
    """The names the user gave peers (cli/petnames.py, imported here: JSON needs none)."""
    from cli.petnames import load

    return load(home)


def show_status(st: dict, names: Any, as_json: bool) -> None:
    """Print ``node.status``'s answer ``st``: as JSON, or as text with tables, peers named
    by ``names`` (a ``cli.petnames.Petnames``; None for JSON)."""
    if as_json:
        emit_json(st)
        return
    sync = st["sync"]
    last = iso_ms(sync["last_round_ms"]) if sync.get("last_round_ms") is not None else "never"
    echo(f"peer ID     {st['peer_id']}")
    echo(f"public key  {st['public_key']}")
    echo(f"process     pid {st['pid']}, p2pnode {st['version']}, up {duration(st['uptime_s'])}")
    for i, addr in enumerate(st["listen"] or ["(none)"]):
        echo(f"{'listening' if i == 0 else '':<12}{addr}")
    echo(f"sync        {sync['state']}, last round {last}, {sync['entries_received']} entries received")
    said = sync_progress(sync)
    if said and not sync_done(sync):  # (unknown progress matters only mid-sync)
        echo(f"{'':<12}{said}")
    _store_lines(st)
    if st["forked"]:
        echo(f"FORKED      {len(st['forked'])} author(s) signed two histories: "
             + ", ".join(peer_label(a, names) for a in st["forked"]))
    tasks = st.get("tasks") or {}
    if tasks.get("failures"):
        last = tasks["last_failure"]
        echo(f"tasks       {tasks['failures']} failure(s), {tasks['restarts']} restart(s); "
             f"last: {last['task']}: {last['error']} (the node's log has the traceback)")
    echo("")
    peer_table(f"peers ({len(st['peers'])})", st["peers"], names, detailed=False)
    echo("")
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
        echo("")
        table("counters", ["counter", "value"], [[k, str(v)] for k, v in st["counters"].items()])


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


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _store_lines(st: dict) -> None:
    """The store's state (fail-stop, free space, reserves) and the own-chain check at start."""
    store, own = st.get("store"), st.get("own_chain")
    if store:
        free = "free space unknown" if store["free_bytes"] is None else f"{_mib(store['free_bytes'])} free"
        reserves = f"reserve {_mib(store['reserve_own_bytes'])} own, {_mib(store['reserve_others_bytes'])} others"
        if store["state"] == "failed":
            echo(f"STORE FAILED at {iso_ms(store['failed_at_ms'])}: {store['error']}")
            echo(f"{'':<12}it takes no writes until the node restarts: free disk space or fix the cause, "
                 "then `p2pnode stop` and `p2pnode start`")
        else:
            echo(f"store       ok, {free} ({reserves})")
    if own:
        state = {"checking": "asking peers for it, appends wait", "checked": "checked with peers",
                 "no_peers": "no peers configured", "skipped": "not checked (wait 0)",
                 "timed_out": "no peer answered in time", "unchecked": "no peer answered cleanly"}.get(
                     own["state"], own["state"])
        fetched = f", {own['fetched']} entries fetched back" if own["fetched"] else ""
        echo(f"own chain   seq {own['head']}, {state}{fetched}")
    strangers = st.get("strangers")
    if strangers:
        echo(f"strangers   {strangers['held']:,} of {strangers['budget']:,} chains held (ledger.stranger_chains)")


def _ping(ms: Any) -> str:
    """The round trip of the last keepalive ping, or "-" until one has come back."""
    return "-" if ms is None else f"{ms:,.0f} ms"


def peer_table(title: str, peers: list[dict], names: Any, *, detailed: bool) -> None:
    """The connected peers: ID, address, direction, and with ``detailed`` (``p2pnode
    peers``) how long, their score and ping; one line saying so when there are none."""
    if not peers:
        echo(f"{title}: none connected")
        return
    columns = ["peer ID", "address", "direction"] + (["connected", "score", "ping"] if detailed else [])
    rows = [
        [p["peer_id"], p["addr"], p["direction"]]
        + ([duration(p["connected_s"]), str(p["score"]), _ping(p.get("ping_ms"))] if detailed else [])
        for p in peers
    ]
    peers_table(title, columns, rows, names)
