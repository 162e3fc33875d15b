"""The ``[endorse]`` section of config.toml: this node's own limits, not rules (every
node judges endorsements alike whatever its settings). ``accept_asks`` is also a flag of
``p2pnode start`` (``--accept-asks`` / ``--no-accept-asks``)."""

from __future__ import annotations

from p2pnode.extension import Setting


def _within(lo: int, hi: int):
    def check(value: int) -> None:
        if not lo <= value <= hi:
            raise ValueError(f"must be {lo} to {hi}")

    return check


SETTINGS = (
    Setting("accept_asks", "bool", True, "Keep the asks (\"please endorse me\") that peers gossip, for "
            "`p2pnode endorse asks`.", flag="--accept-asks"),
    Setting("max_asks", "int", 100, "At most this many peers' asks are kept; asks of further peers are "
            "dropped until old ones expire.", check=_within(1, 10_000)),
    Setting("ask_ttl_s", "int", 7 * 86400, "Seconds an ask is kept (and our own republished) after it was "
            "signed.", check=_within(60, 30 * 86400)),
)
