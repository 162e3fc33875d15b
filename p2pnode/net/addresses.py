"""Listen and peer addresses: checks that need no running host. Imports no libp2p (the
CLI checks flags with these), only ``multiaddr``."""

from __future__ import annotations

import socket

from protocol.errors import ProtocolError
from protocol.keys import public_key_from_peer_id


PORT_IN_USE = "cannot listen on"  # how the message of ``PortInUse`` begins (testnet.py reads it in logs)


class PortInUse(OSError):
    """A listen address is taken: by another node, most likely."""


def check_ports_free(addrs: list[str]) -> None:
    """Raise ``PortInUse`` naming the first TCP listen address that another socket holds.

    py-libp2p listens with SO_REUSEPORT (for hole punching), so a second node on a taken
    port would start without error and share the port with the first, the kernel handing
    each incoming connection to either. A plain bind tells the truth.
    """
    for a in addrs:
        parts = a.split("/")
        if len(parts) < 5 or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp" or parts[4] in ("", "0"):
            continue
        family = socket.AF_INET if parts[1] == "ip4" else socket.AF_INET6
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is fine
            try:
                s.bind((parts[2], int(parts[4])))
            except OSError as e:
                raise PortInUse(e.errno, f"{PORT_IN_USE} {a}: {e.strerror} (is another node using port {parts[4]}?)") from None


def split_p2p_addr(addr: str) -> tuple[bytes, str]:
    """(public key, address without /p2p/...) of a multiaddr ending in ``/p2p/<id>``;
    ``ValueError`` naming what is wrong otherwise."""
    import multiaddr

    head, sep, pid = addr.rpartition("/p2p/")
    if not sep or not head or "/" in pid:
        raise ValueError("a peer address ends in /p2p/<peer id>")
    try:
        pk = public_key_from_peer_id(pid)
    except ProtocolError as e:
        raise ValueError(e.message) from None
    try:
        multiaddr.Multiaddr(head)
    except Exception as e:
        raise ValueError(f"not a multiaddr: {e}") from None
    return pk, head


def check_multiaddr(addr: str) -> None:
    """``ValueError`` naming the problem if ``addr`` is not a multiaddr."""
    import multiaddr

    try:
        multiaddr.Multiaddr(addr)
    except Exception as e:
        raise ValueError(f"{addr}: {e}") from None
