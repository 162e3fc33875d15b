"""``p2pnode name set|rm|list``: local names for peers (petnames), kept in HOME/names.toml.

No node is asked and nothing is sent: a name is only how this user recognises a peer.
Every text listing shows it instead of the peer's short form, and every PEER argument
accepts it (cli/petnames.py).
"""

from __future__ import annotations

import click

from cli import petnames
from cli.context import Ctx, handles_errors, json_option, pass_ctx
from cli.output import emit_json, fail, short_peer, table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def name() -> None:
    """Local names for peers: shown in listings instead of short peer IDs (…K51V7QaD), and
    accepted wherever a command asks for a PEER.

    Kept in HOME/names.toml; never sent to anyone; no node needs to run.
    """


def _names(c: Ctx) -> petnames.Petnames:
    c.home.require()  # names belong to a node's home
    return petnames.load(c.home.path)


@name.command("set")
@click.argument("peer", metavar="PEER")
@click.argument("new_name", metavar="NAME")
@json_option
@pass_ctx
@handles_errors
def set_(c: Ctx, peer: str, new_name: str, as_json: bool) -> None:
    """Call PEER by NAME from now on.

    PEER is a peer ID (12D3KooW...), or an address ending in /p2p/<peer ID>, which is
    kept so that `p2pnode connect NAME` can dial it. NAME is 1 to 32 letters, digits, -
    or _, starting with a letter. A peer has one name: naming it again renames it.
    """
    try:
        pid, addr = petnames.parse_peer(peer)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="PEER") from None
    why = petnames.check_name(new_name)
    if why:
        raise click.BadParameter(why, param_hint="NAME")
    names = _names(c)
    taken = names.get(new_name)
    if taken is not None and taken.peer_id != pid:
        fail(f"{taken.name} names {taken.peer_id} already: remove it first (`p2pnode name rm {taken.name}`)",
             code="name_taken", details=taken.to_json())
    names, old = names.set(new_name, pid, addr)
    names.save()
    entry = names.get(new_name)
    if as_json:
        emit_json(dict(entry.to_json(), replaced=old.name if old else None))
        return
    was = f" (was {old.name})" if old and old.name != entry.name else ""
    click.echo(f"{entry.name}{was} is now the name of {pid}"
               + (f", at {entry.addr.rsplit('/p2p/', 1)[0]}" if entry.addr else ""))


@name.command("rm")
@click.argument("which", metavar="NAME|PEER")
@json_option
@pass_ctx
@handles_errors
def rm(c: Ctx, which: str, as_json: bool) -> None:
    """Forget a name, given the name or the peer ID it names."""
    names = _names(c)
    entry = names.get(which) or names.of_peer(which)
    if entry is None:
        fail(f"no name {which} is set here (see `p2pnode name list`)", code="unknown_name")
    names.without(entry).save()
    if as_json:
        emit_json({"removed": entry.to_json()})
    else:
        click.echo(f"forgot the name {entry.name} ({entry.peer_id})")


@name.command("list")
@json_option
@pass_ctx
@handles_errors
def list_(c: Ctx, as_json: bool) -> None:
    """List the names given to peers, with each peer ID and saved address."""
    names = _names(c)
    if as_json:
        emit_json({"names": [e.to_json() for e in names.entries]})
        return
    if not names.entries:
        click.echo("no names set: give one with `p2pnode name set PEER NAME`")
        return
    table(f"names ({len(names.entries)}) in {names.path}", ["name", "short", "peer ID", "address"],
          [[e.name, short_peer(e.peer_id), e.peer_id, e.addr.rsplit("/p2p/", 1)[0] if e.addr else "-"]
           for e in names.entries])
