#!/usr/bin/env python3
"""The method reference of docs/api.md, made from the declarations alone: the core's
methods (p2pnode/control/core.py) and those of the extensions built into p2pnode (found
through their entry points, like any extension). One declaration drives the server's
parameter checks, the CLI's calls and this reference; tests/test_docs.py fails when the
document and the declarations differ.

    .venv/bin/python scripts/api_reference.py            # print the reference
    .venv/bin/python scripts/api_reference.py --write    # put it into docs/api.md
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from p2pnode.control.core import CORE_METHODS  # noqa: E402
from p2pnode.control.methods import MethodTable, reference  # noqa: E402
from p2pnode.extensions import BUILTIN_DISTRIBUTION, load  # noqa: E402

DOC = ROOT / "docs" / "api.md"
BEGIN = "<!-- method reference: made by scripts/api_reference.py from the declarations; do not edit by hand -->"
END = "<!-- end of the method reference -->"


def builtin_reference() -> str:
    loaded = load()
    table = MethodTable()
    table.declare_all(CORE_METHODS, "core")
    for ext in loaded.extensions:
        if loaded.sources.get(ext.name) == BUILTIN_DISTRIBUTION:
            table.declare_all(ext.methods, ext.name)
    return reference(table)


def documented(text: str) -> str:
    """The reference part of docs/api.md's text."""
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n") + "\n"


def main() -> None:
    ref = builtin_reference()
    if "--write" not in sys.argv[1:]:
        sys.stdout.write(ref)
        return
    text = DOC.read_text(encoding="utf-8")
    head, tail = text[:text.index(BEGIN) + len(BEGIN)], text[text.index(END):]
    DOC.write_text(f"{head}\n\n{ref}\n{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
