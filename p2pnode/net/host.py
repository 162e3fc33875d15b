"""The libp2p host and gossipsub router, built the one way this node allows.

Choices, each from a measurement (``../shared/LIBP2P-NOTES.md``):

- The host key is the ledger key, so the peer ID is the owner's identity everywhere.
- Noise is the only security transport: the library's default also accepts plaintext,
  secio and TLS, and a node must never talk in the clear. Yamux is the only muxer.
- One connection per peer: the default configuration waits ~250 ms per dial.
- Gossipsub's per-peer, per-topic rate limit (10/s by default, own publishes included)
  is raised, and adaptive gossip is off, since it stretched heartbeats to 30-60 s on
  small networks. Gossip stays best effort: sync is what makes delivery certain.
- The pubsub sequence counter starts at the clock in nanoseconds, so a restarted node's
  messages are not taken for ones already seen.
- The outbound per-peer queue and each subscription channel hold 32 messages, module
  constants with no constructor option: a burst of 300 publishes reached a node two hops
  away 16 times. They are raised to ``QUEUE_SIZE`` (then 300 of 300 arrived).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import multiaddr
from libp2p import NOISE_PROTOCOL_ID, NoiseTransport, create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from protocol.keys import SigningKey

GOSSIPSUB_PROTOCOLS = [PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID]
QUEUE_SIZE = 1024


class _RpcQueue(RpcQueue):
    def __init__(self, max_size: int = QUEUE_SIZE, **kw: Any) -> None:
        super().__init__(max_size=max_size, **kw)


def _quiet_yamux() -> None:
    """py-libp2p's Yamux sends a window update after every read by default; go-yamux (and
    this setting) sends one when half the window is used. Every small gossip message
    cost a frame, a Noise encryption and a write: ~14% of a busy node's CPU."""
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")


def _raise_queue_sizes() -> None:
    """Read by Pubsub at subscribe time and per new peer: set before either happens."""
    _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = QUEUE_SIZE
    _pubsub_module.RpcQueue = _RpcQueue


@dataclass(frozen=True)
class GossipTuning:
    # Every copy of a message costs each node ~1 ms of CPU in py-libp2p (Noise, Yamux
    # window updates, protobuf): the mesh degree is the multiplier. 3 keeps two spare
    # paths per node; sync repairs anything lost. Measured: bench/gossip.py.
    degree: int = 3
    degree_low: int = 2
    degree_high: int = 6
    heartbeat_interval: int = 1  # seconds
    max_messages_per_topic_per_second: float = 2_000.0


def key_pair(key: SigningKey) -> KeyPair:
    """The libp2p key pair of the node's ledger key."""
    private = Ed25519PrivateKey.from_bytes(key.seed)
    return KeyPair(private, private.get_public_key())


def build_host(key: SigningKey, listen: list[multiaddr.Multiaddr], *, mdns: bool = False) -> Any:
    """A host that speaks Noise and Yamux only, identified by ``key``; with ``mdns`` it
    also finds peers on the local network."""
    _quiet_yamux()
    kp = key_pair(key)
    noise = NoiseTransport(kp, noise_privkey=create_new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt=create_yamux_muxer_option(),
        listen_addrs=listen,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        enable_mDNS=mdns,
    )
    disable_auto_connect(host)
    return host


def disable_auto_connect(host: Any) -> None:
    """The node chooses whom to dial (peers.py): a few peers, with backoff. py-libp2p's
    own auto-connector would dial every peer its peerstore learned (identify, gossip) to
    keep 50-100 connections, and no configuration turns it off without also making the
    connection pruner drop everything."""

    async def _never() -> None:
        return None

    host.get_network().auto_connector.maybe_connect = _never


def build_pubsub(host: Any, tuning: GossipTuning = GossipTuning()) -> tuple[Pubsub, GossipSub]:
    _raise_queue_sizes()
    gossipsub = GossipSub(
        protocols=GOSSIPSUB_PROTOCOLS,
        degree=tuning.degree,
        degree_low=tuning.degree_low,
        degree_high=tuning.degree_high,
        heartbeat_interval=tuning.heartbeat_interval,
        heartbeat_initial_delay=0.1,
        adaptive_gossip_enabled=False,
        max_messages_per_topic_per_second=tuning.max_messages_per_topic_per_second,
        # Every peer of a local test network shares 127.0.0.1: IP diversity rules would
        # keep them out of each other's meshes.
        eclipse_protection_enabled=False,
    )
    pubsub = Pubsub(host, gossipsub, strict_signing=True)
    pubsub.counter = time.time_ns()
    return pubsub, gossipsub


def peer_id_of(public_key: bytes) -> ID:
    from protocol.keys import peer_id

    return ID.from_base58(peer_id(public_key))
