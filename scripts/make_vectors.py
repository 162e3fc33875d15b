#!/usr/bin/env python3
"""Print the test vectors of docs/protocol.md as JSON, computed from fixed inputs.

    .venv/bin/python scripts/make_vectors.py            # print them
    .venv/bin/python scripts/make_vectors.py --write    # replace the block in docs/protocol.md

Everything here is deterministic (fixed seeds and timestamps; Ed25519 signing is
deterministic), so the output never changes unless the protocol does. The output goes into
docs/protocol.md in the ```json block after the line ``<!-- test-vectors -->``;
tests/protocol/test_vectors.py checks that the block equals this output and re-verifies
every vector.

Binary values inside "value" and "fields" use the JSON form of protocol/jsonform.py:
``{"$bin": "<hex>"}``. Every other byte string is plain lowercase hex.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import codec  # noqa: E402
from protocol.entry import ZERO_ID, Entry, make_entry  # noqa: E402
from protocol.envelope import SIGNING_PREFIX, seal  # noqa: E402
from protocol.fork import ForkProof  # noqa: E402
from protocol.jsonform import to_json  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.kinds import genesis_body  # noqa: E402

SEED_A = bytes(range(32))  # 000102...1f
SEED_B = bytes(range(32, 64))  # 202122...3f
T0 = 1764331200000  # 2025-11-28T12:00:00Z in ms

_L = 2**252 + 27742317777372353535851937790883648493  # order of the Ed25519 base point


def _hex(b: bytes) -> str:
    return b.hex()


def _small_r_signature(seed: bytes, message: bytes) -> bytes:
    """An RFC 8032 signature by ``seed``'s key with nonce r = 0, so R is the identity point.

    Plain RFC 8032 verification (OpenSSL, Go) accepts it; this protocol refuses it."""
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    a = int.from_bytes(h, "little")
    pub = SigningKey.from_seed(seed).public_key
    r_enc = bytes([1]) + bytes(31)
    k = int.from_bytes(hashlib.sha512(r_enc + pub + message).digest(), "little") % _L
    return r_enc + (k * a % _L).to_bytes(32, "little")


def _nested(levels: int) -> Any:
    v: Any = 0
    for _ in range(levels):
        v = [v]
    return v


ENCODINGS: list[Any] = [
    None, False, True,
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
    "", "a", "é", "€", "\U0001F600", "a" * 31, "a" * 32, "a" * 256,
    b"", b"\x00", b"\x00" * 256,
    [], [1, "a", b"\x01", None, True], list(range(15)), list(range(16)),
    {}, {"a": 1}, {"b": 1, "aa": 2, "a": 3}, {"z": 0, "é": 1, "": 2},
    {"\U0001F600": 1, "\uffff": 2},
    {f"k{i:02d}": i for i in range(16)},
    {"type": "entry", "body": {"text": "hi"}, "list": [[], {}]},
    _nested(32),
]

# (hex, code, why): bytes that a canonical decoder must refuse, each breaking one rule
REJECTS: list[tuple[str, str, str]] = [
    ("cd0001", "non_canonical", "1 as uint16"),
    ("cc01", "non_canonical", "1 as uint8"),
    ("d001", "non_canonical", "1 as int8"),
    ("cc7f", "non_canonical", "127 as uint8"),
    ("d100ff", "non_canonical", "255 as int16: a non-negative integer uses the uint family"),
    ("d0e0", "non_canonical", "-32 as int8"),
    ("d1ff80", "non_canonical", "-128 as int16"),
    ("d3ffffffffffffffff", "non_canonical", "-1 as int64"),
    ("cf00000000ffffffff", "non_canonical", "2**32-1 as uint64"),
    ("d90161", "non_canonical", "\"a\" as str8"),
    ("da000161", "non_canonical", "\"a\" as str16"),
    ("c5000100", "non_canonical", "one byte as bin16"),
    ("dc000101", "non_canonical", "[1] as array16"),
    ("de0001a16101", "non_canonical", "{\"a\": 1} as map16"),
    ("82a16201a16102", "non_canonical", "keys not sorted"),
    ("82a16201a2616102", "non_canonical", "keys sorted by length first: \"aa\" sorts before \"b\""),
    ("82a4f09f988001a3efbfbf02", "non_canonical", "keys in UTF-16 order: U+FFFF sorts before U+1F600"),
    ("82a16101a16101", "non_canonical", "duplicate key"),
    ("82a16101a16102", "non_canonical", "duplicate key, different values"),
    ("ca3f800000", "bad_type", "float32"),
    ("cb3ff0000000000000", "bad_type", "float64"),
    ("d6ff00000000", "bad_type", "timestamp (ext -1)"),
    ("d40100", "bad_type", "fixext 1"),
    ("c7000a", "bad_type", "ext 8"),
    ("810101", "bad_type", "integer map key"),
    ("81c4016101", "bad_type", "bin map key"),
    ("81c001", "bad_type", "nil map key"),
    ("81910101", "bad_type", "array map key"),
    ("0101", "trailing_bytes", "a byte after the value"),
    ("", "malformed", "empty input"),
    ("92", "malformed", "truncated array"),
    ("cd00", "malformed", "truncated uint16"),
    ("c1", "malformed", "the never-used format byte"),
    ("a2c328", "malformed", "invalid UTF-8"),
    ("a2c080", "malformed", "overlong UTF-8"),
    ("a3eda080", "malformed", "a UTF-16 surrogate encoded in UTF-8"),
    ("91" * 33 + "00", "too_deep", "33 nested arrays"),
]


def entry_vector(e: Entry, seed: bytes) -> dict[str, Any]:
    payload, sigs = codec.decode(e.envelope)
    ((pk, sig),) = sigs
    return {
        "seed": _hex(seed),
        "fields": to_json(e.document()),
        "payload": _hex(payload),
        "signing_message": _hex(SIGNING_PREFIX + payload),
        "id": _hex(e.id),
        "public_key": _hex(pk),
        "signature": _hex(sig),
        "envelope": _hex(e.envelope),
    }


def vectors() -> dict[str, Any]:
    a, b = SigningKey.from_seed(SEED_A), SigningKey.from_seed(SEED_B)

    identity = {
        "seed": _hex(SEED_A),
        "public_key": _hex(a.public_key),
        "peer_id_bytes": "002408011220" + _hex(a.public_key),
        "peer_id": a.peer_id,
    }

    encodings = [{"value": to_json(v), "hex": _hex(codec.encode(v))} for v in ENCODINGS]
    rejects: list[dict[str, Any]] = [{"hex": h, "code": c, "why": w} for h, c, w in REJECTS]
    rejects.append({"hex": "c40401020304", "max_size": 5, "code": "oversize", "why": "6 bytes, limit 5"})

    genesis = make_entry(a, seq=1, prev=ZERO_ID, ts=T0, kind="genesis", body=genesis_body("alice"))
    note = make_entry(a, seq=2, prev=genesis.id, ts=T0 + 60_000, kind="note", body={"text": "hello, world"})
    fork_b = make_entry(a, seq=2, prev=genesis.id, ts=T0 + 60_000, kind="note", body={"text": "hello, fork"})
    proof = ForkProof.of(note, fork_b)

    doc = {"type": "test.agreement", "amount": 150_000, "currency": "EUR", "parties": [a.public_key, b.public_key]}
    env = seal(doc, b, a)
    message = SIGNING_PREFIX + env.payload
    sig_a, sig_b = a.sign(message), b.sign(message)
    unsorted = sorted([(a.public_key, sig_a), (b.public_key, sig_b)], reverse=True)

    def raw(payload: bytes, pairs) -> str:
        return _hex(codec.encode([payload, [list(p) for p in pairs]]))

    small = bytes([1]) + bytes(31)
    not_a_doc = codec.encode({"kind": "no type"})
    loose_payload = bytes.fromhex("82a17601a474797065a174")  # {"v": 1, "type": "t"}, keys unsorted
    note_payload, note_sigs = codec.decode(note.envelope)
    wide = (
        "92c5" + len(note_payload).to_bytes(2, "big").hex() + note_payload.hex()
        + "9192c420" + a.public_key.hex() + "c440" + note_sigs[0][1].hex()
    )
    bad_envelopes = [
        {"hex": raw(env.payload, unsorted), "code": "non_canonical", "why": "signatures not sorted by public key"},
        {"hex": raw(env.payload, [(a.public_key, sig_a)] * 2), "code": "non_canonical", "why": "the same signer twice"},
        {"hex": raw(env.payload, []), "code": "bad_signature", "why": "no signature"},
        {"hex": raw(env.payload, [(a.public_key, a.sign(env.payload))]), "code": "bad_signature",
         "why": "signed without the p2plend/1\\0 prefix"},
        {"hex": raw(env.payload, [(small, small + bytes(32))]), "code": "bad_signature",
         "why": "small-order public key (identity point), R = identity, S = 0: RFC 8032 alone accepts it"},
        {"hex": raw(env.payload, [(a.public_key, _small_r_signature(SEED_A, message))]), "code": "bad_signature",
         "why": "the real key, but R is the identity point (nonce 0): RFC 8032 alone accepts it"},
        {"hex": raw(not_a_doc, [(a.public_key, a.sign(SIGNING_PREFIX + not_a_doc))]), "code": "bad_schema",
         "why": "payload is a map without a text 'type'"},
        {"hex": raw(loose_payload, [(a.public_key, a.sign(SIGNING_PREFIX + loose_payload))]), "code": "non_canonical",
         "why": "payload map keys not sorted (validly signed)"},
        {"hex": wide, "code": "non_canonical", "why": "the note entry envelope with its payload in a bin16 header"},
        {"hex": _hex(codec.encode([env.payload, [], b""])), "code": "bad_envelope", "why": "three elements"},
        {"hex": raw(env.payload, [(a.public_key[:31], sig_a)]), "code": "bad_envelope", "why": "31-byte public key"},
    ]

    # an entry whose seq-1 prev is not zero, and one signed by someone else
    bad_prev_doc = dict(genesis.document(), prev=note.id)
    bad_entries = [
        {"hex": _hex(seal(bad_prev_doc, a).raw), "code": "bad_schema", "why": "seq 1 with a non-zero prev"},
        {"hex": _hex(seal(note.document(), b).raw), "code": "bad_signature", "why": "signed by a key that is not the author"},
        {"hex": _hex(seal(note.document(), a, b).raw), "code": "bad_signature", "why": "signed by the author and another key"},
    ]

    skip = make_entry(a, seq=3, prev=note.id, ts=T0 + 120_000, kind="note", body={"text": "seq 3"})
    relinked = make_entry(a, seq=2, prev=hashlib.sha256(b"elsewhere").digest(), ts=T0 + 60_000, kind="note",
                          body={"text": "hello, world"})
    earlier = make_entry(a, seq=2, prev=genesis.id, ts=T0 - 1, kind="note", body={"text": "hello, world"})
    genesis_again = make_entry(a, seq=2, prev=genesis.id, ts=T0 + 60_000, kind="genesis", body=genesis_body("alice"))
    chain_breaks = [
        {"envelopes": [_hex(genesis.envelope), _hex(skip.envelope)], "code": "bad_seq", "seq": 2, "why": "seq 2 missing"},
        {"envelopes": [_hex(note.envelope)], "code": "bad_seq", "seq": 1, "why": "does not start at seq 1"},
        {"envelopes": [_hex(genesis.envelope), _hex(relinked.envelope)], "code": "bad_prev", "seq": 2,
         "why": "prev is not the id of seq 1"},
        {"envelopes": [_hex(genesis.envelope), _hex(earlier.envelope)], "code": "ts_decreased", "seq": 2,
         "why": "ts one ms before seq 1's"},
        {"envelopes": [_hex(genesis.envelope), _hex(genesis_again.envelope)], "code": "bad_body", "seq": 2,
         "why": "genesis after seq 1"},
    ]

    return {
        "protocol": "p2plend/1",
        "signing_prefix": _hex(SIGNING_PREFIX),
        "identity": identity,
        "encodings": encodings,
        "rejects": rejects,
        "note_entry": entry_vector(note, SEED_A),
        "chain": {
            "author": a.peer_id,
            "entries": [entry_vector(genesis, SEED_A), entry_vector(note, SEED_A)],
        },
        "two_signer_envelope": {
            "seeds": [_hex(SEED_A), _hex(SEED_B)],
            "document": to_json(doc),
            "payload": _hex(env.payload),
            "id": _hex(env.id),
            "signatures": [[_hex(pk), _hex(sig)] for pk, sig in env.signatures],
            "envelope": _hex(env.raw),
        },
        "bad_envelopes": bad_envelopes,
        "bad_entries": bad_entries,
        "chain_breaks": chain_breaks,
        "loan": loan_vector(a, b),
        "sale": sale_vector(a, b),
        "amendment": amendment_vector(a, b, loan_vector(a, b)),
        "fork_proof": {
            "author": a.peer_id,
            "seq": 2,
            "a_id": _hex(proof.a.id),
            "b_id": _hex(proof.b.id),
            "a": _hex(proof.a.envelope),
            "b": _hex(proof.b.envelope),
            "proof": _hex(proof.encode()),
        },
    }


def loan_vector(a: SigningKey, b: SigningKey) -> dict[str, Any]:
    """A 3-month annuity of 1200.00 EUR at 12% from ``a`` (lender) to ``b`` (borrower, who
    proposed it): the agreement, its schedule, the disbursement receipt and two repayment
    receipts (the second 10 days late with its fee), and the state they give."""
    from datetime import date

    from protocol.lending.contract import contract_schedule, countersign_contract, make_receipt
    from protocol.lending.loanstate import SignedReceipt, loan_state

    contract = {
        "type": "contract", "offer": bytes(range(32)), "proposer": b.public_key, "lender": a.public_key,
        "borrower": b.public_key, "currency": "EUR", "principal": 120_000, "rate_bp": 1200, "term": "3m",
        "schedule": "annuity", "start": "2026-01-31", "grace_days": 5, "late_fee": 1500, "default_days": 60,
        "lender_head": [1, bytes(32)], "borrower_head": [1, bytes(32)], "created": T0, "expires": T0 + 600_000,
        "policy": "default",
    }
    agreement = countersign_contract(contract, b, a)
    rows = contract_schedule(contract)
    loan = agreement.id
    receipts = [
        make_receipt(b, loan=loan, n=1, what="disbursement", amount=120_000, day=date(2026, 1, 31),
                     payer=a.public_key),
        make_receipt(a, loan=loan, n=2, what="repayment", amount=rows[0].payment, day=rows[0].due,
                     payer=b.public_key),
        make_receipt(a, loan=loan, n=3, what="repayment", amount=rows[1].payment + 1500, day=date(2026, 4, 10),
                     payer=b.public_key),
    ]
    st = loan_state(loan, contract, [SignedReceipt(r.id, r.document, r.signers[0]) for r in receipts], [], [],
                    date(2026, 5, 10))
    return {
        "lender_seed": _hex(SEED_A),
        "borrower_seed": _hex(SEED_B),
        "contract": to_json(contract),
        "loan_id": _hex(loan),
        "agreement": _hex(agreement.raw),
        "schedule": [{"due": r.due.isoformat(), "payment": r.payment, "interest": r.interest,
                      "principal": r.principal, "balance": r.balance} for r in rows],
        "receipts": [{"id": _hex(r.id), "envelope": _hex(r.raw)} for r in receipts],
        "state_on_2026_05_10": {"state": st.state, "days_past_due": st.days_past_due, "bucket": st.bucket,
                                "principal_paid": st.principal_paid, "interest_paid": st.interest_paid,
                                "fees_charged": st.fees_charged, "fees_paid": st.fees_paid,
                                "outstanding_principal": st.outstanding_principal},
    }


def sale_vector(a: SigningKey, b: SigningKey) -> dict[str, Any]:
    """The loan of ``loan_vector`` sold on 2026-03-15, after its first 2 receipts: ``a``,
    its lender, lists it at 790.00 EUR; the buyer (seed ``40…5f``) proposes the priced
    transfer after those 2 receipts, ``a`` countersigns it; and the yield to maturity of
    that price that day (2 installments left, due 2026-03-31 and 2026-04-30)."""
    from datetime import date

    from protocol.envelope import countersign
    from protocol.lending.contract import countersign_contract
    from protocol.lending.loanstate import SignedReceipt, loan_state
    from protocol.lending.market import listing_of, make_listing, sale_transfer, yield_to_maturity
    from protocol.lending.portfolio import expected_flows
    from protocol.lending.contract import open_receipt
    from protocol.jsonform import from_json

    c = SigningKey.from_seed(bytes(range(64, 96)))
    lv = loan_vector(a, b)
    contract = from_json(lv["contract"])
    loan = countersign_contract(contract, b, a).id
    receipts = [open_receipt(bytes.fromhex(r["envelope"])) for r in lv["receipts"][:2]]
    day = date(2026, 3, 15)
    st = loan_state(loan, contract, [SignedReceipt(r.id, r.document, r.signers[0]) for r in receipts], [], [], day)
    created = T0 + 107 * 86_400_000  # 2026-03-15T12:00:00Z
    listing_env = make_listing(a, loan=loan, price=79_000, currency="EUR", created=created,
                               expires=created + 7 * 86_400_000)
    listing = listing_of(listing_env)
    proposed = seal(sale_transfer(listing, c.public_key, after=len(st.counted), day=day), c)
    transfer = countersign(proposed, a)
    return {
        "buyer_seed": _hex(bytes(range(64, 96))),
        "listing": to_json(listing_env.document),
        "listing_id": _hex(listing_env.id),
        "listing_envelope": _hex(listing_env.raw),
        "transfer": to_json(transfer.document),
        "transfer_id": _hex(transfer.id),
        "transfer_envelope": _hex(transfer.raw),
        "ytm_bp_on_2026_03_15": yield_to_maturity(expected_flows(st, day), listing.price, day),
    }


def amendment_vector(a: SigningKey, b: SigningKey, loan: dict[str, Any]) -> dict[str, Any]:
    """An amendment of the loan of ``loan`` (``loan_vector``'s): after its first repayment,
    from 2026-03-05, 6% over 4 months in equal principal, signed by ``b`` (borrower) and
    ``a`` (holder); its document, bytes and id, the new schedule, and the state of the loan
    with it on 2026-05-10 (receipt 3, of 2026-04-10, is paid under the new terms)."""
    from datetime import date

    from protocol.envelope import countersign
    from protocol.lending.amendment import amendment_schedule, make_amendment, propose_amendment
    from protocol.lending.contract import open_agreement, open_receipt
    from protocol.lending.loanstate import SignedAmendment, SignedReceipt, loan_state

    agreement = open_agreement(bytes.fromhex(loan["agreement"]))
    receipts = [open_receipt(bytes.fromhex(r["envelope"])) for r in loan["receipts"]]
    doc = make_amendment(loan=agreement.id, borrower=b.public_key, holder=a.public_key, after=2,
                         day=date(2026, 3, 5), rate_bp=600, term="4m", kind="equal-principal")
    env = countersign(propose_amendment(b, doc), a)
    st = loan_state(agreement.id, agreement.document, [SignedReceipt(r.id, r.document, r.signers[0]) for r in receipts],
                    [], [], date(2026, 5, 10), [SignedAmendment(env.id, env.document, frozenset(env.signers))])
    (applied,) = st.amendments
    rows = amendment_schedule(doc, applied.outstanding_principal)
    return {
        "document": to_json(doc),
        "payload": _hex(env.payload),
        "id": _hex(env.id),
        "envelope": _hex(env.raw),
        "outstanding_principal": applied.outstanding_principal,
        "schedule": [{"due": r.due.isoformat(), "payment": r.payment, "interest": r.interest,
                      "principal": r.principal, "balance": r.balance} for r in rows],
        "state_on_2026_05_10": {"state": st.state, "days_past_due": st.days_past_due,
                                "principal_paid": st.principal_paid, "interest_paid": st.interest_paid,
                                "fees_charged": st.fees_charged, "fees_paid": st.fees_paid,
                                "outstanding_principal": st.outstanding_principal, "due_now": st.due_now},
    }


COMPACT_KEYS = ("value", "fields", "document", "contract")


def render(obj: Any, level: int = 0, key: str | None = None) -> str:
    """JSON for people: the top two levels and anything long spread over lines, values
    (``value``, ``fields``, ``document``) and short things on one line."""
    flat = json.dumps(obj, separators=(", ", ": "))
    if not isinstance(obj, (dict, list)) or not obj or key in COMPACT_KEYS:
        return flat
    if level >= 2 and len(flat) + 2 * level <= 100:
        return flat
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {render(v, level + 1, k)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [f"{inner}{render(v, level + 1)}" for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


MARKER = "<!-- test-vectors -->"


def replace_block(doc: str, block: str) -> str:
    """``doc`` with the ```json block after MARKER replaced by ``block``."""
    head, sep, tail = doc.partition(MARKER + "\n```json\n")
    if not sep:
        raise SystemExit(f"no {MARKER} followed by a ```json line")
    end = tail.index("\n```")
    return head + sep + block + tail[end:]


def main() -> None:
    block = render(vectors())
    if sys.argv[1:] == ["--write"]:
        doc = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
        doc.write_text(replace_block(doc.read_text(encoding="utf-8"), block), encoding="utf-8")
        print(f"updated {doc}")
    elif sys.argv[1:]:
        raise SystemExit("usage: make_vectors.py [--write]   (print the vectors, or update docs/protocol.md)")
    else:
        print(block)


if __name__ == "__main__":
    main()
