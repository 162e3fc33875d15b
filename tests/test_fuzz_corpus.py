"""The checked-in fuzz corpus (fuzz/corpus/TARGET/) still passes its target: every file,
the fuzzer's findings among them, so that a decoder bug once fixed stays fixed; and the
corpus holds the seeds the code makes today (fuzz/seeds.py), so it cannot go stale
silently when an encoding changes."""

from __future__ import annotations

import hashlib

import pytest

from fuzz.seeds import corpus
from fuzz.strategies import CORPUS, corpus_files
from fuzz.targets import TARGETS

MAX_FILES, MAX_FILE_SIZE = 80, 16 * 1024  # a corpus stays small: docs/fuzzing.md


def test_every_target_has_a_corpus_and_every_corpus_a_target():
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_corpus_file_passes_its_target(name):
    files = corpus_files(name)
    assert 0 < len(files) <= MAX_FILES
    for f in files:
        data = f.read_bytes()
        assert len(data) <= MAX_FILE_SIZE, f
        TARGETS[name].check(data)


def test_the_corpus_holds_the_seeds_the_code_makes_now():
    """An encoding, a method or a setting changed: the seeds change with it (one command)."""
    missing, stale = [], []
    for name, seeds in corpus().items():
        made = {f"seed-{hashlib.sha1(s).hexdigest()[:12]}" for s in seeds}
        have = {f.name for f in corpus_files(name) if f.name.startswith("seed-")}
        missing += [f"{name}/{n}" for n in sorted(made - have)]
        stale += [f"{name}/{n}" for n in sorted(have - made)]
    assert (missing, stale) == ([], []), "run .venv/bin/python -m fuzz --seed and commit fuzz/corpus"
