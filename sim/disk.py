"""One node's disk, as LevelDB with a write-ahead log behaves on a machine that can lose
power: a write batch is applied at once (the node reads it back at once), but it is
durable only once a ``sync=True`` batch, or a later one, reaches the log. A crash keeps
the durable prefix of the batches and drops the rest. A full disk refuses a write with
``DiskFull`` and stores nothing of it.

Invariants (asserted): the durable state is always a prefix of the batches written; a
refused batch leaves both views as they were.
"""

from __future__ import annotations

from typing import Iterable


class DiskFull(Exception):
    """The write was refused: nothing of it was stored. The node must stop (fail-stop)."""


Put = tuple[bytes, bytes | None]  # (key, value); None deletes


class Disk:
    def __init__(self, capacity: int | None = None) -> None:
        self.durable: dict[bytes, bytes] = {}
        self.view: dict[bytes, bytes] = {}  # what the running node reads: durable + pending
        self._pending: list[list[Put]] = []  # batches written but not yet synced
        self.capacity = capacity  # keys the disk can hold; None: unlimited
        self.writes = 0

    def write(self, batch: Iterable[Put], *, sync: bool) -> None:
        """Apply ``batch`` at once; durable now if ``sync`` (with every batch before it)."""
        batch = list(batch)
        if self.capacity is not None:
            grows = sum(1 for k, v in batch if v is not None and k not in self.view)
            if len(self.view) + grows > self.capacity:
                raise DiskFull(f"{len(self.view)} keys held, {grows} more do not fit in {self.capacity}")
        for k, v in batch:
            if v is None:
                self.view.pop(k, None)
            else:
                self.view[k] = v
        self._pending.append(batch)
        self.writes += 1
        if sync:
            self.flush()

    def flush(self) -> None:
        """What the OS does in its own time (and a sync write does at once): the log reaches the disk."""
        for batch in self._pending:
            for k, v in batch:
                if v is None:
                    self.durable.pop(k, None)
                else:
                    self.durable[k] = v
        self._pending.clear()

    def crash(self) -> None:
        """Power lost: what was not durable is gone."""
        self._pending.clear()
        self.view = dict(self.durable)

    def get(self, key: bytes) -> bytes | None:
        return self.view.get(key)

    def keys(self, prefix: bytes) -> list[bytes]:
        """Keys under ``prefix`` in order (sorted: a LevelDB iterator)."""
        return sorted(k for k in self.view if k.startswith(prefix))
