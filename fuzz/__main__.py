"""The fuzz runner: ``python -m fuzz TARGET [libFuzzer flags]``.

    python -m fuzz                        list the targets
    python -m fuzz --seed                 (re)write the seed files of every corpus
    python -m fuzz wire -max_total_time=60
    python -m fuzz wire -runs=10000 -print_final_stats=1

Runs atheris (the ``fuzz`` extra) on ``targets.TARGETS[TARGET].check`` with the corpus
``fuzz/corpus/TARGET/``: it starts from the files there and writes each new input that
reaches new code into ``fuzz/findings/TARGET/`` (not checked in: copy there only the few
small ones worth keeping). A crash is written as ``crash-*`` in the current directory;
replay one with ``python -m fuzz TARGET FILE``. Unless given, ``-max_len`` is the
target's, ``-timeout`` 10 s per input and ``-rss_limit_mb`` 2048: an input slower or
bigger than that is a finding too (decoders must be bounded in time and memory).
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
FINDINGS = HERE / "findings"
DICTS = HERE / "dicts"
DICTIONARIES = {"keyfile": ("json", "keyfile"), "control": ("json", "control"), "config": ("config",)}
"""libFuzzer dictionaries (``dicts/NAME.dict``) of the targets that read text formats:
their tokens and field names, which byte mutations alone reach only by luck."""


def write_seeds() -> None:
    """Write each target's seeds as ``seed-<sha1 prefix>`` and remove the ``seed-*`` files
    the code no longer makes; ``cov-*`` and ``found-*`` files are left alone."""
    from .seeds import corpus

    for name, inputs in corpus().items():
        d = CORPUS / name
        d.mkdir(parents=True, exist_ok=True)
        names = {f"seed-{hashlib.sha1(data).hexdigest()[:12]}": data for data in inputs}
        for old in d.glob("seed-*"):
            if old.name not in names:
                old.unlink()
        for file_name, data in names.items():
            (d / file_name).write_bytes(data)
        print(f"{name}: {len(inputs)} seeds")


REPEAT_CHANCE = 0.05
MAX_REPEAT = 6000


def _mutator(atheris: Any) -> Callable[[bytes, int, int], bytes]:
    """libFuzzer's mutations, and one more: repeat a short slice of the input up to
    ``MAX_REPEAT`` times. Byte mutations almost never build an array nested 1000 deep or
    an integer of 5000 digits, and those are what broke the text decoders (docs/fuzzing.md)."""

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rnd = random.Random(seed)
        if data and rnd.random() < REPEAT_CHANCE:
            i = rnd.randrange(len(data))
            j = min(len(data), i + rnd.randint(1, 4))
            return (data[:i] + data[i:j] * rnd.randint(2, MAX_REPEAT) + data[j:])[:max_size]
        return atheris.Mutate(data, max_size)

    return mutate


def main(argv: list[str]) -> int:
    if argv[:1] == ["--seed"]:
        write_seeds()
        return 0
    with_flags = [a for a in argv if not a.startswith("-")]
    if not with_flags:
        from .targets import TARGETS

        print(__doc__)
        for t in TARGETS.values():
            print(f"  {t.name:14} {t.what}")
        return 0 if not argv else 2
    name = with_flags[0]
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    with atheris.instrument_imports(include=["protocol", "p2pnode", "fuzz"]):
        from .targets import TARGETS, prepare

        prepare()  # the modules the targets import lazily: instrumented only if imported here
    target = TARGETS.get(name)
    if target is None:
        print(f"unknown target {name!r}; targets: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    files = with_flags[1:]
    flags = [a for a in argv if a.startswith("-")]
    defaults = {"-max_len": str(target.max_len), "-timeout": "10", "-rss_limit_mb": "2048"}
    if name in DICTIONARIES and not any(f.startswith("-dict=") for f in flags):
        FINDINGS.mkdir(exist_ok=True)
        merged = FINDINGS / f"{name}.dict"  # libFuzzer takes one -dict
        merged.write_text("".join((DICTS / f"{d}.dict").read_text() for d in DICTIONARIES[name]))
        defaults["-dict"] = str(merged)
    for flag, value in defaults.items():
        if not any(f.startswith(flag + "=") for f in flags):
            flags.append(f"{flag}={value}")
    if files:  # replay these inputs
        dirs: list[str] = files
    else:
        out = FINDINGS / name
        out.mkdir(parents=True, exist_ok=True)
        dirs = [str(out), str(CORPUS / name)]  # new inputs go to the first directory
    # libFuzzer runs argv[0] again for -merge, -fork and -jobs: make it this command.
    again = f"{sys.executable} -m fuzz {name}"
    atheris.Setup([again, *flags, *dirs], target.check, custom_mutator=_mutator(atheris))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
