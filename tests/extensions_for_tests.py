"""Extensions made for the tests of the contract (tests/node/test_extensions.py): found
through entry points the tests build, as real extensions are."""

from __future__ import annotations

from typing import Any

from protocol.errors import SchemaError
from protocol.kinds import Kind

from p2pnode.control.methods import Method, Param
from p2pnode.extension import Extension, Setting


def _even(entry: Any) -> None:
    body = entry.body
    if not isinstance(body, dict) or set(body) != {"n"} or type(body["n"]) is not int:
        raise SchemaError("x.item body is {n: int}")
    if body["n"] % 2:
        raise SchemaError("x.item takes even numbers only")


def _index(entry: Any) -> list[bytes]:
    return [entry.body["n"].to_bytes(8, "big") + entry.author + entry.seq.to_bytes(8, "big")]


class StrictService:
    """Counts the valid items it is told of, and answers how many."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.seen: list[int] = []

    async def on_entries(self, entries: list) -> None:
        self.seen.extend(e.body["n"] for e in entries)

    async def count(self, at_least: int) -> dict:
        return {"seen": len(self.seen), "indexed": len(list(self.ctx.index.keys())), "at_least": at_least}


STRICT = Extension(
    name="strict", version="1", description="even items only",
    kinds=(Kind("x.item", "an even number", _even, _index),), reacts=("x.item",),
    methods=(Method("strict.count", "How many valid items were seen.",
                    params=(Param("at_least", "int", "echoed", default=0, low=0),), handler="count"),),
    settings=(Setting("limit", "int", 10, "a limit"),),
    service="extensions_for_tests:StrictService",
)

NOT_AN_EXTENSION = {"name": "oops"}

BAD_NAME = Extension(name="Bad-Name", version="1", description="")

TAKES_A_LENDING_KIND = Extension(name="thief", version="1", description="",
                                 kinds=(Kind("loan.agreement", "mine now", lambda e: None),))

TAKES_A_CORE_METHOD = Extension(name="clash", version="1", description="",
                                methods=(Method("node.status", "mine now", handler="x"),))

NEWER_CONTRACT = Extension(name="future", version="1", description="", api=99)


class Explodes:
    def __init__(self, ctx: Any) -> None:
        raise RuntimeError("this service cannot start")


BROKEN_SERVICE = Extension(name="broken", version="1", description="a service that fails to start",
                           methods=(Method("broken.call", "never bound", handler="call"),),
                           service="extensions_for_tests:Explodes")

MISSING_HANDLER = Extension(name="partial", version="1", description="a method with no handler",
                            methods=(Method("partial.call", "never bound", handler="nope"),),
                            service="extensions_for_tests:StrictService")


def _raises(entry: Any) -> None:
    raise TypeError("a bug in the validator")


BUGGY_VALIDATOR = Extension(name="buggy", version="1", description="a validator that raises",
                            kinds=(Kind("x.buggy", "its validator has a bug", _raises, _index),))


class FlakyService:
    """A background task that fails its first ``fails`` runs, then keeps running."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.runs = 0

    async def work(self) -> None:
        import trio

        self.runs += 1
        if self.runs <= 2:
            raise OSError(f"dial failed (run {self.runs})")  # as a resend that cannot dial
        await trio.sleep_forever()

    async def on_peer_connected(self, peer: bytes) -> None:
        raise RuntimeError("a hook's bug")


FLAKY = Extension(name="flaky", version="1", description="a task that fails twice",
                  tasks=("work",), service="extensions_for_tests:FlakyService")
