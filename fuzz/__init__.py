"""Coverage-guided fuzzing of every decoder of p2pnode (issue 9).

- ``targets.py``: one target per decoder, ``check(data)``: the property every decoder
  keeps for any input bytes: it returns a value or raises its documented error, never
  another exception; where there is an encoder, the value encodes back to the same bytes.
  Plain Python: ``make test`` runs the targets through Hypothesis and replays the corpus
  (tests/test_fuzz_corpus.py, tests/protocol/test_decoders.py) without atheris.
- ``seeds.py``: valid inputs made by the code itself (real signed entries, offers,
  contracts, key files, requests), written into ``corpus/<target>/`` by
  ``python -m fuzz --seed``.
- ``__main__.py``: the runner, ``python -m fuzz TARGET [libFuzzer flags]`` (needs the
  ``fuzz`` extra: atheris).

docs/fuzzing.md says how to run it, and what it found.
"""
