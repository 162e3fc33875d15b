"""The core's control methods, declared (``node.*`` and ``ledger.*``): name, params, result
and help in one place (p2pnode/control/methods.py). The running node binds their handlers
(p2pnode/node.py for ``node.*``, p2pnode/ledger/handlers.py for ``ledger.*``). This module
imports neither trio nor libp2p: the CLI reads it."""

from __future__ import annotations

from p2pnode.control.methods import Method, Param

DEFAULT_SHOW_LIMIT = 100
EXPORT_PAGE = 1000  # entries in one ledger.export answer unless asked otherwise
MAX_EXPORT_PAGE = 10_000

ENTRY_VIEW = ('the entry view `{"author", "seq", "prev", "ts", "kind", "body", "id", "envelope"}` '
              "(docs/cli.md)")

CORE_METHODS = (
    Method(
        "node.status",
        "The running node: identity, addresses, peers, every chain held, the store (failed after a write "
        "error, free space, reserves), the check of its own chain at start, the chains of strangers held "
        "against their budget (`ledger.stranger_chains`), sync (with the progress of a "
        "pull under way), the extensions loaded and left out, background tasks that failed, and counters. "
        "Every task is supervised: a failure is logged and counted in `tasks`, a task meant to run for the "
        "node's life starts again after a backoff (1 s doubling to 60 s), and none ends the node.",
        result='`{"peer_id", "public_key", "pid", "version", "uptime_s", "listen": [multiaddr], "peers": '
               '[{"peer_id", "addr", "direction"}], "heads": [{"author", "seq", "id", "ts", "forked"}], '
               '"forked": [peer ID], "store": {"state": "ok"|"failed", "error": str or null, "failed_at_ms", '
               '"path", "free_bytes", "reserve_own_bytes", "reserve_others_bytes"}, "own_chain": {"state": '
               '"checking"|"checked"|"no_peers"|"skipped"|"timed_out"|"unchecked", "held", "head_at_start", '
               '"head", "fetched", "peers_asked", "wait_s"}, "strangers": {"held", "budget"}, "sync": {"state": "idle"|"syncing", "last_round_ms", "entries_received", '
               '"progress": {"fetched", "target", "rate_per_s", "eta_s"} or null}, "extensions": [{"name", '
               '"version", "source"}], "extension_failures": [{"name", "error"}], "tasks": {"failures", "by_task": {task: int}, '
               '"restarts", "last_failure": {"task", "error", "at_ms"} or null}, "counters": {name: int}}`',
        handler="status",
    ),
    Method("node.peers", "The peers connected now, with how long, their misbehaviour score and the round trip "
           "of the last keepalive ping in milliseconds (`ping_ms`, null until one has come back).",
           result='`{"peers": [{"peer_id", "addr", "direction", "connected_s", "score", "ping_ms"}]}`',
           handler="peers"),
    Method(
        "node.connect", "Dial a peer. Refusals: `bad_address`, `dial_failed` (no answer within 10 s, or refused).",
        params=(Param("addr", "str", "a multiaddr ending in `/p2p/PEER_ID`", required=True, max_len=1024),),
        result='`{"peer_id", "connected": true}`', handler="connect",
    ),
    Method("node.stop", "Answer, then shut down: the socket disappears, the host and the store close, the "
           "process exits. `p2pnode stop` waits for that.", result='`{"stopping": true}`', handler="stop"),
    Method("node.arrivals", "The last 10,000 foreign entries stored, with when and how each came "
           "(`sync`, `gossip`, `import`, or an extension's stream).",
           result='`{"arrivals": [{"author", "seq", "ts", "received_ms", "via"}]}`', handler="arrivals"),
    Method("node.extensions", "The extensions loaded (with their kinds, topics, streams and methods) and "
           "those left out, with why.",
           result='`{"extensions": [{"name", "version", "description", "source", "kinds", "topics", "streams", '
                  '"methods", "tasks"}], "failures": [{"name", "error"}]}`', handler="extensions"),
    Method(
        "ledger.append",
        "Sign and append one entry to the node's own chain, durably (on disk when the answer comes), with the "
        "key the node holds: no passphrase. `body` is the JSON form of protocol/jsonform.py (`{\"$bin\": hex}` "
        "for binary; no floats). Refusals: `unencodable` (a float, an integer outside 64 bits), `bad_body` and "
        "other codes of the kind's rules (message `entry refused: ...`); an extension may refuse too (lending: "
        "`duplicate_document`); `disk_full` (less free disk than the own reserve: nothing was written), "
        "`store_failed` (a write failed earlier: the store takes none until the node restarts; "
        "operations.md, \"The disk\"). At start, an append waits while the node asks its peers for its own "
        "chain (at most `ledger.own_chain_wait_s`). The node then gossips the entry.",
        params=(Param("kind", "str", 'the entry kind, e.g. "note"', required=True, max_len=64),
                Param("body", "any", "the body, in JSON form", required=True)),
        result=ENTRY_VIEW, handler="append",
    ),
    Method(
        "ledger.show", "Entries of one chain (default: the node's own), from a seq on.",
        params=(Param("author", "peer", "the chain's author (default: this node)"),
                Param("from", "int", "the first seq", default=1, low=1, high=2**63 - 1),
                Param("limit", "int", "at most this many entries", default=DEFAULT_SHOW_LIMIT, low=1,
                      high=MAX_EXPORT_PAGE)),
        result='`{"author", "head_seq" (0 if none is held), "forked", "entries": [entry view + "known_kind": bool '
               '+ "kind_status": "known"|"unknown"|"invalid"]}`',
        handler="show",
    ),
    Method("ledger.heads", "Every chain held, sorted by peer ID.",
           result='`{"heads": [{"author", "seq", "id", "ts", "own", "forked"}]}`', handler="heads"),
    Method(
        "ledger.verify",
        "A full re-check of the store (invariants I1-I6) and every extension's check of its records; damage is "
        "reported in the result, not as an error. Holds the node's write lock while it runs (sync waits), in "
        "a worker thread.",
        result='`{"ok", "authors", "entries", "unknown_kinds", "invalid_bodies", "fork_proofs", "problems": '
               '[{"code", "message", "author", "seq"}], "problems_truncated"}`',
        handler="verify",
    ),
    Method(
        "ledger.import",
        "Verify JSON-lines export lines (protocol.md, \"Export files\") and store them all or nothing; pass "
        "either `path` (an absolute path the node reads: same user, same machine; use it for anything near "
        "the 1 MiB request limit) or `lines`. Refusals: `bad_export_file` (the message names the line), "
        "`import_refused` (details: `[{\"author\", \"seq\", \"code\", \"message\"}]`), `fork` (details: "
        "`[{\"author\", \"seq\"}]`; the fork proof is recorded anyway and gossiped), `os_error`, "
        "`not_a_file` (`path` names a FIFO, a device, a directory: only a regular file is read, and it is "
        "opened without blocking), `file_too_large` (over 256 MiB), and the store's `disk_full`, "
        "`store_failed`. The file is read before the write lock is taken.",
        params=(Param("path", "str", "an absolute path to an export file", max_len=4096),
                Param("lines", "list", "export lines")),
        result='`{"added", "duplicates", "lines"}`', handler="import_",
    ),
    Method(
        "ledger.export",
        "One page of an export: chains in the order of their public keys, each in seq order, each line "
        "exactly as an export file holds it. Pass `next` back as `cursor` until it is null.",
        params=(Param("author", "peer", "only this chain (default: every chain)"),
                Param("cursor", "object", 'where to go on: `{"author": peer ID, "seq": n}` as a page returned'),
                Param("limit", "int", "lines in this page", default=EXPORT_PAGE, low=1, high=MAX_EXPORT_PAGE)),
        result='`{"lines": [str], "next": cursor or null, "authors": int}` (`authors` counts the chains of '
               "the whole export)",
        handler="export",
    ),
    Method("ledger.kinds", "The entry kinds this node knows, with who owns each.",
           result='`{"kinds": [{"kind", "description", "owner"}]}`', handler="kinds"),
)
