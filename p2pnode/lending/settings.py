"""Lending's settings: the ``[loans]`` section of config.toml, and the ``p2pnode start``
flags that override it (declared in p2pnode/lending/__init__.py)."""

from __future__ import annotations

from protocol.lending.money import MoneyError, parse_rate

from p2pnode.extension import Setting


def max_rate_bp(text: str) -> int | None:
    """The rate cap in basis points a ``max_rate`` setting gives (``""``: no cap);
    ``ValueError`` naming what is wrong."""
    if not text:
        return None
    try:
        return parse_rate(text)
    except MoneyError as e:
        raise ValueError(e.message) from None


SETTINGS = (
    Setting("review", "bool", False, "Hold incoming loan proposals for you to accept or reject (`loan pending`) "
            "instead of countersigning by policy alone.", flag="--review"),
    Setting("max_rate", "str", "", 'Refuse proposals above this yearly rate, e.g. "20%" (empty: no cap).',
            flag="--max-rate", check=max_rate_bp),
)
