"""What runs inside a signature worker process (sigpool.py): its start, ``init``, and its
task, ``protocol.envelope.verdicts``. Kept apart from sigpool.py so that a worker imports
the standard library and ``protocol.envelope`` alone (no trio): it starts in ~0.2 s.

A worker lives only as long as the node that started it:

- SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group, and it is the
  node's to handle (it stops, and closes the pool, which ends the workers).
- A worker whose node is gone exits within ``PARENT_POLL`` seconds. A node killed with
  SIGKILL closes nothing, and a worker blocked on its task queue would never see the end
  of that queue: every spawned worker holds a copy of both ends of the queue's pipe. So a
  daemon thread polls the parent's pid (Linux's parent-death signal is tied to the
  spawning *thread*, which need not live as long as the node).
"""

from __future__ import annotations

import os
import signal
import threading
import time

PARENT_POLL = 1.0  # seconds between checks that the node is still there


def init(node: int) -> None:
    """Run first in each worker (``ProcessPoolExecutor(initializer=init, initargs=(os.getpid(),))``):
    ``node`` is the pid of the node that started it. (Given, not read here: a node killed
    while the worker was starting is no longer its parent by then.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != node:
        os._exit(0)
    threading.Thread(target=_exit_with, args=(node,), name="exit-with-node", daemon=True).start()


def _exit_with(node: int) -> None:
    """Exit this process once ``node`` is no longer its parent (the node ended)."""
    while True:  # (bounded by the process's life: it ends with it, or ends it)
        time.sleep(PARENT_POLL)
        if os.getppid() != node:
            os._exit(0)
