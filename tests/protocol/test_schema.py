"""protocol/schema.py: ``check_fields`` answers in one pass when a map has as many fields
as required (its fast path), and ``text`` remembers the texts that matched its pattern;
neither may ever answer otherwise than the plain rules. Each is checked here against a
reference written from the module's docstring: the first missing, ill-typed or unknown
field, in the order the schema lists them, and then the map's own order."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import schema
from protocol.entry import ENTRY_FIELDS, KIND_PATTERN, MAX_KIND_LEN
from protocol.errors import SchemaError
from protocol.schema import anything, binary, check_fields, const, text, uint

SETTINGS = settings(max_examples=400, deadline=None)


def reference(obj: Any, required: dict, optional: dict | None, what: str) -> str | None:
    """The message of the error ``check_fields`` must raise, or None: the plain rules."""
    if type(obj) is not dict:
        return f"{what} is not a map"
    optional = optional or {}
    for name, ok in required.items():
        if name not in obj:
            return f"{what} lacks field {name!r}"
        if not ok(obj[name]):
            return f"{what} field {name!r} is invalid"
    for name in obj:
        if name in required:
            continue
        if name not in optional:
            return f"{what} has unknown field {name!r}"
        if not optional[name](obj[name]):
            return f"{what} field {name!r} is invalid"
    return None


def outcome(obj: Any, required: dict, optional: dict | None = None) -> str | None:
    try:
        check_fields(obj, required, optional, what="doc")
    except SchemaError as e:
        return e.message
    return None


values = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**64), st.binary(max_size=40),
                   st.text(max_size=12), st.sampled_from(["entry", "note", "a.b", "Note", "x" * 65]),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
names = st.sampled_from(["type", "author", "seq", "prev", "ts", "kind", "body", "extra", "a", "b"])
OPTIONAL = {"a": uint(1, 9), "b": text(3, r"[A-Z]{3}")}


def valid_entry_fields(draw: Any) -> dict:
    return {"type": "entry", "author": draw(st.binary(min_size=32, max_size=32)), "seq": draw(st.integers(1, 2**63 - 1)),
            "prev": draw(st.binary(min_size=32, max_size=32)), "ts": draw(st.integers(0, 2**63 - 1)),
            "kind": draw(st.sampled_from(["note", "genesis", "lending.offer", "x_1.y-2"])), "body": draw(values)}


@st.composite
def entry_like(draw: Any) -> Any:
    """Maps near an entry's fields: valid ones, with a field changed, dropped or added."""
    doc = valid_entry_fields(draw)
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["set", "drop", "add"]))
        name = draw(names)
        if how == "drop":
            doc.pop(name, None)
        else:
            doc[name] = draw(values)
    if draw(st.booleans()):  # (any field order: a map from elsewhere than the codec)
        items = list(doc.items())
        doc = dict(draw(st.permutations(items)))
    return doc if draw(st.integers(0, 20)) else draw(st.sampled_from([None, [], "entry", 7]))


@SETTINGS
@given(entry_like())
def test_check_fields_finds_the_same_first_fault_as_the_plain_rules(doc):
    assert outcome(doc, ENTRY_FIELDS) == reference(doc, ENTRY_FIELDS, None, "doc")


@SETTINGS
@given(entry_like(), st.booleans())
def test_check_fields_with_optional_fields_finds_the_same_first_fault(doc, empty_optional):
    optional = {} if empty_optional else OPTIONAL
    assert outcome(doc, ENTRY_FIELDS, optional) == reference(doc, ENTRY_FIELDS, optional, "doc")


def test_the_one_pass_answers_yes_only_with_every_required_field():
    """As many fields as required, but one missing (another in its place): refused by name."""
    required = {"a": anything, "b": anything}
    assert outcome({"a": 1, "c": 2}, required) == "doc lacks field 'b'"
    assert outcome({"a": 1, "b": None}, required) is None  # (a field whose value is None is there)
    assert outcome({"b": 1, "a": 2}, {"a": uint(), "b": binary(1)}) == "doc field 'b' is invalid"
    assert outcome({"type": "entry"}, {"type": const("entry")}) is None


kinds = st.one_of(st.from_regex(KIND_PATTERN, fullmatch=True), st.text(max_size=70),
                  st.sampled_from(["note", "Note", "note.", "a..b", "a.b-c", "a" * 64, "a" * 65, "é"]))


@SETTINGS
@given(st.lists(kinds, max_size=30))
def test_text_remembers_only_what_its_pattern_matched(seen):
    """A remembered match answers as the regex does, before and after the memory fills
    and is cleared, for any text in any order (repeats included)."""
    check = text(MAX_KIND_LEN, KIND_PATTERN)
    rx = re.compile(KIND_PATTERN)
    for v in seen + seen:
        assert check(v) == (len(v) <= MAX_KIND_LEN and rx.fullmatch(v) is not None)


def test_texts_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(schema, "MATCHED_KEPT", 3)
    check = text(8, r"[a-z]+")
    for i in range(20):
        assert check("a" * (i % 8 + 1))
        assert not check("A" * (i % 8 + 1))
    cell = next(c.cell_contents for c in check.__closure__ if isinstance(c.cell_contents, set))
    assert len(cell) <= 3


@pytest.mark.parametrize("bad", [1, None, b"note", "no te", "n" * 65])
def test_a_text_check_refuses_what_is_not_a_matching_text(bad):
    assert not text(MAX_KIND_LEN, KIND_PATTERN)(bad)
