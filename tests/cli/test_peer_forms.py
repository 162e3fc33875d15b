"""One short form of a peer in text output, whichever form (peer ID or public key hex) a
view gives; petnames instead of it in listings, beside the full ID in details."""

from __future__ import annotations

from pathlib import Path

from cli.output import as_peer_id, peer_full, peer_label, short_peer
from cli.petnames import Petname, Petnames
from protocol.keys import SigningKey

KEY = SigningKey.from_seed(b"\x01" * 32)
PID = KEY.peer_id
HEX = KEY.public_key.hex()


def test_a_public_key_in_hex_and_its_peer_id_have_one_short_form():
    assert as_peer_id(HEX) == as_peer_id(HEX.upper()) == PID
    assert as_peer_id(PID) == PID
    assert short_peer(PID) == short_peer(HEX) == "…" + PID[-8:]
    assert len(short_peer(PID)) == 9


def test_distinct_peers_get_distinct_short_forms():
    shorts = {short_peer(SigningKey.from_seed(bytes([i]) * 32).peer_id) for i in range(200)}
    assert len(shorts) == 200


def test_labels_prefer_the_petname():
    names = Petnames(Path("names.toml"), [Petname("alice", PID, None)])
    assert peer_label(PID, names) == peer_label(HEX, names) == "alice"
    assert peer_label(PID) == short_peer(PID)
    assert peer_label(None, names) == "-"
    other = SigningKey.from_seed(b"\x02" * 32).peer_id
    assert peer_label(other, names) == short_peer(other)
    assert peer_full(HEX, names) == f"alice ({PID})"
    assert peer_full(other, names) == other
