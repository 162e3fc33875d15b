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

What each gossip message costs every node is what limits the network (bench/gossip.py
measures it, in raw Ed25519 verifies per entry). Profiled (issue 12), py-libp2p spent it
on work this protocol does not need, and each of these is removed without weakening a
check:

- The pubsub envelope's signature is not checked on receipt (``strict_signing=False``):
  every message this node accepts is validated on its content, which carries its own
  signatures (each entry is signed by its author; validators in gossip.py), as
  Ethereum's consensus network does with gossipsub's StrictNoSign. So a message's
  ``from`` and ``seqno`` are unauthenticated: nothing here trusts them (gossip.py hands
  handlers the forwarder, the peer of the connection, never ``from``), and a message's
  id is derived from all of it (``message_id``), so that a copy with a forged ``from`` is
  another message and can neither stand for nor suppress the real one. What this node
  publishes is still signed, once, at its origin: nodes of earlier versions
  (``strict_signing=True``) drop unsigned messages, and so keep taking ours.
- Yamux sends a window update once half the receive window is used, as go-yamux does;
  py-libp2p 0.8.1 sent one after every read whatever ``PY_YAMUX_RELEASE_ON_READ`` says
  (``_window_update_at_half``): a frame, a Noise encryption and a write per message.
- Every pubsub RPC carries the sender's signed peer record, and py-libp2p verified it
  on every RPC received, twice (pubsub, then gossipsub), and rebuilt the one it sends
  from the host's addresses for every RPC sent. The same record of the same peer is
  verified once (``_consume_record_once``; a new or changed one is verified as before)
  and the own record is rebuilt at most every ``RECORD_REFRESH_S``.
- IDONTWANT (gossipsub v1.2) is not spoken: see ``GOSSIPSUB_PROTOCOLS``.

Together with one decode and verify per message and a 100 ms batching window in
gossip.py, these took a receiving node from 5.8 to 2.0 ms of CPU per entry at 50
entries/s on 10 nodes (33 to 12 raw Ed25519 verifies, idle work included: a quarter of
what is left is keepalive, routine sync and heartbeats), its p95 latency from 8.8 s
(it could not keep up) to 146 ms, and the highest rate delivered with p95 <= 500 ms
from 11/s to 275/s, where the publisher's own appends run out (bench/gossip.py
--find-rate, issue 12). What remains is py-libp2p's cost per copy of a message, about
1 ms (trio, Yamux, Noise, protobuf, a syscall), about five copies of each message
per node (from and to its mesh peers).
"""

from __future__ import annotations

import hashlib
import time
import weakref
from dataclasses import dataclass
from typing import Any

import multiaddr
from libp2p import NOISE_PROTOCOL_ID, NoiseTransport, create_yamux_muxer_option, new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
import libp2p.pubsub.gossipsub as _gossipsub_module
import libp2p.pubsub.pubsub as _pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.pubsub.utils import maybe_consume_signed_record
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from protocol.keys import SigningKey

GOSSIPSUB_PROTOCOLS = [PROTOCOL_ID_V11, PROTOCOL_ID]
"""Gossipsub v1.1, not v1.2: v1.2's IDONTWANT makes py-libp2p send every mesh peer a
control RPC for every message it receives, whatever its size (go-libp2p only for
messages over 1 KiB). For messages as small as ours that cost more than the duplicates
it could save, and on a fast network it arrives too late to save any: dropping it halved
the writes per message, and took a node from 5.6 to 3.0 ms of CPU per entry at 50/s
(bench/gossip.py). A node of an earlier version proposes v1.2 first and settles on v1.1."""
QUEUE_SIZE = 1024
MESSAGE_ID_SIZE = 20  # bytes of a pubsub message id (a truncated SHA-256)
RECORD_RECHECK_S = 600.0  # a peer's unchanged signed peer record is verified again after this
RECORDS_KEPT = 4096  # (peer, record) pairs remembered as verified; all forgotten when full
RECORD_REFRESH_S = 5.0  # the own signed peer record sent in RPCs is rebuilt at most this often


class _RpcQueue(RpcQueue):
    def __init__(self, max_size: int = QUEUE_SIZE, **kw: Any) -> None:
        super().__init__(max_size=max_size, **kw)


async def _window_update_at_half(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """After a read: a window update only once half the receive window has been consumed
    (go-yamux's ``sendWindowUpdate``), growing the window as py-libp2p does when it sends
    one. py-libp2p 0.8.1 also sent one for any smaller amount after every read, so every
    small gossip message cost a frame, a Noise encryption and a write (8% of a busy
    node's CPU). The sender never waits on this: it may always send half a window."""
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self.target_recv_window // 2:
            return
        increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
    await self.send_window_update(increment, skip_lock=True)


def _quiet_yamux() -> None:
    YamuxStream._auto_tune_and_send_window_update = _window_update_at_half


_records_checked: dict[tuple[bytes, bytes, bytes], float] = {}


def _consume_record_once(rpc: Any, host: Any, peer: ID) -> bool:
    """py-libp2p's check of the signed peer record an RPC carries (its signature, that it
    is ``peer``'s, stored in the peerstore), run once per (host, peer, record bytes) and
    again after ``RECORD_RECHECK_S``: the same bytes from the same peer verify the same.
    An RPC whose record fails is ignored by pubsub, as before."""
    if not rpc.HasField("senderRecord"):
        return True
    key = (host.get_id().to_bytes(), peer.to_bytes(), rpc.senderRecord)
    now = time.monotonic()
    if _records_checked.get(key, 0.0) > now:
        return True
    if not maybe_consume_signed_record(rpc, host, peer):
        return False
    if len(_records_checked) >= RECORDS_KEPT:
        _records_checked.clear()
    _records_checked[key] = now + RECORD_RECHECK_S
    return True


_records_sent: "weakref.WeakKeyDictionary[Any, tuple[float, tuple[bytes, bool]]]" = weakref.WeakKeyDictionary()


def _record_to_send(host: Any) -> tuple[bytes, bool]:
    """The signed peer record to put in an RPC (py-libp2p's ``env_to_send_in_RPC``, which
    rebuilds the host's addresses on every call), kept for ``RECORD_REFRESH_S``."""
    now = time.monotonic()
    kept = _records_sent.get(host)
    if kept is not None and kept[0] > now:
        return kept[1]
    record = env_to_send_in_RPC(host)
    _records_sent[host] = (now + RECORD_REFRESH_S, record)
    return record


def _check_records_once() -> None:
    for module in (_pubsub_module, _gossipsub_module):
        module.maybe_consume_signed_record = _consume_record_once
        module.env_to_send_in_RPC = _record_to_send


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


def message_id(msg: Any) -> bytes:
    """A pubsub message's id: SHA-256 over its ``from``, ``seqno``, topics and data (each
    length-prefixed), truncated to ``MESSAGE_ID_SIZE`` bytes. Copies of one message that
    arrive from several peers share it (the seen-cache drops all but the first); a
    message that differs in anything, a forged ``from`` included, has another. Since
    ``from`` and ``seqno`` are not authenticated (unsigned envelopes), an id of those
    alone (py-libp2p's default) would let anyone who guesses the next seqno of a peer
    send junk under that id first, and have the real message taken for it."""
    h = hashlib.sha256()
    for part in (msg.from_id, msg.seqno, "\n".join(msg.topicIDs).encode(), msg.data):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()[:MESSAGE_ID_SIZE]


class SignOnlyPubsub(Pubsub):
    """Pubsub that checks no envelope signature on receipt (``strict_signing=False``) and
    signs what it publishes itself, once, at its origin, for the nodes of earlier
    versions, which drop unsigned messages (py-libp2p's own ``publish`` signs only with
    ``strict_signing``, and then also checks every signature it receives)."""

    async def publish(self, topic_id: str | list[str], data: bytes) -> None:
        msg = rpc_pb2.Message(
            data=data,
            topicIDs=[topic_id] if isinstance(topic_id, str) else list(topic_id),
            from_id=self.my_id.to_bytes(),
            seqno=self._next_seqno(),
        )
        key = self.host.get_private_key()
        msg.signature = key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
        msg.key = self.host.get_public_key().serialize()
        await self.push_msg(self.my_id, msg)


class _MessageCache(MessageCache):
    """py-libp2p's cache of recent messages (what IHAVE announces and IWANT is answered
    from) keys them by ``from + seqno`` whatever the pubsub's message id: announced ids
    would never match the receivers' seen-cache (each announcement answered by a copy of
    the whole message), and a message with a forged ``from``/``seqno`` could take the
    real one's place. Here it keys them by ``message_id``."""

    def put(self, msg: Any) -> None:
        mid = message_id(msg)
        if mid in self.msgs:
            return
        self.msgs[mid] = msg
        self.history[0].append(CacheEntry(mid, msg.topicIDs))


class _GossipSub(GossipSub):
    """GossipSub for unsigned envelopes: its message cache keyed by ``message_id``, and no
    "equivocation" check. That check takes two messages of one ``from`` and ``seqno``
    with different data for proof that the originator equivocated, penalises it and stops
    forwarding the second: with ``from`` unauthenticated, anyone could send a valid
    message under an honest peer's next ``from``/``seqno`` first, and so have the honest
    peer's message go unforwarded and the peer penalised. An entry's author is held to
    one entry per seq by the entry's own signature (fork proofs), not by this."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mcache = _MessageCache(self.mcache.window_size, self.mcache.history_size)

    def _check_equivocation(self, msg: Any) -> bool:
        return True


def build_pubsub(host: Any, tuning: GossipTuning = GossipTuning()) -> tuple[Pubsub, GossipSub]:
    _raise_queue_sizes()
    _check_records_once()
    gossipsub = _GossipSub(
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
    pubsub = SignOnlyPubsub(host, gossipsub, strict_signing=False, msg_id_constructor=message_id)
    pubsub.counter = time.time_ns()
    return pubsub, gossipsub


def peer_id_of(public_key: bytes) -> ID:
    from protocol.keys import peer_id

    return ID.from_base58(peer_id(public_key))
