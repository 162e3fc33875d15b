"""How the CLI shows a node's sync: one line of text, a progress bar, and `status --watch`.

Everything is read from ``node.status``'s ``sync`` (docs/api.md): ``state`` (``idle`` or
``syncing``) and, from nodes that report it, ``progress``: ``{"fetched", "target",
"rate_per_s", "eta_s"}`` while a pull is under way, else null. A node too old to report
it leaves the key out; then progress is unknown, and is said to be. The renderers are pure
functions of that dict, so they are tested without a node.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from cli.output import echo

UNKNOWN = "sync progress unknown (this node does not report it)"
TTY_INTERVAL = 0.25  # seconds between redraws of the bar
PLAIN_INTERVAL = 1.0  # seconds between lines when stdout is not a terminal


def eta_text(eta_s: float | None) -> str:
    """``about 3 s left``, ``about 2 min left``, ``about 1 h 5 min left``."""
    if eta_s is None:
        return "time left unknown"
    s = max(0, round(eta_s))
    if s < 60:
        return f"about {s} s left"
    m = round(s / 60)
    if m < 60:
        return f"about {m} min left"
    h, m = divmod(m, 60)
    return f"about {h} h {m} min left" if m else f"about {h} h left"


def progress_text(progress: dict) -> str:
    """``fetching 6000/10000 entries, 1200/s, about 3 s left``."""
    rate = progress.get("rate_per_s")
    return (f"fetching {progress['fetched']}/{progress['target']} entries, "
            + (f"{rate:.0f}/s, " if rate is not None else "")
            + eta_text(progress.get("eta_s")))


def sync_progress(sync: dict) -> str | None:
    """What to say about progress: a pull's figures, ``UNKNOWN`` for a node that does not
    report them, or None when it reports that no pull is under way."""
    if "progress" not in sync:
        return UNKNOWN
    return progress_text(sync["progress"]) if sync["progress"] else None


def done(sync: dict) -> bool:
    """Whether the node is idle: no sync round, no pull under way."""
    return sync.get("state") == "idle" and not sync.get("progress")


def plain_line(sync: dict) -> str:
    """The line printed each second at a non-terminal: ``syncing: fetching ...``."""
    said = sync_progress(sync)
    if done(sync):
        return f"idle: {sync.get('entries_received', 0)} entries received"
    return f"{sync.get('state', 'syncing')}: {said or 'exchanging heads'}"


def bar_fields(sync: dict) -> dict[str, Any]:
    """The progress bar's task fields for a ``sync``: ``total`` None draws a pulsing bar
    (a round under way with no figures), else ``completed`` of ``total``."""
    p = sync.get("progress")
    if done(sync):
        return {"description": "idle", "total": 1, "completed": 1,
                "detail": f"{sync.get('entries_received', 0)} entries received"}
    if p:
        return {"description": "syncing", "total": max(p["target"], 1), "completed": min(p["fetched"], p["target"]),
                "detail": progress_text(p)}
    return {"description": sync.get("state", "syncing"), "total": None, "completed": 0,
            "detail": UNKNOWN if "progress" not in sync else "exchanging heads"}


def watch(fetch: Callable[[], dict], timeout: float, tty: bool, console: Any = None) -> bool:
    """Show the sync of ``fetch()`` (a ``node.status``) until the node is idle (True) or
    ``timeout`` seconds have passed (False): a redrawn bar at a terminal, else a plain
    line each second."""
    deadline = time.monotonic() + timeout
    if not tty:
        while True:
            sync = fetch()["sync"]
            echo(plain_line(sync))
            if done(sync):
                return True
            if time.monotonic() + PLAIN_INTERVAL > deadline:
                return False
            time.sleep(PLAIN_INTERVAL)
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description:<8}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                  console=console, auto_refresh=False) as bar:
        task = bar.add_task("sync", total=None, detail="asking the node")
        while True:
            sync = fetch()["sync"]
            bar.update(task, **bar_fields(sync))
            bar.refresh()
            if done(sync):
                return True
            if time.monotonic() + TTY_INTERVAL > deadline:
                return False
            time.sleep(TTY_INTERVAL)
