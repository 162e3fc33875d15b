"""Valid inputs for every target, made by the code itself: the first files of each corpus.

Everything here is deterministic (fixed keys, clocks, salt and nonce), so ``python -m fuzz --seed`` rewrites the same
files and a corpus diff shows only what the fuzzer added. A mutation of a valid input
reaches far deeper into a decoder than random bytes do: past the map, into the fields.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from functools import lru_cache

from protocol import codec, wire
from protocol.entry import ZERO_ID, Entry, make_entry
from protocol.envelope import countersign, seal
from protocol.fork import ForkProof
from protocol.keys import SigningKey, peer_id
from protocol.kinds import genesis_body
from protocol.lending import agree
from protocol.lending.amendment import make_amendment, propose_amendment
from protocol.lending.contract import contract_from, make_receipt, propose, terms_of
from protocol.lending.market import make_listing
from protocol.lending.offer import make_cancel, make_offer, offer_of

T0 = 1_790_000_000_000  # ms: a fixed clock for every document


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(b"p2pnode fuzz " + name.encode()).digest())


A, B, C = key("a"), key("b"), key("c")
"""The keys the targets sign fuzzed payloads with (targets.py): a seed document names
them, so that its mutations still pass the signer checks and reach the fields."""


def _chain(k: SigningKey, bodies: list[tuple[str, object]]) -> list[Entry]:
    out: list[Entry] = []
    for kind, body in bodies:
        head = out[-1] if out else None
        out.append(make_entry(k, seq=len(out) + 1, prev=head.id if head else ZERO_ID,
                              ts=T0 + len(out), kind=kind, body=body))
    return out


@lru_cache(maxsize=1)
def documents() -> dict[str, bytes]:
    """Envelope bytes of one of each document: entries of every core and loan kind,
    an offer, a cancellation, a proposal, an agreement, a receipt, a transfer."""
    ga, gb = _chain(A, [("genesis", genesis_body("alice"))])[0], _chain(B, [("genesis", genesis_body())])[0]
    offer = make_offer(A, side="lend", currency="EUR", min_amount=10_000, max_amount=500_000, rate_bp=1200,
                       term="12m", created=T0, expires=T0 + 86_400_000)
    request = make_offer(B, side="borrow", currency="JPY", min_amount=1, max_amount=10**9, rate_bp=750,
                         term="26w", period_days=14, schedule="equal-principal", grace_days=0, late_fee=0,
                         default_days=30, min_grade="B+", created=T0, expires=T0 + 1000)
    contract = contract_from(offer.id, terms_of(offer_of(offer)), taker=B.public_key, principal=100_000,
                             start=date(2026, 1, 31), lender_head=(1, ga.id), borrower_head=(1, gb.id),
                             created=T0, expires=T0 + 600_000)
    proposal = propose(B, contract)
    agreement = countersign(proposal, A)
    receipt = make_receipt(B, loan=proposal.id, n=1, what="disbursement", amount=100_000, day=date(2026, 1, 31),
                           payer=A.public_key)
    transfer = seal({"type": "transfer", "loan": proposal.id, "from": A.public_key, "to": C.public_key,
                     "after": 1, "date": "2026-03-01"}, A, C)
    sale = seal({"type": "transfer", "loan": proposal.id, "from": A.public_key, "to": C.public_key, "after": 1,
                 "date": "2026-03-01", "price": 95_000}, C)
    listing = make_listing(A, loan=proposal.id, price=95_000, currency="EUR", created=T0, expires=T0 + 86_400_000)
    amended = make_amendment(loan=proposal.id, borrower=B.public_key, holder=A.public_key, after=1,
                             day=date(2026, 2, 10), rate_bp=600, term="12w", kind="annuity", period_days=14)
    half_amendment = propose_amendment(B, amended)
    amendment = countersign(half_amendment, A)
    chain = _chain(A, [
        ("genesis", genesis_body("alice")),
        ("note", {"text": "hello"}),
        ("loan.agreement", {"contract": agreement.raw}),
        ("loan.declared", {"loan": proposal.id, "what": "repayment", "amount": 9000, "date": "2026-02-28"}),
        ("loan.default", {"loan": proposal.id, "date": "2026-12-31"}),
        ("loan.dispute", {"loan": proposal.id, "reason": "not paid"}),
        ("loan.transfer", {"transfer": transfer.raw}),
        ("x.unknown-kind", [1, None, True, b"\x00", {"a": -1}]),
        ("loan.amendment", {"amendment": amendment.raw}),
    ])
    receipt_entry = _chain(B, [("genesis", genesis_body()), ("loan.receipt", {"receipt": receipt.raw})])[1]
    docs = {f"entry_{e.seq}_{e.kind}": e.envelope for e in chain}
    docs["entry_receipt"] = receipt_entry.envelope
    docs.update(offer=offer.raw, request=request.raw, cancel=make_cancel(A, offer.id, T0 + 5).raw,
                proposal=proposal.raw, agreement=agreement.raw, receipt=receipt.raw, transfer=transfer.raw,
                sale=sale.raw, listing=listing.raw, amendment=amendment.raw, half_amendment=half_amendment.raw)
    return docs


def _payload(envelope: bytes) -> bytes:
    return codec.decode(envelope)[0]


def fork_proof() -> bytes:
    g = _chain(C, [("genesis", genesis_body())])[0]
    x = make_entry(C, seq=2, prev=g.id, ts=T0, kind="note", body={"text": "one"})
    y = make_entry(C, seq=2, prev=g.id, ts=T0, kind="note", body={"text": "two"})
    return ForkProof.of(x, y).encode()


def _wire_messages() -> list[wire.Message]:
    docs = documents()
    entries = tuple(v for k, v in sorted(docs.items()) if k.startswith("entry_"))
    return [
        wire.HeadsQuery(),
        wire.Heads(((A.public_key, 8, hashlib.sha256(b"h").digest()), (B.public_key, 2, bytes(32)))),
        wire.Get(A.public_key, 1, 4096),
        wire.Entries(A.public_key, 1, entries[:3]),
        wire.Entries(A.public_key, 9, ()),
        wire.Pex(("/ip4/0.0.0.0/tcp/7420", "/ip6/::1/tcp/7421")),
        wire.Peers(((B.public_key, ("/ip4/127.0.0.1/tcp/7420",)), (C.public_key, ()))),
        wire.HeadsQuery(since=wire.Cursor(b"\x07" * wire.EPOCH_SIZE, 3)),
        wire.HeadsQuery(A.public_key, wire.NO_CURSOR),
        wire.Heads(((B.public_key, 2, bytes(32)), (A.public_key, 8, hashlib.sha256(b"h").digest())), 4,
                   b"\x07" * wire.EPOCH_SIZE, 5, 3),
        wire.Heads(((A.public_key, 8, hashlib.sha256(b"h").digest()),), A.public_key, b"\x07" * wire.EPOCH_SIZE, 5),
    ]


def _agree_messages() -> list[agree.AgreeMessage]:
    docs = documents()
    loan = hashlib.sha256(_payload(docs["proposal"])).digest()
    return [
        agree.Propose(docs["proposal"]),
        agree.Propose(docs["proposal"], (docs["entry_1_genesis"], docs["entry_2_note"])),
        agree.Accepted(docs["agreement"]),
        agree.Accepted(docs["transfer"], "transfer"),
        agree.Held(loan),
        agree.Refused(loan, "policy", "rate 1200 bp is over this node's cap of 1000 bp"),
        agree.Countersigned(docs["agreement"]),
        agree.Ok(loan),
        agree.Transfer(docs["transfer"]),
        agree.Amend(docs["half_amendment"]),
        agree.Amend(docs["amendment"]),
        agree.Accepted(docs["amendment"], "amendment"),
    ]


def _codec_values() -> list[object]:
    return [None, True, False, 0, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -(2**63),
            "", "a" * 31, "a" * 32, "é€😀", b"", b"\x00" * 255, b"\x01" * 256, [], [[[]]], {}, {"a": 1, "b": [2, {}]},
            {"": None, "type": "entry"}, list(range(16)), {str(i): i for i in range(16)}]


def _frames(messages: list[wire.Message]) -> bytes:
    return b"".join(wire.frame(m) for m in messages)


def _key_files() -> list[bytes]:
    """A clear key file and one sealed with the passphrase ``targets.PASSPHRASE``; the
    sealed one is made once with a fixed salt and nonce, so the corpus stays the same."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from p2pnode import keyfile

    clear = {"format": keyfile.FORMAT, "version": 1, "peer_id": A.peer_id, "public_key": A.public_key.hex(),
             "seed": A.seed.hex()}
    salt, nonce = bytes(range(16)), bytes(range(12))
    n, r, p = 1 << 10, 8, 1  # cheaper than the real 2**15, so that the fuzzer runs faster
    sealed = ChaCha20Poly1305(keyfile._kdf(b"fuzz", salt, n, r, p)).encrypt(nonce, A.seed, A.public_key)
    enc = {k: v for k, v in clear.items() if k != "seed"}
    enc["encryption"] = {"kdf": "scrypt", "n": n, "r": r, "p": p, "salt": salt.hex(),
                         "cipher": "chacha20-poly1305", "nonce": nonce.hex()}
    enc["ciphertext"] = sealed.hex()
    return [(json.dumps(d, indent=2) + "\n").encode() for d in (clear, enc)]


def _config_files() -> list[bytes]:
    from p2pnode.extensions import load
    from p2pnode.home import Config

    loaded = load()
    full = Config(name="alice", bootstrap=["/ip4/127.0.0.1/tcp/7420/p2p/" + A.peer_id], mdns=True,
                  disabled=["endorse"], sections={"loans": {"review": True, "max_rate": "20%"},
                            "policy": {"preset": "cn-2016", "lpr": "3.10%", "max_term": "120m"}})
    return [Config().to_toml(loaded.extensions).encode(), full.to_toml(loaded.extensions).encode(), b""]


def _requests() -> list[bytes]:
    def line(method: str, params: dict | None = None, rid: object = 1) -> bytes:
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        return json.dumps(req).encode()

    return [
        line("node.status"),
        line("node.connect", {"addr": "/ip4/127.0.0.1/tcp/7420/p2p/" + A.peer_id}, "x"),
        line("ledger.append", {"kind": "note", "body": {"text": "hi", "b": {"$bin": "00ff"}}}),
        line("ledger.show", {"author": B.peer_id, "from": 2, "limit": 10}),
        line("ledger.export", {"cursor": {"author": A.peer_id, "seq": 3}, "limit": 1}),
        line("ledger.import", {"lines": ["{}"]}),
        line("offer.create", {"side": "lend", "currency": "EUR", "amount": "1500.50", "rate": "7.5%",
                            "term": "12m", "period_days": 30}),
        line("loan.show", {"loan": "00" * 32}, None),
        line("loan.reschedule", {"loan": "ab" * 4, "rate": "4.5%", "term": "26w", "period_days": 14,
                                 "schedule": "equal-principal", "date": "2026-03-01"}),
        b'{"jsonrpc": "2.0", "method": "node.peers"}',
        b'[{"jsonrpc": "2.0", "id": 1, "method": "node.status"}]',
    ]


def _export_lines() -> list[bytes]:
    from p2pnode.ledger.export import entry_json
    from protocol.entry import parse_entry

    docs = documents()
    lines = [json.dumps(entry_json(parse_entry(docs[k])), separators=(",", ":"))
             for k in ("entry_1_genesis", "entry_2_note", "entry_4_loan.declared")]
    return ["\n".join(lines).encode(), lines[1].encode()]


def corpus() -> dict[str, list[bytes]]:
    """The seed inputs of each target (targets.py names the same targets)."""
    docs = documents()
    envelopes = list(docs.values())
    entries = [v for k, v in docs.items() if k.startswith("entry_")]
    proof = fork_proof()
    wire_msgs = _wire_messages()
    return {
        "codec": [codec.encode(v) for v in _codec_values()] + [_payload(docs["agreement"])],
        "envelope": envelopes,
        "entry": entries,
        "entry_payload": [_payload(e) for e in entries],
        "fork": [proof],
        "gossip": [wire.entries_message(entries[:4]), proof, docs["listing"]],
        "wire": [wire.encode_message(m) for m in wire_msgs] + [wire.frame(wire.Get(B.public_key, 3, 7))[:4]],
        "sync": [_frames(wire_msgs[1:2] + [wire.Entries(A.public_key, 1, tuple(entries[:2]))]),
                 _frames([wire.HeadsQuery(), wire.Get(A.public_key, 1, 4), wire.HeadsQuery()]),
                 _frames(wire_msgs[-2:-1] + [wire.Entries(A.public_key, 9, tuple(entries[:1]))]),
                 _frames([wire.HeadsQuery(since=wire.Cursor(b"\x07" * wire.EPOCH_SIZE, 3)),
                          wire.HeadsQuery(since=wire.NO_CURSOR), wire.HeadsQuery(A.public_key, wire.NO_CURSOR)])],
        "agree": [agree.encode(m)[4:] for m in _agree_messages()],
        "offer": [_payload(docs[k]) for k in ("offer", "request", "cancel", "listing")],
        "loan": [_payload(docs[k]) for k in ("proposal", "receipt", "transfer", "sale", "amendment")],
        "money": [b"1500.50", b"0", b"7.5%", b"1000%", b"12m", b"9999d", b"1000000000000000000", b"0.00000001"],
        "jsonform": [b'{"text": "hi"}', b'{"b": {"$bin": "00ff"}, "n": [1, -2, 18446744073709551615], "t": true, "z": '
                     b'null, "s": "\\u00e9\\ud83d\\ude00"}', b'[[], {}, ""]', b"-9223372036854775808"],
        "export": _export_lines(),
        "settings": [b"lending.review=true", b'lending.max_rate="12.5%"', b"lending.auto_confirm=false",
                     b'lending.max_rate=""', b'lending.preset="cn-2016"', b'lending.lpr="3.10%"'],
        "control": _requests(),
        "keyfile": _key_files(),
        "config": _config_files(),
        "record": [agree.Record(bytes(32), role, state, docs[which], code, reason, T0).encode()
                   for role, state, which, code, reason in (
                       (agree.OUT, agree.PROPOSED, "proposal", "", ""), (agree.IN, agree.PENDING, "proposal", "", ""),
                       (agree.IN, agree.AGREED, "agreement", "", ""),
                       (agree.OUT, agree.REFUSED, "proposal", "policy", "rate over the cap"))],
        "names": [f'# names\n[names]\nalice = "{peer_id(A.public_key)}"\n'
                  f'"bob b" = \'/ip4/127.0.0.1/tcp/7420/p2p/{peer_id(B.public_key)}\'\n'.encode(), b""],
        "testnet": [json.dumps({"nodes": [{"name": "node1", "home": "/tmp/t/node1", "addr": "/ip4/127.0.0.1/tcp/"
                                           "7420/p2p/12D3KooWJvSiF1UptAPforjwh9Jb8mSxRZaxCAZoqdKBa7nyt4pY",
                                           "peer_id": "12D3KooWJvSiF1UptAPforjwh9Jb8mSxRZaxCAZoqdKBa7nyt4pY",
                                           "pid": 4242}]}, indent=2).encode()],
    }
