"""Publishing a service's own gossiped documents again (offers, listings): gossip is best
effort, so an author's node sends its live documents again every ``REPUBLISH_S``, after
the upkeep that forgets what expired, and ``JOIN_DELAY_S`` after a peer connects (once
the gossip mesh includes it); one such republish is pending at a time."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import trio

log = logging.getLogger(__name__)

REPUBLISH_S = 30.0
JOIN_DELAY_S = 1.0  # after a peer connects, so that the gossip mesh includes it


class Republisher:
    """Republishes ``own_live()`` (envelope bytes) on ``topic``; ``upkeep()`` runs first
    in each periodic round. ``what`` names the documents in the log."""

    def __init__(self, ctx: Any, topic: str, own_live: Callable[[], Iterable[bytes]], upkeep: Callable[[], Any],
                 what: str) -> None:
        self.ctx = ctx
        self.topic = topic
        self.own_live = own_live
        self.upkeep = upkeep
        self.what = what
        self._soon = False

    async def republish(self) -> None:
        for envelope in list(self.own_live()):
            await self.ctx.publish(self.topic, envelope)

    def peer_joined(self) -> None:
        """Publish again shortly: the new peer may have missed them."""
        if not self._soon:
            self._soon = True
            self.ctx.spawn(self._republish_soon)

    async def _republish_soon(self) -> None:
        await trio.sleep(JOIN_DELAY_S)
        self._soon = False
        await self.republish()

    async def loop(self) -> None:
        """Every ``REPUBLISH_S``: the upkeep, then our live documents again."""
        while True:
            await trio.sleep(REPUBLISH_S)
            try:
                self.upkeep()
                await self.republish()
            except Exception:
                log.exception("%s upkeep failed", self.what)
