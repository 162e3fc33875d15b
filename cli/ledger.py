"""``p2pnode ledger ...``: append to, show, verify, export and import signed chains.

Each command asks the node running at the home (control method ``ledger.<name>``, see
docs/api.md); if none runs, it opens the store and calls the same function of
``p2pnode.ledger.ops`` itself. Both give the same JSON value, rendered here by one renderer,
so the output does not depend on whether a node runs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from cli.context import Ctx, declared, handles_errors, json_option, pass_ctx, passphrase_option, read_passphrase
from cli.output import FAILED, emit_json, fail, iso_ms, peer_full, peers_table, short, table

DEFAULT_SHOW_LIMIT = 100
RPC_TIMEOUT = 30.0  # seconds for a quick call to the node
LONG_RPC_TIMEOUT = 3600.0  # verify and import read or write the whole ledger
INLINE_IMPORT = 512 * 1024  # bytes of stdin sent inline; more goes by a file the node reads


def ask_node(c: Ctx, method: str, params: dict | None = None, *, timeout: float = RPC_TIMEOUT) -> Any:
    """The running node's answer to ``method``, or None if no node runs at the home.

    Only a failed connect means "no node" (nothing was sent then), so falling back to the
    store never repeats work the node did. The node's refusals raise ``RpcError``."""
    from cli.rpc import NodeNotRunning, call

    params = {k: v for k, v in (params or {}).items() if v is not None}
    declared(c, method).check(params)  # the node's own check of the declared params
    try:
        return call(c.home.path, method, params, timeout=timeout)
    except NodeNotRunning:
        return None


def open_here(c: Ctx, *, write: bool = False) -> Any:
    """The home's store opened by this process, for when no node answers (a ``Store``,
    to be used in a ``with``); to ``write``, made fit for this home's extensions first."""
    from p2pnode.ledger.store import StoreLocked

    try:
        store = c.home.open_store()
        if write:
            try:
                c.loaded.prepare(store)
            except BaseException:
                store.close()
                raise
        return store
    except StoreLocked:
        raise StoreLocked(
            f"the store at {c.home.store_dir} is in use by another process, but no node answers on "
            f"{c.home.path / 'control.sock'}: if a node is starting or stopping, try again in a moment; "
            "otherwise stop the process that holds the store"
        ) from None


def _author(value: str | None, c: Ctx) -> bytes:
    """The public key named by a PEER option (a peer ID or a petname), or this node's own."""
    from cli.petnames import resolve_peer
    from protocol.keys import public_key_from_peer_id

    if value is None:
        return c.home.public_key()
    return public_key_from_peer_id(resolve_peer(c.home.path, value, "--author"))


def _names(c: Ctx, as_json: bool) -> Any:
    """The petnames text output shows; none for JSON, which keeps to full peer IDs."""
    from cli.petnames import load

    return None if as_json else load(c.home.path)


@click.group()
def ledger() -> None:
    """The signed, hash-chained ledger: this node's own chain and the chains it holds."""


@ledger.command()
@click.option("--kind", required=True, help="Entry kind, e.g. note (see `p2pnode ledger kinds`).")
@click.option("--body", required=True, metavar="JSON", help='Entry body as JSON, e.g. \'{"text": "hello"}\'.')
@passphrase_option
@json_option
@pass_ctx
@handles_errors
def append(c: Ctx, kind: str, body: str, passphrase_file: Path | None, as_json: bool) -> None:
    """Sign and append an entry to this node's own chain.

    The body is converted to canonical MessagePack: integers stay exact, {"$bin": "hex"}
    is binary, and floats are refused (amounts are minor units, rates basis points).
    A body of a registered kind must satisfy that kind's rules; other kinds are stored
    as they are.
    """
    from protocol import jsonform
    from protocol.errors import ProtocolError

    try:
        value = jsonform.parse(body)
    except ProtocolError as e:
        fail(f"--body refused: {e.message}", code=e.code)
    # A running node signs with the key it holds: no passphrase is asked for then.
    view = ask_node(c, "ledger.append", {"kind": kind, "body": jsonform.to_json(value)})
    if view is None:
        from p2pnode.walltime import now_ms
        from p2pnode.ledger import ops as api

        key = c.home.signing_key(read_passphrase(passphrase_file))
        with open_here(c, write=True) as store:
            view = api.append_value(store, key, c.registry, kind, value, now_ms())[1]
    if as_json:
        emit_json(view)
    else:
        click.echo(f"appended seq {view['seq']} ({view['kind']}) id {view['id']}")


@ledger.command()
@click.option("--author", metavar="PEER", help="Whose chain (a peer ID, or a name you gave it); default this node's.")
@click.option("--from", "from_seq", type=click.IntRange(min=1), default=1, show_default=True, help="First seq.")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_SHOW_LIMIT, show_default=True, help="At most this many entries.")
@json_option
@pass_ctx
@handles_errors
def show(c: Ctx, author: str | None, from_seq: int, limit: int, as_json: bool) -> None:
    """List the entries of a chain, oldest first."""
    pk = _author(author, c)
    names = _names(c, as_json)
    from protocol.keys import peer_id

    shown = ask_node(c, "ledger.show", {"author": peer_id(pk), "from": from_seq, "limit": limit})
    if shown is None:
        from p2pnode.ledger import ops as api

        with open_here(c) as store:
            shown = api.ledger_show(store, c.registry, pk, from_seq, limit)
    if as_json:
        emit_json(shown)
        return
    if shown["head_seq"] == 0:
        fail(f"no chain of {shown['author']} is stored", code="unknown_author")
    head_seq, entries = shown["head_seq"], shown["entries"]
    title = (f"{peer_full(shown['author'], names)}: {head_seq} entries"
             + ("  FORKED: this author signed two histories" if shown["forked"] else ""))
    rows = [
        [
            str(e["seq"]),
            iso_ms(e["ts"]),
            e["kind"] + ("" if e["known_kind"] else " (unknown)"),
            e["id"][:16],
            short(json.dumps(e["body"], ensure_ascii=False), 60),
        ]
        for e in entries
    ]
    table(title, ["seq", "time (UTC)", "kind", "id", "body"], rows)
    last = entries[-1]["seq"] if entries else from_seq - 1
    if last < head_seq:
        click.echo(f"... {head_seq - last} more: use --from {last + 1}")


@ledger.command()
@json_option
@pass_ctx
@handles_errors
def heads(c: Ctx, as_json: bool) -> None:
    """List every chain held, with its last seq, id and time."""
    names = _names(c, as_json)
    answer = ask_node(c, "ledger.heads")
    if answer is None:
        from p2pnode.ledger import ops as api

        own = c.home.public_key()
        with open_here(c) as store:
            answer = api.ledger_heads(store, own)
    rows = answer["heads"]
    if as_json:
        emit_json(rows)
        return
    peers_table(
        None,
        ["author", "seq", "last entry", "time (UTC)", ""],
        [[r["author"], str(r["seq"]), r["id"][:16], iso_ms(r["ts"]), ("own " if r["own"] else "") + ("FORKED" if r["forked"] else "")] for r in rows],
        names,
    )


@ledger.command()
@json_option
@pass_ctx
@handles_errors
def verify(c: Ctx, as_json: bool) -> None:
    """Re-check every stored chain and index: signatures, seq, links, timestamps, bytes.

    Exits 0 if all is sound, 1 naming each damaged author and seq otherwise.
    """
    summary = ask_node(c, "ledger.verify", timeout=LONG_RPC_TIMEOUT)
    if summary is None:
        summary = _verify_here(c, as_json)
    if as_json:
        emit_json(summary)
    elif summary["ok"]:
        click.echo(
            f"ok: {summary['entries']} entries in {summary['authors']} chains verified"
            + (f", {summary['unknown_kinds']} of unknown kinds (signatures and links checked)" if summary["unknown_kinds"] else "")
            + (f", {summary['fork_proofs']} fork proofs" if summary["fork_proofs"] else "")
        )
    else:
        problems = summary["problems"]
        table(
            f"DAMAGED: {len(problems)} problem(s) in {summary['entries']} entries",
            ["author", "seq", "problem", "detail"],
            [[p["author"] or "-", str(p["seq"] or "-"), p["code"], p["message"]] for p in problems],
        )
    if not summary["ok"]:
        sys.exit(FAILED)


def _verify_here(c: Ctx, as_json: bool) -> dict:
    from p2pnode.ledger import ops as api
    from p2pnode.ledger.store import StoreError, StoreLocked, StoreMissing

    try:
        store = open_here(c)
    except (StoreLocked, StoreMissing):
        raise
    except StoreError as e:
        # Corrupt or truncated files (LevelDB reports some as I/O errors): damage, not a crash.
        _report_unopenable(str(e), as_json, e.code)
    with store:
        progress = None
        if not as_json and sys.stderr.isatty():
            progress = lambda n: click.echo(f"\r  {n} entries checked", nl=False, err=True)  # noqa: E731
        summary = api.ledger_verify(store, c.registry, progress, c.loaded.verify_checks())
        if progress:
            click.echo("", err=True)
    return summary


def _report_unopenable(message: str, as_json: bool, code: str = "store_corrupt") -> None:
    if as_json:
        emit_json({"ok": False, "problems": [{"code": code, "message": message, "author": None, "seq": None}]})
    else:
        click.echo(f"DAMAGED: {message}", err=True)
    sys.exit(FAILED)


@ledger.command()
@click.option("--author", metavar="PEER", help="Export only this chain (a peer ID, or a name you gave it); default all chains.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE (default stdout).")
@pass_ctx
@handles_errors
def export(c: Ctx, author: str | None, output: Path | None) -> None:
    """Write chains as JSON lines: one entry a line, with its exact envelope in hex."""
    from protocol.keys import peer_id

    pk = _author(author, c) if author else None
    params: dict[str, Any] = {"author": peer_id(pk)} if pk else {}
    first = ask_node(c, "ledger.export", params)
    if first is not None:
        from cli.rpc import call

        _write_export(first, lambda p: call(c.home.path, "ledger.export", p, timeout=RPC_TIMEOUT), params, output)
        return
    from p2pnode.ledger import ops as api

    with open_here(c) as store:
        fetch = lambda p: api.ledger_export(store, pk, p.get("cursor"))  # noqa: E731
        _write_export(fetch(params), fetch, params, output)


def _export_lines(first: dict, fetch: Callable[[dict], dict], params: dict) -> Iterator[str]:
    """The lines of ``first`` and of each page after it, fetched by cursor."""
    page = first
    while True:
        yield from page["lines"]
        if page["next"] is None:
            return
        page = fetch(dict(params, cursor=page["next"]))


def _write_export(first: dict, fetch: Callable[[dict], dict], params: dict, output: Path | None) -> None:
    lines = _export_lines(first, fetch, params)
    if output is None:
        for line in lines:
            click.echo(line)
        return
    tmp = output.with_name(output.name + ".partial")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)  # only left if the export failed
    click.echo(f"exported {n} entries of {first['authors']} chain(s) to {output}", err=True)


@ledger.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@json_option
@pass_ctx
@handles_errors
def import_(c: Ctx, file: Path, as_json: bool) -> None:
    """Verify a JSON-lines export and store its chains. Stores nothing of a bad file.

    Entries already held are skipped. An entry that differs from a held one at the same
    author and seq is a fork: the import is refused and the fork proof is recorded.
    """
    from p2pnode.ledger import ops as api

    if str(file) == "-":
        try:
            text = sys.stdin.read(api.MAX_IMPORT_FILE + 1)  # bounded: stdin may be endless
        except UnicodeDecodeError:
            fail(f"{file} is not UTF-8 text", code="bad_export_file")
        if len(text) > api.MAX_IMPORT_FILE:
            fail(f"standard input holds more than an import reads ({api.MAX_IMPORT_FILE >> 20} MiB)",
                 code="file_too_large")
        lines = text.splitlines()
    else:
        lines = api.read_import_file(file)  # read here too, so a bad file fails the same way
    summary = _import_via_node(c, file, lines)
    if summary is None:
        with open_here(c, write=True) as store:
            summary = api.ledger_import(store, c.registry, lines)
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"imported {summary['added']} entries ({summary['duplicates']} already held)")


def _import_via_node(c: Ctx, file: Path, lines: list[str]) -> dict | None:
    """The running node's import of ``lines``, or None if no node runs. A small import
    travels inline; a large one by a file the node reads (a request line has a limit)."""
    size = sum(len(x) + 4 for x in lines)
    if size <= INLINE_IMPORT:
        return ask_node(c, "ledger.import", {"lines": lines}, timeout=LONG_RPC_TIMEOUT)
    if str(file) != "-":
        return ask_node(c, "ledger.import", {"path": str(file.absolute())}, timeout=LONG_RPC_TIMEOUT)
    from cli.rpc import node_running

    if not node_running(c.home.path):
        return None
    # Large stdin: spool it to a file of the home (mode 0600, as mkstemp makes it) for the node.
    fd, name = tempfile.mkstemp(prefix="import-", suffix=".jsonl.partial", dir=c.home.path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(x + "\n" for x in lines)
        return ask_node(c, "ledger.import", {"path": name}, timeout=LONG_RPC_TIMEOUT)
    finally:
        os.unlink(name)


@ledger.command()
@json_option
@pass_ctx
@handles_errors
def kinds(c: Ctx, as_json: bool) -> None:
    """List the entry kinds this node knows (core and extensions)."""
    from p2pnode.ledger import ops as api

    answer = ask_node(c, "ledger.kinds") or api.ledger_kinds(c.registry)
    rows = answer["kinds"]
    if as_json:
        emit_json(rows)
    else:
        table(None, ["kind", "description"], [[r["kind"], r["description"]] for r in rows])
