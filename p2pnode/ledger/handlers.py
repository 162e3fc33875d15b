"""The running node's handlers of the ``ledger.*`` control methods (declared in
p2pnode/control/core.py): the operations of p2pnode/ledger/ops.py, serialised with every
other write by the node's ``Ledger``, with slow work in a worker thread.

Promises: an append is durable when it answers and is then gossiped; an import reads
its file (a regular file of at most ``ops.MAX_IMPORT_FILE`` bytes) before it takes the
write lock; an import that
stored entries or recorded fork proofs runs the same hooks as sync (announce, fork proofs,
extensions' ``on_entries``), even when it is refused for a fork; ``verify`` holds the
write lock, so it never sees a half-written chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import trio

from protocol import codec, jsonform
from protocol.errors import ProtocolError

from p2pnode.errors import ApiError, bad_params
from p2pnode.ledger import ops
from p2pnode.ledger.export import entry_json
from p2pnode.ledger.store import IngestReport
from p2pnode.ledger.writer import Ledger

CheckAppend = Callable[[str, Any], None]


def ledger_handlers(ledger: Ledger, *, checks: Iterable[tuple[str, Any]] = (),
                    check_append: CheckAppend | None = None,
                    run_sync: Callable[..., Awaitable[Any]] | None = None) -> dict[str, Callable[..., Awaitable[Any]]]:
    """Handlers by method name. ``checks``: the extensions' verify checks; ``check_append
    (kind, body)`` may refuse a ``ledger.append`` beyond the kind's own rules (raising a
    ``CodedError``); it runs under the write lock."""
    store, registry, key = ledger.store, ledger.registry, ledger.key
    run_sync = run_sync or trio.to_thread.run_sync
    checks = list(checks)

    async def append(kind: str, body: Any) -> dict:
        try:
            value = jsonform.from_json(body)
            codec.encode(value)  # out-of-range integers, depth
        except ProtocolError as e:
            raise ApiError(f"body refused: {e.message}", code=e.code) from None
        try:
            [entry] = await ledger.append([(kind, value)],
                                          check=(lambda: check_append(kind, value)) if check_append else None)
        except ApiError:
            raise
        except ProtocolError as e:
            raise ApiError(f"entry refused: {e.message}", code=e.code) from None
        return entry_json(entry)

    async def show(author: str | None, **kw: Any) -> dict:
        pk = key.public_key if author is None else ops.peer_key(author, "author")
        return ops.ledger_show(store, registry, pk, kw["from"], kw["limit"])

    async def heads() -> dict:
        return ops.ledger_heads(store, key.public_key)

    async def verify() -> dict:
        async with ledger.lock:
            return await run_sync(lambda: ops.ledger_verify(store, registry, None, checks))

    async def import_(path: str | None, lines: list | None) -> dict:
        if (path is None) == (lines is None):
            raise bad_params('pass either "path" (a file the node can read) or "lines" (export lines)')
        if path is not None and not Path(path).is_absolute():
            raise bad_params('"path" must be an absolute path')

        if lines is None:  # read before taking the write lock: a slow file must not hold up writes
            lines = await run_sync(lambda: ops.read_import_file(path))

        def work() -> tuple[dict, IngestReport]:
            return ops.import_report(store, registry, lines)

        async with ledger.lock:
            try:
                summary, report = await run_sync(work)
            except ops.ImportRefused as e:
                refused = e
            else:
                refused = None
        if refused is not None:
            if refused.report.forks:
                await ledger.stored(refused.report, via="import")
            raise refused
        if report.added or report.forks:
            await ledger.stored(report, via="import")
        return summary

    async def export(author: str | None, cursor: dict | None, limit: int) -> dict:
        pk = None if author is None else ops.peer_key(author, "author")
        return await run_sync(lambda: ops.ledger_export(store, pk, cursor, limit))

    async def kinds() -> dict:
        return ops.ledger_kinds(registry)

    return {"ledger.append": append, "ledger.show": show, "ledger.heads": heads, "ledger.verify": verify,
            "ledger.import": import_, "ledger.export": export, "ledger.kinds": kinds}
