"""Hypothesis strategies over a target's inputs, for the tests (atheris needs none).

``inputs(name)`` draws arbitrary bytes or, more often, a file of the target's checked-in
corpus with a few byte-level mutations (flip, insert, delete, truncate, splice, and
repeat a short slice thousands of times): the same kind of step the fuzz runner takes,
started from valid encodings, so that a test run reaches the decoders' field checks and
not only their first refusal.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent / "corpus"


def corpus_files(name: str) -> list[Path]:
    """The checked-in inputs of target ``name``, sorted (a missing directory is none)."""
    d = CORPUS / name
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "splice", "repeat")))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xC0, 0xC1, 0xCC, 0xD9, 0xDC, 0xDE, 0xFF)))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[i:]
        elif op == "repeat" and data:  # deep nesting, long numbers: as the fuzz runner's mutator
            j = i + draw(st.integers(1, 4))
            data[i:j] = data[i:j] * draw(st.sampled_from((2, 100, 1500, 3000, 6000)))
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            j = draw(st.integers(0, len(other)))
            data[i:] = other[j:]
    return bytes(data)


def inputs(name: str, *, max_size: int = 512) -> st.SearchStrategy[bytes]:
    seeds = [p.read_bytes() for p in corpus_files(name)]
    raw = st.binary(max_size=max_size)
    return st.one_of(raw, _mutated(seeds), _mutated(seeds)) if seeds else raw
