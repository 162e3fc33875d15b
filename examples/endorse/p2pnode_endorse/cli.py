"""``p2pnode endorse ...``: the extension's commands, added to ``p2pnode`` by the CLI
(the declaration names ``endorse``). Each asks the running node (``endorse.*`` methods)
and prints its answer; ``--json`` prints the answer itself. Imported by the CLI on every
command, so it imports click and the CLI's helpers only: no trio, no libp2p.
"""

from __future__ import annotations

from typing import Any

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, node_call, pass_ctx
from cli.output import emit_json, iso_ms, peer_label, short, table

from p2pnode_endorse.rules import MAX_NOTE, MAX_TEXT

FETCH_TIMEOUT = 20.0  # the node gives the peer 10 s; leave it time to say so


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def endorse() -> None:
    """Endorsements: vouch for peers and see who vouches for whom.

    An endorsement is an entry in your own chain ("I vouch for PEER: text"), so it
    travels with your chain to every node that holds it. (Extension `endorse`.)
    """


def _peer(c: Ctx, value: str | None, hint: str) -> str | None:
    """The peer ID a PEER argument names (a peer ID, or a name given with `p2pnode name`)."""
    return None if value is None else petnames.resolve_peer(c.home.path, value, hint)


def _call(c: Ctx, method: str, params: dict, as_json: bool, timeout: float = 30.0) -> Any:
    """The node's answer; printed as JSON and None with ``--json``, else returned to render.
    The names file is read first: one that cannot be read must not hide an answer."""
    names = None if as_json else petnames.load(c.home.path)
    answer = node_call(c, method, params, timeout=timeout)
    if as_json:
        emit_json(answer)
        return None
    return answer, names


@endorse.command("add")
@click.argument("peer")
@click.option("--text", required=True, help=f"What you vouch for, 1 to {MAX_TEXT} characters.")
@json_option
@pass_ctx
@handles_errors
def add(c: Ctx, peer: str, text: str, as_json: bool) -> None:
    """Vouch for PEER: sign an endorsement into your chain.

    PEER is a peer ID or a name you gave it (`p2pnode name`). Saying the same words of
    the same peer twice is refused; so is endorsing yourself.
    """
    got = _call(c, "endorse.add", {"peer": _peer(c, peer, "PEER"), "text": text}, as_json)
    if got:
        e, names = got
        click.echo(f"endorsed {peer_label(e['peer'], names)}: seq {e['seq']}, id {e['id']}")


@endorse.command("list")
@click.argument("peer", required=False)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most this many.")
@json_option
@pass_ctx
@handles_errors
def list_(c: Ctx, peer: str | None, limit: int, as_json: bool) -> None:
    """List the endorsements of PEER (default: of you).

    Every chain this node holds is searched; an entry whose body the rules refuse is
    stored like any other but never listed.
    """
    got = _call(c, "endorse.list", {"peer": _peer(c, peer, "PEER"), "limit": limit}, as_json)
    if got:
        a, names = got
        if not a["endorsements"]:
            click.echo(f"no endorsements of {peer_label(a['peer'], names)} in the chains held here")
            return
        table(f"endorsements of {peer_label(a['peer'], names)} ({len(a['endorsements'])}"
              f"{', more: raise --limit' if a['more'] else ''})", ["by", "seq", "time (UTC)", "text"],
              [[peer_label(e["author"], names), str(e["seq"]), iso_ms(e["ts"]), short(e["text"], 80)]
               for e in a["endorsements"]])


@endorse.command("ask")
@click.option("--note", default="", help=f"A word for whoever reads it, at most {MAX_NOTE} characters.")
@json_option
@pass_ctx
@handles_errors
def ask(c: Ctx, note: str, as_json: bool) -> None:
    """Ask your peers to endorse you.

    The ask is signed and gossiped; this node republishes it while it lives (the
    `ask_ttl_s` setting). A new ask replaces the last one.
    """
    got = _call(c, "endorse.ask", {"note": note}, as_json)
    if got:
        click.echo(f"asked, signed at {iso_ms(got[0]['ts'])}")


@endorse.command("asks")
@json_option
@pass_ctx
@handles_errors
def asks(c: Ctx, as_json: bool) -> None:
    """List the peers who asked to be endorsed, newest first."""
    got = _call(c, "endorse.asks", {}, as_json)
    if got:
        a, names = got
        if not a["accepting"] or not a["asks"]:
            click.echo("this node keeps no asks (accept_asks is off)" if not a["accepting"] else "no asks")
            return
        table(f"asks ({len(a['asks'])})", ["peer", "time (UTC)", "note"],
              [[peer_label(x["author"], names), iso_ms(x["ts"]), x["note"]] for x in a["asks"]])


@endorse.command("fetch")
@click.argument("peer")
@click.option("--of", "of", metavar="PEER", help="Whose endorsements (default: PEER's own).")
@json_option
@pass_ctx
@handles_errors
def fetch(c: Ctx, peer: str, of: str | None, as_json: bool) -> None:
    """Ask a connected PEER for the endorsements it holds.

    Of PEER itself, or --of another peer. Each endorsement is verified here, and shown
    with whether this node holds it too.
    """
    params = {"peer": _peer(c, peer, "PEER"), "of": _peer(c, of, "--of")}
    got = _call(c, "endorse.fetch", params, as_json, timeout=FETCH_TIMEOUT)
    if got:
        a, names = got
        if not a["endorsements"]:
            click.echo(f"{peer_label(a['peer'], names)} holds no endorsements of {peer_label(a['of'], names)}")
            return
        table(f"endorsements of {peer_label(a['of'], names)} held by {peer_label(a['peer'], names)}",
              ["by", "seq", "held here", "text"],
              [[peer_label(e["author"], names), str(e["seq"]), "yes" if e["held"] else "no", short(e["text"], 80)]
               for e in a["endorsements"]])
