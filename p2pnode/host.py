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


def _raise_queue_sizes() -> None:
    """Read by Pubsub at subscribe time and per new peer: set before either happens."""
    _pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = QUEUE_SIZE
    _pubsub_module.RpcQueue = _RpcQueue


@dataclass(frozen=True)
class GossipTuning:
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1  # seconds
    max_messages_per_topic_per_second: float = 2_000.0


def key_pair(key: SigningKey) -> KeyPair:
    """The libp2p key pair of the node's ledger key."""
    private = Ed25519PrivateKey.from_bytes(key.seed)
    return KeyPair(private, private.get_public_key())


def build_host(key: SigningKey, listen: list[multiaddr.Multiaddr], *, mdns: bool = False) -> Any:
    """A host that speaks Noise and Yamux only, identified by ``key``; with ``mdns`` it
    also finds peers on the local network."""
    kp = key_pair(key)
    noise = NoiseTransport(kp, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt=create_yamux_muxer_option(),
        listen_addrs=listen,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        enable_mDNS=mdns,
    )


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
