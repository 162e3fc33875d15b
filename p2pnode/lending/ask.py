"""One request and its answer on ``/p2plend/agree/1.0.0``, bounded in time."""

from __future__ import annotations

from typing import Any

import trio

from protocol.keys import peer_id
from protocol.lending import agree

from p2pnode.context import Context
from p2pnode.net.sync import PeerGone

ANSWER_TIMEOUT = 15.0  # seconds for the other node's answer (it may sync our chain first)


class Unreachable(Exception):
    """The counterparty is not connected, or left mid-exchange."""


async def ask(ctx: Context, pk: bytes, msg: Any) -> Any:
    """Send one request to ``pk`` on the agree protocol; its answer. ``Unreachable`` if
    ``pk`` is not connected or the stream ends; ``PeerMisbehaved`` for a bad answer;
    ``trio.TooSlowError`` after ``ANSWER_TIMEOUT``."""
    if not ctx.peers.is_connected(pk):
        raise Unreachable(f"{peer_id(pk)} is not connected")
    stream = await ctx.open_stream(pk, agree.AGREE_PROTOCOL)
    stream.timeout = ANSWER_TIMEOUT
    try:
        with trio.fail_after(ANSWER_TIMEOUT):
            await stream.send(msg)
            return await stream.recv()
    except PeerGone as e:
        raise Unreachable(str(e)) from None
    finally:
        await stream.close()
