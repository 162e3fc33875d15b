"""A minimal PEP 517 build backend, for this example alone.

It writes the wheel of a pure-Python package with the standard library, so that
``pip install examples/endorse`` works offline with nothing but pip, even in an
environment without the ``wheel`` package (which setuptools before 70.1 needs to build a
wheel) and with ``--no-build-isolation``. Your own extension needs none of this: build it
with setuptools, hatchling or flit like any package (docs/extensions.md shows how).

It reads ``[project]`` of pyproject.toml (name, version, description, requires-python,
dependencies, optional-dependencies, entry-points) and ships the packages listed in
``[tool.tinywheel] packages``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import tomllib
import zipfile
from pathlib import Path

TAG = "py3-none-any"


def _project() -> tuple[dict, list[str]]:
    doc = tomllib.loads(Path("pyproject.toml").read_text())  # hooks run at the source root
    return doc["project"], doc["tool"]["tinywheel"]["packages"]


def _names(project: dict) -> tuple[str, str]:
    """The distribution's name as file names spell it, and its version."""
    return re.sub(r"[-_.]+", "_", project["name"]).lower(), project["version"]


def _metadata(project: dict) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}",
             f"Summary: {project.get('description', '')}"]
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {d}" for d in project.get("dependencies", [])]
    for extra, deps in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {d}; extra == "{extra}"' for d in deps]
    return "\n".join(lines) + "\n"


def _entry_points(project: dict) -> str:
    out = []
    for group, points in project.get("entry-points", {}).items():
        out.append(f"[{group}]")
        out += [f"{name} = {ref}" for name, ref in points.items()]
        out.append("")
    return "\n".join(out)


def _files(packages: list[str]) -> list[Path]:
    return sorted(p for pkg in packages for p in Path(pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _wheel(wheel_directory: str, contents: dict[str, bytes]) -> str:
    project, _ = _project()
    name, version = _names(project)
    info = f"{name}-{version}.dist-info"
    contents = dict(contents)
    contents[f"{info}/METADATA"] = _metadata(project).encode()
    contents[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: tinywheel\nRoot-Is-Purelib: true\n"
                                 f"Tag: {TAG}\n").encode()
    contents[f"{info}/entry_points.txt"] = _entry_points(project).encode()
    record = [f"{path},sha256={_digest(data)},{len(data)}" for path, data in contents.items()]
    contents[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    filename = f"{name}-{version}-{TAG}.whl"
    with zipfile.ZipFile(Path(wheel_directory) / filename, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in contents.items():
            z.writestr(path, data)
    return filename


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


# -- the PEP 517 and PEP 660 hooks ----------------------------------------------------------------


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _, packages = _project()
    return _wheel(wheel_directory, {p.as_posix(): p.read_bytes() for p in _files(packages)})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """A wheel holding one .pth file that puts this source tree on sys.path."""
    project, _ = _project()
    return _wheel(wheel_directory, {f"_{_names(project)[0]}_editable.pth": f"{Path.cwd()}\n".encode()})


def build_sdist(sdist_directory, config_settings=None):
    project, packages = _project()
    name, version = _names(project)
    base = f"{name}-{version}"
    files = [Path("pyproject.toml"), Path(__file__).relative_to(Path.cwd()), *_files(packages)]
    with tarfile.open(Path(sdist_directory) / f"{base}.tar.gz", "w:gz") as tar:
        for path in files:
            tar.add(path, f"{base}/{path.as_posix()}")
        pkg_info = _metadata(project).encode()
        member = tarfile.TarInfo(f"{base}/PKG-INFO")
        member.size = len(pkg_info)
        tar.addfile(member, io.BytesIO(pkg_info))
    return f"{base}.tar.gz"
