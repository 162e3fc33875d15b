"""Every decoder of protocol/, on any bytes, returns a value or raises its documented
error, and what it decoded encodes back to the same bytes (issue 9). The checks are the
fuzz targets' own (fuzz/targets.py), run here by Hypothesis on arbitrary bytes and on
mutations of the checked-in corpus; the fuzzer runs them far longer (docs/fuzzing.md).
The other direction, ``decode(encode(x)) == x``, is each decoder's round-trip test
(test_codec, test_envelope, test_entry, test_fork, test_wire, test_contract, test_money).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from fuzz.strategies import inputs
from fuzz.targets import TARGETS

PROTOCOL_TARGETS = ["codec", "envelope", "entry", "entry_payload", "fork", "gossip", "wire", "sync", "agree",
                    "offer", "loan", "money", "jsonform", "record"]
EXAMPLES = {"loan": 60, "offer": 100, "gossip": 100}  # the slower targets (each signs or verifies a few times)


@pytest.mark.parametrize("name", PROTOCOL_TARGETS)
def test_decoder_returns_a_value_or_its_documented_error(name):
    check = TARGETS[name].check

    @settings(max_examples=EXAMPLES.get(name, 150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(inputs(name))
    def run(data: bytes) -> None:
        check(data)

    run()


# -- findings: each input once made its decoder raise something else (docs/fuzzing.md) ----


def test_a_json_body_with_an_integer_too_long_to_read_is_unencodable():
    """``ledger append --body 111...1`` (5000 digits) was a ValueError traceback: Python
    refuses to read integers of more than 4300 digits, and that is no JSONDecodeError."""
    from protocol import jsonform
    from protocol.errors import EncodeError

    with pytest.raises(EncodeError, match="more than 4300 digits") as e:
        jsonform.parse("1" * 5000)
    assert e.value.code == "unencodable"


@pytest.mark.parametrize("data, says", [
    (b"\x80", "role"),  # an empty map: was KeyError
    (b"\x93\x01\x02\x03", "map"),  # a list: was TypeError
])
def test_a_damaged_proposal_record_is_a_record_error_naming_the_proposal(data, says):
    from protocol.lending.agree import Record, RecordError

    with pytest.raises(RecordError, match=says) as e:
        Record.decode(b"\xab" * 32, data)
    assert e.value.code == "bad_record" and "abababab" in e.value.message


def test_a_record_whose_contract_is_not_a_contract_does_not_resume():
    from protocol.lending.agree import IN, PENDING, Record, RecordError, conversation

    record = Record(b"\x01" * 32, IN, PENDING, b"\x92\xc4\x01x\x90", "", "", 0)  # an envelope of a non-contract
    with pytest.raises(RecordError, match="damaged"):
        conversation(Record.decode(record.loan, record.encode()), sign=lambda p: p)
