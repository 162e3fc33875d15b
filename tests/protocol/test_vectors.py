"""docs/protocol.md cannot drift from protocol/: every test vector in it is recomputed here,
and the block must be exactly what scripts/make_vectors.py prints."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

from protocol import codec, keys
from protocol.chain import validate_chain
from protocol.codec import MAX_DEPTH
from protocol.entry import make_entry, parse_entry
from protocol.envelope import MAX_ENVELOPE_SIZE, MAX_SIGNATURES, SIGNING_PREFIX, open_envelope, seal
from protocol.errors import ChainError, DecodeError, ProtocolError
from protocol.fork import MAX_FORK_PROOF_SIZE, ForkProof
from protocol.jsonform import from_json
from protocol.keys import SigningKey, b58decode, peer_id, public_key_from_peer_id, verify

from refimpl import ref_encode

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
MARKER = "<!-- test-vectors -->"


def _block(marker: str, lang: str) -> str:
    lines = DOC.split("\n")
    i = lines.index(marker)
    assert lines[i + 1] == "```" + lang, f"{marker} must be followed by a ```{lang} line"
    end = lines.index("```", i + 2)
    return "\n".join(lines[i + 2:end])


VECTORS_TEXT = _block(MARKER, "json")
V = json.loads(VECTORS_TEXT)


def _generator():
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts" / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_doc_block_is_the_generators_output():
    gen = _generator()
    assert json.loads(gen.render(gen.vectors())) == V, "run: .venv/bin/python scripts/make_vectors.py --write"
    assert gen.render(gen.vectors()) == VECTORS_TEXT, "run: .venv/bin/python scripts/make_vectors.py --write"


def test_documented_constants():
    assert V["signing_prefix"] == SIGNING_PREFIX.hex() == b"p2plend/1\x00".hex()
    assert V["protocol"] == "p2plend/1"
    assert (MAX_ENVELOPE_SIZE, MAX_FORK_PROOF_SIZE, MAX_DEPTH, MAX_SIGNATURES) == (131072, 262160, 32, 8)
    for text in ("**131 072**", "262 160", "**32**", "**1 to 8**", "70 32 70 6c 65 6e 64 2f 31 00"):
        assert text in DOC


def test_documented_small_order_list_is_the_codes():
    section = DOC[DOC.index("### Verification"):DOC.index("### Peer IDs")]
    listed = {bytes.fromhex(h) for h in re.findall(r"^\s+([0-9a-f]{64})\s", section, re.M)}
    assert listed == set(keys._SMALL_ORDER)


def test_documented_error_codes_are_the_codes():
    section = DOC[DOC.index("## Error codes"):DOC.index("## Test vectors")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    used = set()
    for path in (ROOT / "protocol").rglob("*.py"):
        used |= set(re.findall(r'code\s*=\s*"([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert documented == used


def test_annotated_envelope():
    text = _block("<!-- annotated-envelope -->", "")
    hexed = "".join(re.split(r"\s{2,}", line.strip())[0].replace(" ", "") for line in text.split("\n"))
    assert hexed == V["note_entry"]["envelope"]


# ------------------------------------------------------------------ identity and encodings


def test_identity():
    v = V["identity"]
    key = SigningKey.from_seed(bytes.fromhex(v["seed"]))
    assert key.public_key.hex() == v["public_key"]
    assert key.peer_id == v["peer_id"] == peer_id(key.public_key)
    assert b58decode(v["peer_id"]).hex() == v["peer_id_bytes"] == "002408011220" + v["public_key"]
    assert public_key_from_peer_id(v["peer_id"]).hex() == v["public_key"]


@pytest.mark.parametrize("vec", V["encodings"], ids=lambda v: v["hex"][:24] or "empty")
def test_encoding(vec):
    value = from_json(vec["value"])
    raw = bytes.fromhex(vec["hex"])
    assert codec.encode(value) == raw
    assert ref_encode(value) == raw
    assert codec.decode(raw) == value


@pytest.mark.parametrize("vec", V["rejects"], ids=lambda v: v["why"])
def test_reject(vec):
    with pytest.raises(DecodeError) as info:
        codec.decode(bytes.fromhex(vec["hex"]), **({"max_size": vec["max_size"]} if "max_size" in vec else {}))
    assert info.value.code == vec["code"]


# ------------------------------------------------------------------ entries and envelopes


def check_entry_vector(v: dict) -> None:
    key = SigningKey.from_seed(bytes.fromhex(v["seed"]))
    fields = from_json(v["fields"])
    payload = codec.encode(fields)
    assert payload.hex() == v["payload"]
    assert (SIGNING_PREFIX + payload).hex() == v["signing_message"]
    assert hashlib.sha256(payload).hexdigest() == v["id"]
    assert key.public_key.hex() == v["public_key"] == fields["author"].hex()
    sig = bytes.fromhex(v["signature"])
    assert key.sign(SIGNING_PREFIX + payload) == sig
    assert verify(key.public_key, sig, SIGNING_PREFIX + payload)
    envelope = codec.encode([payload, [[key.public_key, sig]]])
    assert envelope.hex() == v["envelope"]
    entry = parse_entry(envelope)
    assert entry.document() == fields
    assert entry.id.hex() == v["id"]
    made = make_entry(key, seq=fields["seq"], prev=fields["prev"], ts=fields["ts"], kind=fields["kind"], body=fields["body"])
    assert made.envelope == envelope


def test_note_entry():
    check_entry_vector(V["note_entry"])
    assert V["note_entry"]["fields"]["kind"] == "note"


def test_chain():
    entries = V["chain"]["entries"]
    for v in entries:
        check_entry_vector(v)
    genesis, note = entries
    assert genesis["fields"]["seq"] == 1 and genesis["fields"]["prev"] == {"$bin": "00" * 32}
    assert note["fields"]["seq"] == 2 and note["fields"]["prev"] == {"$bin": genesis["id"]}
    assert note == V["note_entry"]
    author = public_key_from_peer_id(V["chain"]["author"])
    got = list(validate_chain([bytes.fromhex(v["envelope"]) for v in entries], author=author))
    assert [e.id.hex() for e in got] == [v["id"] for v in entries]


def test_two_signer_envelope():
    v = V["two_signer_envelope"]
    ks = [SigningKey.from_seed(bytes.fromhex(s)) for s in v["seeds"]]
    doc = from_json(v["document"])
    env = seal(doc, *ks)
    assert env.payload.hex() == v["payload"]
    assert env.id.hex() == v["id"] == hashlib.sha256(env.payload).hexdigest()
    assert [[pk.hex(), sig.hex()] for pk, sig in env.signatures] == v["signatures"]
    assert [s[0] for s in v["signatures"]] == sorted(k.public_key.hex() for k in ks)
    assert env.raw.hex() == v["envelope"]
    opened = open_envelope(bytes.fromhex(v["envelope"]))
    assert opened.document == doc and opened.id == env.id


@pytest.mark.parametrize("vec", V["bad_envelopes"], ids=lambda v: v["why"])
def test_bad_envelope(vec):
    with pytest.raises(ProtocolError) as info:
        open_envelope(bytes.fromhex(vec["hex"]))
    assert info.value.code == vec["code"]


@pytest.mark.parametrize("vec", V["bad_entries"], ids=lambda v: v["why"])
def test_bad_entry(vec):
    raw = bytes.fromhex(vec["hex"])
    open_envelope(raw)  # a valid envelope...
    with pytest.raises(ProtocolError) as info:
        parse_entry(raw)  # ...but not a valid entry
    assert info.value.code == vec["code"]


@pytest.mark.parametrize("vec", V["chain_breaks"], ids=lambda v: v["why"])
def test_chain_break(vec):
    author = public_key_from_peer_id(V["chain"]["author"])
    with pytest.raises(ChainError) as info:
        list(validate_chain([bytes.fromhex(h) for h in vec["envelopes"]], author=author))
    assert (info.value.code, info.value.seq, info.value.author) == (vec["code"], vec["seq"], author)


def test_fork_proof():
    v = V["fork_proof"]
    proof = ForkProof.decode(bytes.fromhex(v["proof"]))
    assert proof.a.id.hex() == v["a_id"] and proof.b.id.hex() == v["b_id"]
    assert v["a_id"] < v["b_id"]
    assert proof.a.envelope.hex() == v["a"] and proof.b.envelope.hex() == v["b"]
    assert peer_id(proof.author) == v["author"] and proof.seq == v["seq"]
    a, b = parse_entry(bytes.fromhex(v["a"])), parse_entry(bytes.fromhex(v["b"]))
    assert ForkProof.of(b, a).encode().hex() == v["proof"]
    assert codec.encode([a.envelope, b.envelope]).hex() == v["proof"]
    assert v["b"] == V["note_entry"]["envelope"] or v["a"] == V["note_entry"]["envelope"]


def test_loan_vector():
    from datetime import date

    from protocol.lending.contract import check_contract, contract_schedule, open_agreement, open_receipt
    from protocol.lending.loanstate import SignedReceipt, loan_state

    L = V["loan"]
    env = open_agreement(bytes.fromhex(L["agreement"]))
    assert env.id.hex() == L["loan_id"]
    assert env.document == from_json(L["contract"]) == check_contract(env.document)
    rows = [{"due": r.due.isoformat(), "payment": r.payment, "interest": r.interest, "principal": r.principal,
             "balance": r.balance} for r in contract_schedule(env.document)]
    assert rows == L["schedule"]
    receipts = [open_receipt(bytes.fromhex(r["envelope"])) for r in L["receipts"]]
    assert [r.id.hex() for r in receipts] == [r["id"] for r in L["receipts"]]
    st = loan_state(env.id, env.document, [SignedReceipt(r.id, r.document, r.signers[0]) for r in receipts], [], [],
                    date(2026, 5, 10))
    want = L["state_on_2026_05_10"]
    assert {k: getattr(st, k) for k in want} == want


def test_sale_vector():
    from datetime import date

    from protocol.lending.contract import open_agreement, open_receipt, open_transfer
    from protocol.lending.loanstate import SignedReceipt, SignedTransfer, loan_state
    from protocol.lending.market import listing_of, sale_fault, yield_to_maturity
    from protocol.lending.portfolio import expected_flows

    S, L = V["sale"], V["loan"]
    buyer = SigningKey.from_seed(bytes.fromhex(S["buyer_seed"]))
    listing = listing_of(open_envelope(bytes.fromhex(S["listing_envelope"])))
    assert listing.id.hex() == S["listing_id"] and open_envelope(listing.envelope).document == from_json(S["listing"])
    t = open_transfer(bytes.fromhex(S["transfer_envelope"]))
    assert t.id.hex() == S["transfer_id"] and t.document == from_json(S["transfer"])
    assert t.document["to"] == buyer.public_key and sale_fault(t.document, listing) is None
    agreement = open_agreement(bytes.fromhex(L["agreement"]))
    receipts = [open_receipt(bytes.fromhex(r["envelope"])) for r in L["receipts"][:2]]
    signed = [SignedReceipt(r.id, r.document, r.signers[0]) for r in receipts]
    day = date(2026, 3, 15)
    before = loan_state(agreement.id, agreement.document, signed, [], [], day)
    assert yield_to_maturity(expected_flows(before, day), listing.price, day) == S["ytm_bp_on_2026_03_15"]
    after = loan_state(agreement.id, agreement.document, signed,
                       [SignedTransfer(t.id, t.document, frozenset(t.signers))], [], day)
    assert after.holder == buyer.public_key and after.transfers == (t.id,)


def test_amendment_vector():
    from datetime import date

    from protocol.lending.amendment import amendment_schedule, check_amendment, open_amendment
    from protocol.lending.contract import open_agreement, open_receipt
    from protocol.lending.loanstate import SignedAmendment, SignedReceipt, loan_state

    L, A = V["loan"], V["amendment"]
    agreement = open_agreement(bytes.fromhex(L["agreement"]))
    lender, borrower = (SigningKey.from_seed(bytes.fromhex(L[k])) for k in ("lender_seed", "borrower_seed"))
    doc = from_json(A["document"])
    assert check_amendment(doc) == doc and doc["loan"].hex() == L["loan_id"]
    assert (doc["borrower"], doc["holder"]) == (borrower.public_key, lender.public_key)
    assert codec.encode(doc).hex() == A["payload"] and hashlib.sha256(codec.encode(doc)).hexdigest() == A["id"]
    env = open_amendment(bytes.fromhex(A["envelope"]))
    assert env.document == doc and env.id.hex() == A["id"] and set(env.signers) == {lender.public_key,
                                                                                    borrower.public_key}
    assert seal(doc, borrower, lender).raw.hex() == A["envelope"]
    rows = [{"due": r.due.isoformat(), "payment": r.payment, "interest": r.interest, "principal": r.principal,
             "balance": r.balance} for r in amendment_schedule(doc, A["outstanding_principal"])]
    assert rows == A["schedule"] and sum(r["principal"] for r in rows) == A["outstanding_principal"]
    receipts = [open_receipt(bytes.fromhex(r["envelope"])) for r in L["receipts"]]
    st = loan_state(agreement.id, agreement.document, [SignedReceipt(r.id, r.document, r.signers[0]) for r in receipts],
                    [], [], date(2026, 5, 10), [SignedAmendment(env.id, env.document, frozenset(env.signers))])
    assert [a.id.hex() for a in st.amendments] == [A["id"]]
    assert st.amendments[0].outstanding_principal == A["outstanding_principal"]
    want = A["state_on_2026_05_10"]
    assert {k: getattr(st, k) for k in want} == want
