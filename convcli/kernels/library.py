"""Where named kernel files live: CONVCLI_KERNEL_PATH, ~/.config/convcli/kernels, the built-in library.

The built-in library is the top-level ``kernels/`` folder of the repository;
the wheel ships it as ``convcli/_library`` and it is read through
``importlib.resources``, so an installed convcli needs no checkout.
Folders are searched in that order and the first file whose name (without
its extension) matches wins, so a user's file can stand in for a built-in.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .files import ALL_EXTS, KERNEL_EXTS

ENV_PATH = "CONVCLI_KERNEL_PATH"


def builtin_dir():
    """The built-in library: ``convcli/_library`` in a wheel, ``<repo>/kernels`` in a checkout."""
    shipped = resources.files("convcli") / "_library"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "kernels"


def user_dirs() -> list[Path]:
    """Folders from ``CONVCLI_KERNEL_PATH`` (os.pathsep separated), then the user's config folder."""
    dirs = [Path(p).expanduser() for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p.strip()]
    config = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    dirs.append(Path(config).expanduser() / "convcli" / "kernels")
    return dirs


def search_dirs() -> list:
    return [*user_dirs(), builtin_dir()]


def _kernel_files(folder) -> list:
    try:
        if not folder.is_dir():
            return []
        children = list(folder.iterdir())
    except OSError:
        return []
    files = [c for c in children if not c.name.startswith(".") and Path(c.name).suffix.lower() in KERNEL_EXTS]
    return sorted(files, key=lambda c: (c.name.lower(), c.name))


def entries() -> dict[str, object]:
    """Every named kernel file, by name; earlier folders win."""
    found: dict[str, object] = {}
    for folder in search_dirs():
        for f in _kernel_files(folder):
            found.setdefault(Path(f.name).stem, f)
    return found


def builtin_entries() -> dict[str, object]:
    """The built-in library alone, by name."""
    return {Path(f.name).stem: f for f in _kernel_files(builtin_dir())}


def find(name: str):
    """The file of the named kernel, or None."""
    if not name or any(sep in name for sep in ("/", "\\", os.sep)) or Path(name).suffix.lower() in ALL_EXTS:
        return None
    for folder in search_dirs():
        for f in _kernel_files(folder):
            if Path(f.name).stem == name:
                return f
    return None
