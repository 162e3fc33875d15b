"""Sync and peer exchange over libp2p streams: the I/O half of ``protocol/wire.py``.

Gossip makes new entries arrive fast; sync makes them arrive always. A pull asks the peer
for its heads, skips every author whose head we already hold, and fetches the missing
ranges in batches of up to ``wire.MAX_BATCH`` entries, asking for the next batch before
verifying the last so that the peer's reading and our verifying overlap. Each batch is
verified and stored in one write (``Store.ingest``).

Every read is bounded in size (``wire.MAX_FRAME``) and time (``STREAM_TIMEOUT``); a peer
that sends garbage gets ``PeerMisbehaved`` and is scored down by the node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import trio

from protocol import wire
from protocol.errors import ProtocolError

log = logging.getLogger("p2pnode.sync")

STREAM_TIMEOUT = 30.0  # seconds any single read may wait before the peer is given up on


class Stream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


class PeerMisbehaved(Exception):
    """The peer broke the wire rules; ``code`` says how (a ``ProtocolError`` code)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class PeerGone(Exception):
    """The stream ended, was reset, or timed out before the exchange was complete."""


async def read_exactly(stream: Stream, n: int) -> bytes:
    """Exactly ``n`` bytes from ``stream``; ``PeerGone`` if it ends first."""
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = await stream.read(left)
        if not chunk:
            raise PeerGone(f"stream ended {n - left} bytes into a {n}-byte read")
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def recv(stream: Stream, *, timeout: float = STREAM_TIMEOUT,
               decode: Callable[[bytes], Any] = wire.decode_message, max_frame: int = wire.MAX_FRAME) -> Any:
    """The next message on ``stream`` (by default a wire.py message; ``decode`` and
    ``max_frame`` serve other protocols framed alike). Raises ``PeerMisbehaved`` for a bad
    frame and ``PeerGone`` if the stream ends or stays silent for ``timeout`` seconds."""
    with trio.move_on_after(timeout) as scope:
        try:
            n = wire.frame_length(await read_exactly(stream, wire.FRAME_HEADER), max_frame)
            payload = await read_exactly(stream, n)
        except ProtocolError as e:
            raise PeerMisbehaved(e.message, e.code) from None
        except PeerGone:
            raise
        except Exception as e:  # libp2p's StreamEOF/StreamReset/StreamError and kin
            if _is_stream_error(e):
                raise PeerGone(f"{type(e).__name__}: {e}") from None
            raise
    if scope.cancelled_caught:
        raise PeerGone(f"no message within {timeout:.0f} s")
    try:
        return decode(payload)
    except ProtocolError as e:
        raise PeerMisbehaved(e.message, e.code) from None


async def send(stream: Stream, msg: wire.Message) -> None:
    """Write ``msg`` as one frame; ``PeerGone`` if the stream is gone."""
    data = wire.frame(msg)
    try:
        await stream.write(data)
    except Exception as e:
        if _is_stream_error(e):
            raise PeerGone(f"{type(e).__name__}: {e}") from None
        raise


def _is_stream_error(e: Exception) -> bool:
    from libp2p.exceptions import BaseLibp2pError

    return isinstance(e, (BaseLibp2pError, EOFError, ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError))


def expect(msg: wire.Message, kind: type) -> Any:
    try:
        return wire.expect(msg, kind)
    except ProtocolError as e:
        raise PeerMisbehaved(e.message, e.code) from None


# -- the listener side ---------------------------------------------------------------

MAX_REQUESTS_PER_STREAM = 1_000_000  # bounds the serving loop; far above any real sync


async def serve_sync(stream: Stream, heads: Callable[[], dict], chain: Callable[[bytes, int, int], list[bytes]]) -> int:
    """Answer one peer's pulls until it closes the stream; returns the entries sent.

    ``heads()`` gives the chains held; ``chain(author, start, limit)`` their envelopes.
    """
    sent = 0
    for _ in range(MAX_REQUESTS_PER_STREAM):
        try:
            msg = await recv(stream)
        except PeerGone:
            return sent
        if isinstance(msg, wire.HeadsQuery):
            await send(stream, wire.heads_message(heads()))
        elif isinstance(msg, wire.Get):
            answer = wire.answer_get(msg, chain(msg.author, msg.start, msg.limit))
            await send(stream, answer)
            sent += len(answer.entries)
        else:
            expect(msg, wire.Get)  # neither a heads query nor a get: refused
    return sent


# -- the dialer side -----------------------------------------------------------------


@dataclass
class PullResult:
    """What one pull from one peer brought."""

    authors_checked: int = 0
    authors_behind: int = 0
    received: int = 0
    added: int = 0
    forks: list = field(default_factory=list)
    errors: list = field(default_factory=list)


Ingest = Callable[[list[bytes], bytes], Awaitable[Any]]  # (envelopes, author) -> store.IngestReport


async def pull(stream: Stream, our_heads: Callable[[], dict], ingest: Ingest, *, batch: int = wire.MAX_BATCH) -> PullResult:
    """Fetch from the peer on ``stream`` every entry it holds that we lack, storing each
    batch with ``ingest`` as it arrives. Stops an author's range at the first batch that
    does not verify (the rest could not link)."""
    result = PullResult()
    await send(stream, wire.HeadsQuery())
    theirs = expect(await recv(stream), wire.Heads)
    wants = wire.plan_pull(our_heads(), theirs)
    result.authors_checked = len(theirs.heads)
    result.authors_behind = len(wants)
    for want in wants:
        if not await _pull_range(stream, want, ingest, batch, result):
            break  # the peer sent entries that do not verify: nothing more from it this round
    return result


async def _pull_range(stream: Stream, want: wire.Want, ingest: Ingest, batch: int, result: PullResult) -> bool:
    """Pull one author's range; False if the peer's entries did not verify."""
    start = want.start
    await send(stream, wire.Get(want.author, start, min(batch, want.stop - start + 1)))
    while True:
        got = expect(await recv(stream), wire.Entries)
        if got.author != want.author or got.start != start:
            raise PeerMisbehaved("entries answer a different request", "bad_message")
        if not got.entries:
            return True  # the peer no longer holds what it announced; nothing to do
        result.received += len(got.entries)
        start += len(got.entries)
        more = start <= want.stop
        if more:  # pipelining: the peer reads the next batch while we verify this one
            await send(stream, wire.Get(want.author, start, min(batch, want.stop - start + 1)))
        report = await ingest(list(got.entries), want.author)
        result.added += len(report.added)
        result.forks.extend(report.forks)
        if report.errors:
            result.errors.extend(report.errors)
            try:
                if more:
                    expect(await recv(stream), wire.Entries)  # drop the answer already asked for
                await _check_divergence(stream, want, report, ingest, result)
            except (PeerGone, PeerMisbehaved):
                pass  # the errors found already say what went wrong
            return False
        if not more:
            return True


async def _check_divergence(stream: Stream, want: wire.Want, report: Any, ingest: Ingest, result: PullResult) -> None:
    """A batch that does not link at its first seq means the peer's chain and ours differ
    before it: fetch the peer's entry just below, whose ingest yields the fork proof."""
    first = report.errors[0]
    if first.code != "bad_prev" or first.seq != want.start or want.start < 2:
        return
    await send(stream, wire.Get(want.author, want.start - 1, 1))
    got = expect(await recv(stream), wire.Entries)
    if got.entries:
        fork_report = await ingest(list(got.entries), want.author)
        result.forks.extend(fork_report.forks)


# -- peer exchange -------------------------------------------------------------------


async def serve_pex(stream: Stream, on_hello: Callable[[tuple[str, ...]], None], known: Callable[[], wire.Peers]) -> None:
    """Answer one ``pex`` with the peers we know, after noting where the dialer listens."""
    hello = expect(await recv(stream), wire.Pex)
    on_hello(hello.addrs)
    await send(stream, known())


async def ask_pex(stream: Stream, our_addrs: tuple[str, ...]) -> wire.Peers:
    """Tell the peer where we listen; the peers it knows."""
    await send(stream, wire.Pex(our_addrs[: wire.MAX_ADDRS]))
    return expect(await recv(stream), wire.Peers)
