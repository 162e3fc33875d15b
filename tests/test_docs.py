"""The documents cannot drift from the code where the code can say what they must hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_method_reference_in_docs_api_md_is_the_declarations():
    ref = _script("api_reference")
    assert ref.documented(ref.DOC.read_text(encoding="utf-8")) == ref.builtin_reference(), (
        "docs/api.md differs from the declared methods: run .venv/bin/python scripts/api_reference.py --write")


def test_every_declared_method_is_in_the_reference():
    ref = _script("api_reference")
    text = ref.documented(ref.DOC.read_text(encoding="utf-8"))
    from p2pnode.extensions import BUILTIN_DISTRIBUTION, load

    loaded = load()
    for name, owner in loaded.methods.owners.items():
        if owner == "core" or loaded.sources.get(owner) == BUILTIN_DISTRIBUTION:
            assert f"#### `{name}`" in text, name
