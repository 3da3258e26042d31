"""What the library offers: the table behind ``convcli kernels list``, default dimensions, name completion."""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from . import files, generators, library
from .spec import classify, parse_named


def catalog() -> list[dict]:
    """Every named kernel: families, built-in files and the user's files, sorted by name.

    Each row holds ``name``, ``kind`` (family | library | user), ``dimensions``,
    ``parameters`` (name -> default, ``None`` when required), ``aliases``,
    ``description``, ``range_default``, ``combine`` and, for files, ``source``.
    A user file that cannot be read is listed with the reason as its description.
    """
    rows: dict[str, dict] = {}
    for fam in generators.FAMILIES.values():
        rows[fam.name] = {
            "name": fam.name,
            "kind": "family",
            "dimensions": list(fam.dims),
            "parameters": {p.name: _default(p) for p in fam.params},
            "signature": fam.signature(),
            "aliases": list(fam.aliases),
            "description": fam.description,
            "range_default": fam.range_default,
            "combine": fam.combine,
        }
    builtin = {str(e) for e in library.builtin_entries().values()}
    for name, entry in library.entries().items():
        kind = "library" if str(entry) in builtin else "user"
        row = {"name": name, "kind": kind, "dimensions": [], "parameters": {}, "signature": "", "aliases": [],
               "description": "", "range_default": "clip", "combine": "single", "source": str(entry)}
        try:
            defn = files.read_definition(entry, name=name)
            row.update(dimensions=list(defn.dimensions), description=defn.description,
                       range_default=defn.range_default, combine=defn.combine)
        except UsageError as exc:
            row["description"] = f"unreadable: {exc.message}"
        rows[name] = row  # a user's file stands in for a family of the same name
    return [rows[n] for n in sorted(rows)]


def _default(p: generators.Param):
    if p.default is generators.REQUIRED:
        return None
    return (p.placeholder or "auto") if p.default is None else p.default


def natural_ndims(spec: str) -> tuple[int, ...]:
    """The input dimensions a spec makes sense for, judged without an input (for ``kernels show``)."""
    kind = classify(spec)
    s = spec.strip()
    if kind == "inline":
        depth = len(s) - len(s.lstrip("["))
        return (min(max(depth, 1), 3),)
    if kind == "imagemagick":
        return (2,)
    if kind == "ir":
        return (1,)
    if kind == "file":
        path = Path(s[5:] if s.startswith("file:") else s).expanduser()
        if path.suffix.lower() in files.AUDIO_EXTS:
            return (1,)
        return files.read_definition(path, subject=str(path)).dimensions or (2,)
    parsed = parse_named(s)
    name = parsed.name
    if len(parsed.positional) == 1 and library.find(f"{name}-{parsed.positional[0]}") is not None:
        name = f"{name}-{parsed.positional[0]}"
    entry = library.find(name)
    if entry is not None:
        return files.read_definition(entry, name=name).dimensions
    fam = generators.lookup(name)
    return fam.dims if fam is not None else (1, 2, 3)


def default_ndim(spec: str) -> int:
    """2 (an image) when the spec makes sense there, else the first dimension it makes sense for."""
    dims = natural_ndims(spec)
    return 2 if 2 in dims else dims[0]


def complete(incomplete: str) -> list[str]:
    """Kernel names (and aliases) starting with ``incomplete``, for shell completion."""
    names = {*library.entries(), *generators.FAMILIES, *generators.ALIASES}
    return sorted(n for n in names if n.startswith(incomplete))
