"""Kernel file formats: .npy, text/CSV, JSON, libvips .mat, SoX FIR coefficients (audio impulse responses: :mod:`.impulse`).

Every reader returns a :class:`Definition`: the weights (one list per
dimension for library files written in sections, or one list of any
dimension for a plain file) and what the file declares about them.

The text format, shared by the ``kernels/`` library and by users::

    # description: Sobel derivative along x, smoothed with [1, 2, 1] across it
    # sum: 0
    # symmetry: antisymmetric
    # range: offset

    ## 2d
    -1  0  1
    -2  0  2
    -1  0  1

Numbers are separated by spaces, tabs or commas; ``#`` starts a comment; a
blank line separates the 2D slices of a 3D kernel.  ``# key: value`` lines
before the first number are metadata.  ``## 1d`` / ``## 2d`` / ``## 3d`` lines
start a section holding the weights for inputs of that dimension; several
sections of one dimension are several kernels whose responses are combined
(``# combine: magnitude`` or ``max``).  A file without sections is one kernel.
"""
from __future__ import annotations

import io
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import KernelMismatch, UsageError
from ..io.samples import RANGE_MODES
from .kernel import COMBINES, MAX_WEIGHTS, check_weights, fit_ndim

TEXT_EXTS = (".txt", ".csv", ".tsv", ".kernel", ".kern")
SOX_EXTS = (".fir", ".coef", ".coefs", ".coeffs")
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".au")
KERNEL_EXTS = (".npy", ".json", ".mat") + TEXT_EXTS + SOX_EXTS
ALL_EXTS = KERNEL_EXTS + AUDIO_EXTS

SYMMETRIES = ("symmetric", "antisymmetric", "none")
MAX_FILE_BYTES = 64 << 20  # a kernel file larger than this is not a kernel
# Memory a weight costs from its file to the result: float64 copies (parsed, the kernel's,
# the engine's) and, for a kernel as large as the input or larger, the FFT's padded transforms.
BYTES_PER_WEIGHT = 96
# Text read line by line (comments or sections among the numbers, JSON, ...) costs ~100 bytes
# of Python objects a number; larger kernels must be numbers only, read a block at a time.
MAX_ANNOTATED_BYTES = 1 << 20
_BLOCK_CHARS = 1 << 20  # text parsed at once: a few ms, so a signal waits no longer
_SPLIT = re.compile(r"[\s,;]+")
# A weight in a text file: a plain decimal number (no '1_000', 'nan', 'inf', '0x10').
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_SECTION = re.compile(r"^##\s*([123])\s*d\b(.*)$", re.IGNORECASE)
_META = re.compile(r"^#\s*([A-Za-z][A-Za-z_ -]*?)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class KernelBudget:
    """How large a kernel may be: its file's bytes and its weights, within a memory budget.

    ``KernelBudget()`` is the absolute limit (64 MiB, 2^25 weights);
    :meth:`within` lowers both to what a memory budget allows: a quarter of
    it for the file (its bytes and their text are held while parsing), and
    :data:`BYTES_PER_WEIGHT` per weight.
    """

    max_bytes: int = MAX_FILE_BYTES
    max_weights: int = MAX_WEIGHTS
    memory_budget: int | None = None  # the budget that lowered them, for the messages

    @classmethod
    def within(cls, memory_budget: int) -> "KernelBudget":
        return cls(min(MAX_FILE_BYTES, memory_budget // 4), min(MAX_WEIGHTS, memory_budget // BYTES_PER_WEIGHT),
                   memory_budget)

    def _lowered(self, limit: int, absolute: int) -> str | None:
        """Why ``limit`` is below ``absolute``: the budget, named; None if it is not."""
        if limit >= absolute or self.memory_budget is None:
            return None
        from ..io.limits import human

        return f"the most the memory budget of {human(self.memory_budget)} allows; raise it with --memory-budget"

    def check_bytes(self, size: int, subject: str) -> None:
        if size > self.max_bytes:
            why = self._lowered(self.max_bytes, MAX_FILE_BYTES)
            raise UsageError(f"{size:,} bytes is too large for a kernel file (at most {self.max_bytes:,}"
                             f"{': ' + why if why else ''})", subject=subject)

    def check_weights(self, count: int, subject: str, *, verb: str = "has") -> None:
        if count > self.max_weights:
            why = self._lowered(self.max_weights, MAX_WEIGHTS)
            raise UsageError(f"the kernel {verb} {count:,} weights, more than {self.max_weights:,}"
                             f"{f' ({why})' if why else ''}", subject=subject)


@dataclass
class Definition:
    """A kernel file's weights and declarations.

    ``variants`` maps an input dimension to its weight arrays; the key
    ``None`` holds weights of a file without sections, fitted to any input
    whose dimension they match.
    """

    name: str
    source: str
    variants: dict[int | None, list[np.ndarray]] = field(default_factory=dict)
    description: str = ""
    sum: float | None = None
    symmetry: str | None = None
    range_default: str = "clip"
    combine: str = "single"
    matrix: bool = False  # rows and columns of text: a single column is a 1D kernel too

    @property
    def dimensions(self) -> tuple[int, ...]:
        """The input dimensions this definition serves."""
        if None in self.variants:
            return tuple(sorted(set.intersection(*(fit_dims(w, self.matrix) for w in self.variants[None]))))
        return tuple(sorted(k for k in self.variants if k is not None))

    def weights_for(self, ndim: int, *, subject: str) -> list[np.ndarray]:
        """The weight arrays for an input with ``ndim`` spatial axes, or a clear refusal."""
        if ndim in self.variants:
            return list(self.variants[ndim])
        if None in self.variants:
            out = []
            for w in self.variants[None]:
                if self.matrix and ndim == 1 and w.ndim == 2 and w.shape[1] == 1:
                    w = w[:, 0]  # one coefficient per line, as SoX writes FIR files
                out.append(fit_ndim(w, ndim, subject=subject))
            return out
        dims = ", ".join(f"{d}D" for d in self.dimensions)
        raise KernelMismatch(
            f"{self.name} is defined for {dims} inputs only, and this input is {ndim}D",
            subject=subject,
        )


def fit_dims(w: np.ndarray, matrix: bool) -> set[int]:
    """Every input dimension a plain kernel array can serve."""
    dims = {w.ndim}
    shape = list(w.shape)
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
        dims.add(len(shape))
    if matrix and w.ndim == 2 and w.shape[1] == 1:
        dims.add(1)
    return dims


# ---------------------------------------------------------------- dispatch


def read_definition(path, *, subject: str | None = None, name: str | None = None,
                    budget: KernelBudget = KernelBudget()) -> Definition:
    """Read any supported kernel file (a ``pathlib.Path`` or an importlib.resources Traversable).

    The file's size and its weights are held to ``budget`` before they cost
    memory: the size before a byte is read, the weights as they are parsed.
    """
    subject = subject or str(path)
    name = name or f"file:{path.name}"
    suffix = Path(path.name).suffix.lower()
    if isinstance(path, Path):
        _check_regular(path, subject, budget)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError("no such kernel file", subject=subject) from None
    except IsADirectoryError:
        raise UsageError("is a directory, not a kernel file", subject=subject) from None
    except OSError as exc:
        raise UsageError(f"cannot read the kernel file: {exc.strerror or exc}", subject=subject) from None
    budget.check_bytes(len(data), subject)
    if suffix == ".npy":
        return Definition(name, subject, {None: [read_npy(data, subject=subject, budget=budget)]})
    if suffix in AUDIO_EXTS:
        raise UsageError(f"an audio file is used as an impulse response: write ir:{path}", subject=subject)
    text = _decode(data, subject)
    del data  # the text alone from here on
    if suffix == ".json":
        _check_annotated(len(text), "a JSON kernel", subject)
        return read_json(text, subject=subject, name=name)
    if suffix == ".mat":
        return Definition(name, subject, {None: [read_vips_mat(text, subject=subject, budget=budget)]}, matrix=True)
    if suffix in SOX_EXTS:
        return Definition(name, subject, {None: [read_sox_fir(text, subject=subject, budget=budget)]})
    return read_text(text, subject=subject, name=name, budget=budget)


def _check_annotated(size: int, what: str, subject: str) -> None:
    """Refuse text too large to read line by line within bounded memory (see MAX_ANNOTATED_BYTES)."""
    if size > MAX_ANNOTATED_BYTES:
        raise UsageError(
            f"{what} of {size:,} bytes is read number by number, at most {MAX_ANNOTATED_BYTES:,}; a larger kernel "
            "is a .npy file or rows of plain numbers (comments only above them)", subject=subject)


def _check_regular(path: Path, subject: str, budget: KernelBudget = KernelBudget()) -> None:
    """Refuse what is not a regular file of reasonable size before reading a byte (a FIFO would block)."""
    import os
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError("no such kernel file", subject=subject) from None
    except OSError as exc:
        raise UsageError(f"cannot read the kernel file: {exc.strerror or exc}", subject=subject) from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError("is a directory, not a kernel file", subject=subject)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError("is not a regular file (FIFOs and devices are not read)", subject=subject)
    budget.check_bytes(st.st_size, subject)


def _decode(data: bytes, subject: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError("not a text kernel file (it is not UTF-8 text)", subject=subject) from None


# ---------------------------------------------------------------- .npy


def read_npy(data: bytes, *, subject: str, budget: KernelBudget = KernelBudget()) -> np.ndarray:
    """A real-valued numeric array from ``.npy`` bytes (never unpickles).

    The header is parsed first (numpy's bounded parser) and its type and
    declared size are checked against the bytes present and the budget, so a
    header declaring a huge shape never allocates anything.
    """
    import tokenize

    fh = io.BytesIO(data)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(fh)
        if version not in readers:
            raise ValueError(f"unsupported format version {version[0]}.{version[1]}")
        shape, fortran, dtype = readers[version](fh)
    # Damaged headers reach numpy's tokenizer and literal parser, which raise all of these.
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, RecursionError, MemoryError,
            tokenize.TokenError) as exc:
        raise UsageError(f"not a readable .npy array ({exc})", subject=subject) from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
        raise UsageError(f"a kernel must hold real numbers (or booleans: a footprint), this .npy holds {dtype}",
                         subject=subject)
    count = 1
    for n in shape:
        count *= int(n)
    budget.check_weights(count, subject, verb="declares")
    present = len(data) - fh.tell()
    if count * dtype.itemsize > present:
        raise UsageError(
            f"truncated: the header declares {count * dtype.itemsize:,} bytes of weights, {present:,} are present",
            subject=subject,
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=fh.tell())
    arr = flat.reshape(shape, order="F" if fortran else "C")
    return check_weights(arr.astype(np.float64), subject=subject)


# ---------------------------------------------------------------- text


def read_text(text: str, *, subject: str, name: str, budget: KernelBudget = KernelBudget()) -> Definition:
    """Parse the text format (module docstring): metadata, optional sections, rows of numbers.

    Numbers alone (comments only above them) are read a block of lines at a
    time, in memory proportional to the weights, whatever the file's size;
    text with comments, sections or other characters among its numbers is
    read line by line and may take at most :data:`MAX_ANNOTATED_BYTES`.
    """
    defn = Definition(name, subject, matrix=True)
    start, first_line = _first_row(text)
    if start < len(text) and _PLAIN.fullmatch(text, start):
        meta: dict[str, str] = {}
        for line in text[:start].splitlines():
            _add_meta(meta, line.strip())
        _apply_meta(defn, meta, subject)
        defn.variants[None] = [_plain_matrix(text, start, first_line, subject=subject, budget=budget)]
        _check_declared(defn)
        return defn
    if len(text) > MAX_ANNOTATED_BYTES:
        odd = _NOT_PLAIN_CHAR.search(text, start)
        where = f" (line {first_line + text.count(chr(10), start, odd.start())}: {odd.group()!r})" if odd else ""
        _check_annotated(len(text), f"a text kernel with comments, sections or other characters among its "
                                    f"numbers{where}", subject)
    meta = {}
    sections: list[tuple[int | None, int, list[tuple[int, str]]]] = []  # (ndim, line, body lines)
    current: list[tuple[int, str]] = []
    sections.append((None, 1, current))
    seen_numbers = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line[:1] in _NUMBER_START and "#" not in line:  # the bulk of a long file: a row of numbers
            seen_numbers = True
            current.append((lineno, line))
            continue
        m = _SECTION.match(line)
        if m:
            current = []
            sections.append((int(m.group(1)), lineno, current))
            seen_numbers = True
            continue
        if line.startswith("#"):
            if not seen_numbers:
                _add_meta(meta, line)
            continue
        line = line.split("#", 1)[0].strip()
        if line:
            seen_numbers = True
        current.append((lineno, line))

    _apply_meta(defn, meta, subject)
    _, _, head = sections[0]
    if any(body for _, body in head) and len(sections) > 1:
        first = next(n for n, body in head if body)
        raise UsageError(f"line {first}: numbers before the first '## Nd' section", subject=subject)
    if len(sections) == 1:
        defn.variants[None] = [_rows_to_array(head, subject=subject)]
    else:
        for ndim, lineno, body in sections[1:]:
            arr = _rows_to_array(body, subject=subject, where=f"section '## {ndim}d' (line {lineno})")
            if arr.ndim < ndim:
                arr = arr.reshape((1,) * (ndim - arr.ndim) + arr.shape)
            try:
                arr = fit_ndim(arr, ndim, subject=f"{subject} line {lineno}")
            except KernelMismatch as exc:  # the file contradicts itself: bad data, not a bad input
                raise UsageError(exc.message, subject=exc.subject) from None
            defn.variants.setdefault(ndim, []).append(arr)
    _check_declared(defn)
    return defn


def _add_meta(meta: dict[str, str], line: str) -> None:
    """Record a ``# key: value`` line (a stripped line before the first number)."""
    mm = _META.match(line)
    if mm:
        meta[mm.group(1).strip().lower().replace(" ", "-").replace("_", "-")] = mm.group(2)
    elif line.startswith("#") and line.lstrip("#").strip() and "comment" not in meta:
        meta["comment"] = line.lstrip("#").strip()  # a plain first comment describes the kernel


def _first_row(text: str, pos: int = 0, lineno: int = 1) -> tuple[int, int]:
    """Where the first line that is neither blank nor a comment starts (a section counts), and its number."""
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end].strip()
        if line and (not line.startswith("#") or _SECTION.match(line)):
            break
        pos, lineno = end + 1, lineno + 1
    return pos, lineno


# Plain rows: digits, signs, points, exponents, and the separators; a blank line ends a 3D kernel's slice.
_PLAIN = re.compile(r"[0-9+\-.eE \t,;\n]*")
_NOT_PLAIN_CHAR = re.compile(r"[^0-9+\-.eE \t,;\n]")
_TO_SPACE = str.maketrans(",;\t", "   ")


def _plain_matrix(text: str, start: int, first_line: int, *, subject: str, budget: KernelBudget,
                  slices: bool = True) -> np.ndarray:
    """Rows of plain numbers from ``text[start:]`` as a 2D array, or 3D with blank lines between slices.

    A block of about a megabyte of lines is parsed at a time (a few ms: a
    signal waits no longer), so nothing but the weights grows with the file,
    and their count is held to ``budget`` as it grows.  Only a block that
    does not parse at once is looked at line by line: for the blank lines
    between slices, or to name the line and column of a bad number.  With
    ``slices`` false, blank lines are skipped instead.
    """
    done: list[np.ndarray] = []  # finished slices
    parts: list[np.ndarray] = []  # the slice being read
    shape = {"width": None, "rows": None}
    count, rows, blank = 0, 0, False

    def end_slice() -> None:
        nonlocal rows
        if not parts:
            return
        if shape["rows"] is None:
            shape["rows"] = rows
        elif rows != shape["rows"]:
            raise UsageError(f"slice {len(done) + 1} has {rows} rows, but slice 1 has {shape['rows']}; "
                             "the slices of a 3D kernel need the same shape", subject=subject)
        done.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
        parts.clear()
        rows = 0

    for block, block_line in _blocks(text, start, len(text), first_line):
        for run, run_line, blank_before, arr in _runs(block, block_line):
            blank = blank or blank_before
            if blank and slices:
                end_slice()
            blank = False
            if arr is None or arr.shape[0] != run.count("\n") + 1 or arr.shape[1] != (shape["width"] or arr.shape[1]):
                at = f"slice {len(done) + 1}, " if done or blank_before else ""
                _diagnose(run, run_line, rows, shape["width"], at, subject)
            shape["width"] = arr.shape[1]
            rows += arr.shape[0]
            count += arr.size
            budget.check_weights(count, subject, verb="has at least")
            parts.append(arr)
        blank = not block[block.rfind("\n") + 1:].strip(" \t")  # the block ended with a blank line
    end_slice()
    if not done:
        raise UsageError("the kernel is empty (no numbers)", subject=subject)
    return check_weights(done[0] if len(done) == 1 else np.stack(done), subject=subject)


def _blocks(text: str, lo: int, hi: int, line: int):
    """``text[lo:hi]`` in pieces of whole lines, about _BLOCK_CHARS each, with the number of each first line."""
    while lo < hi:
        stop = min(hi, lo + _BLOCK_CHARS)
        if stop < hi:
            cut = text.rfind("\n", lo, stop)
            if cut < 0:  # one line longer than a block: all of it
                cut = text.find("\n", stop, hi)
            stop = hi if cut < 0 else cut
        block = text[lo:stop]
        yield block, line
        line += block.count("\n") + 1
        lo = stop + 1


def _runs(block: str, line: int):
    """(run, first line, blank line before it, parsed array or None) for each run of non-blank lines of a block.

    A block that parses at once, line for line, is one run; only another is
    cut at its blank lines, line by line.
    """
    arr = _parse_block(block) if block.strip(" \t") else None
    if arr is not None and arr.shape[0] == block.count("\n") + 1:
        yield block, line, False, arr
        return
    run: list[str] = []
    first, blank = line, False
    for number, raw in enumerate(block.split("\n"), line):
        if raw.strip(" \t"):
            if not run:
                first = number
            run.append(raw)
            continue
        if run:
            text = "\n".join(run)
            yield text, first, blank, _parse_block(text)
            run = []
        blank = True
    if run:
        text = "\n".join(run)
        yield text, first, blank, _parse_block(text)


def _parse_block(block: str) -> np.ndarray | None:
    """Lines of plain numbers as a (rows, columns) array; None if any is not a number of the grammar.

    Within the plain characters, numpy parses exactly what ``float`` does,
    which is exactly the ``_NUMBER`` grammar; skipped blank lines and
    ragged rows are found by the caller from the shape.
    """
    try:
        if not any(sep in block for sep in " \t,;"):  # one number a line: an impulse response, FIR taps
            arr = np.array(block.split("\n"), dtype=np.float64)[:, None]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": a run of separators, refused below
                arr = np.loadtxt(io.StringIO(block.translate(_TO_SPACE)), dtype=np.float64, ndmin=2)
    except ValueError:
        return None
    return arr if np.isfinite(arr).all() else None


def _diagnose(block: str, block_line: int, rows_before: int, width: int | None, at: str, subject: str):
    """Raise the error of a block that did not parse, naming its line (and column) as the careful reader does."""
    for offset, raw in enumerate(block.split("\n")):
        values = _numbers(raw.strip(), block_line + offset, subject)
        width = len(values) if width is None else width
        if len(values) != width:
            raise UsageError(
                f"{at}row {rows_before + offset + 1} (line {block_line + offset}) has {len(values)} numbers, "
                f"but row 1 has {width}; every row needs the same number of columns", subject=subject)
    raise UsageError(f"line {block_line}: the numbers cannot be read", subject=subject)


def _rows_to_array(lines: list[tuple[int, str]], *, subject: str, where: str = "") -> np.ndarray:
    """Rows of numbers (blank lines between slices) into a 2D or 3D float64 array."""
    quick = _plain_rows(lines)
    if quick is not None:
        return check_weights(quick, subject=subject)
    slices: list[list[tuple[int, list[float]]]] = [[]]
    for lineno, line in lines:
        if not line:
            if slices[-1]:
                slices.append([])
            continue
        slices[-1].append((lineno, _numbers(line, lineno, subject)))
    slices = [s for s in slices if s]
    prefix = f"{where}: " if where else ""
    if not slices:
        raise UsageError(f"{prefix}the kernel is empty (no numbers)", subject=subject)
    width = len(slices[0][0][1])
    for s_index, rows in enumerate(slices, 1):
        for r_index, (lineno, values) in enumerate(rows, 1):
            if len(values) != width:
                at = f"slice {s_index}, " if len(slices) > 1 else ""
                raise UsageError(
                    f"{prefix}{at}row {r_index} (line {lineno}) has {len(values)} numbers, "
                    f"but row 1 has {width}; every row needs the same number of columns",
                    subject=subject,
                )
        if len(rows) != len(slices[0]):
            raise UsageError(
                f"{prefix}slice {s_index} has {len(rows)} rows, but slice 1 has {len(slices[0])}; "
                "the slices of a 3D kernel need the same shape",
                subject=subject,
            )
    arr = np.array([[v for _, v in rows] for rows in slices], dtype=np.float64)
    arr = arr[0] if len(slices) == 1 else arr
    return check_weights(arr, subject=subject)


# Characters of a file of plain numbers: anything else goes through the careful parser.
_NUMBER_START = frozenset("0123456789+-.")
_NOT_PLAIN = str.maketrans("", "", "0123456789+-.eE \t,;\n")


def _plain_rows(lines: list[tuple[int, str]]) -> np.ndarray | None:
    """One slice of equally long rows of plain numbers, parsed at once; None for anything else.

    An impulse response of 88200 taps, one per line, is read in about 15 ms
    instead of 330 ms token by token.  Whatever this does not accept (a blank
    line, rows of other lengths, a character or number it cannot take, an
    overflow) is left to the token-by-token parser, which names the line and
    column of the problem.  Within these characters ``float`` accepts exactly
    the ``_NUMBER`` grammar.
    """
    rows = [line for _, line in lines]
    while rows and not rows[-1]:  # blank lines after the numbers separate nothing
        rows.pop()
    while rows and not rows[0]:
        rows.pop(0)
    text = "\n".join(rows)
    if not rows or not all(rows) or text.translate(_NOT_PLAIN):
        return None
    try:
        if any(sep in text for sep in " \t,;"):
            tokens = [[t for t in _SPLIT.split(line) if t] for line in rows]
            if not tokens[0] or any(len(t) != len(tokens[0]) for t in tokens):
                return None
            arr = np.array(tokens, dtype=np.float64)
        else:  # one number per row: FIR taps, an impulse response
            arr = np.array(rows, dtype=np.float64)[:, None]
    except ValueError:
        return None
    return arr if np.isfinite(arr).all() else None


def _numbers(line: str, lineno: int, subject: str) -> list[float]:
    out = []
    for col, token in enumerate((t for t in _SPLIT.split(line) if t), 1):
        if not _NUMBER.fullmatch(token):
            if token.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                raise UsageError(
                    f"line {lineno}, column {col}: {token!r} is not a finite number (NaN/inf are not weights)",
                    subject=subject,
                )
            raise UsageError(f"line {lineno}, column {col}: {token!r} is not a number", subject=subject)
        value = float(token)
        if not np.isfinite(value):
            raise UsageError(
                f"line {lineno}, column {col}: {token!r} overflows (not a finite number)", subject=subject
            )
        out.append(value)
    return out


def _apply_meta(defn: Definition, meta: dict[str, str], subject: str) -> None:
    if "description" in meta or "comment" in meta:
        defn.description = meta.get("description", meta.get("comment"))
    if "sum" in meta:
        try:
            defn.sum = float(meta["sum"])
        except ValueError:
            raise UsageError(f"'# sum: {meta['sum']}' is not a number", subject=subject) from None
    for key, allowed, attr in (
        ("symmetry", SYMMETRIES, "symmetry"),
        ("range", RANGE_MODES, "range_default"),
        ("combine", COMBINES, "combine"),
    ):
        if key in meta:
            value = meta[key].strip().lower()
            if value not in allowed:
                raise UsageError(f"'# {key}: {meta[key]}' must be one of {', '.join(allowed)}", subject=subject)
            setattr(defn, attr, value)


def _check_declared(defn: Definition) -> None:
    """A file is rejected when its weights contradict its declarations (sum, symmetry, combine)."""
    from .kernel import symmetry

    for ndim, weights in defn.variants.items():
        at = f" ({ndim}D)" if ndim else ""
        if defn.combine == "single" and len(weights) > 1:
            raise UsageError(
                f"{len(weights)} kernels{at} but no '# combine: magnitude' or '# combine: max'",
                subject=defn.source,
            )
        for w in weights:
            if defn.sum is not None and not np.isclose(w.sum(), defn.sum, rtol=1e-9, atol=1e-9):
                raise UsageError(f"weights{at} sum to {w.sum():g}, but the file declares sum {defn.sum:g}",
                                 subject=defn.source)
            if defn.symmetry is not None and symmetry(w) != defn.symmetry:
                raise UsageError(f"weights{at} are not {defn.symmetry} as the file declares", subject=defn.source)


# ---------------------------------------------------------------- inline matrices


def parse_inline(spec: str, *, subject: str) -> np.ndarray:
    """A nested list of numbers, ``"[[1,0,-1],[2,0,-2],[1,0,-1]]"`` (JSON grammar; never eval)."""
    obj = _load_json(spec, subject=subject, where=lambda exc: f"at character {exc.pos + 1}",
                     what="not a matrix of numbers")
    return nested_to_array(obj, subject=subject)


def _load_json(text: str, *, subject: str, where, what: str):
    """json.loads under the kernel grammar: no NaN/Infinity, bounded nesting and integer length."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _NonFinite as exc:
        raise UsageError(f"{exc.args[0]} is not a finite number (NaN/inf are not weights)", subject=subject) from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what}: {exc.msg} {where(exc)}", subject=subject) from None
    except RecursionError:
        raise UsageError(f"{what}: nested too deeply (kernels have at most 3 levels)", subject=subject) from None
    except ValueError:  # an integer of thousands of digits (over sys.int_max_str_digits)
        raise UsageError(f"{what}: a number with thousands of digits is not a weight", subject=subject) from None


class _NonFinite(ValueError):
    pass


def _reject_constant(token: str):
    raise _NonFinite(token)


def nested_to_array(obj, *, subject: str) -> np.ndarray:
    """Nested lists of numbers into an array, naming the row or slice where nesting breaks."""
    depth, node = 0, obj
    while isinstance(node, list) and node:
        depth, node = depth + 1, node[0]
    if isinstance(node, list):
        depth += 1  # [[], []]: the empty rows are a level too
    labels = {1: ("value",), 2: ("row", "column"), 3: ("slice", "row", "column")}.get(depth, ())

    def where(path: tuple[int, ...]) -> str:
        if not path or len(path) > len(labels):
            return "the matrix "
        return ", ".join(f"{n} {i}" for n, i in zip(labels, path)) + " "

    def shape_of(node, path: tuple[int, ...]) -> tuple[int, ...]:
        if isinstance(node, list):
            if not node:
                raise UsageError(f"{where(path)}is empty", subject=subject)
            shapes = [shape_of(child, path + (i,)) for i, child in enumerate(node, 1)]
            for i, s in enumerate(shapes[1:], 2):
                if s != shapes[0]:
                    raise UsageError(
                        f"ragged matrix: {where(path + (i,))}has {_describe(s)}, "
                        f"but {where(path + (1,))}has {_describe(shapes[0])}",
                        subject=subject,
                    )
            return (len(node),) + shapes[0]
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise UsageError(f"{where(path)}holds {json.dumps(node)[:40]}, not a number", subject=subject)
        if isinstance(node, int) and abs(node) > 10**150:
            raise UsageError(f"{where(path)}holds an integer of {len(str(abs(node)))} digits, too large for a weight",
                             subject=subject)
        return ()

    if depth > 3:
        raise UsageError(f"the matrix has {depth} levels of nesting; kernels have at most 3", subject=subject)
    shape = shape_of(obj, ())
    if not shape:
        raise UsageError("a kernel is a list of numbers (e.g. [1, 2, 1]), not a single number", subject=subject)
    return check_weights(np.array(obj, dtype=np.float64), subject=subject)


def _describe(shape: tuple[int, ...]) -> str:
    if not shape:
        return "a single number"
    return (f"{shape[0]} value" + ("s" if shape[0] != 1 else "")) if len(shape) == 1 else "shape " + "x".join(map(str, shape))


_IM = re.compile(r"^\s*(\d+)(?:x(\d+))?(?:([+-]\d+)([+-]\d+))?\s*:(.*)$", re.DOTALL)


def is_imagemagick(spec: str) -> bool:
    return _IM.match(spec) is not None


def parse_imagemagick(spec: str, *, subject: str) -> np.ndarray:
    """ImageMagick's user kernel ``"WxH[+X+Y]: v,v,v ..."`` as an H x W matrix.

    As in ImageMagick, ``nan`` or ``-`` marks a position outside the
    neighbourhood, which for a weighted sum is a weight of 0.  The origin, if
    given, must be the centre: the engine centres every kernel.
    """
    m = _IM.match(spec)
    width = int(m.group(1))
    height = int(m.group(2)) if m.group(2) else width
    tokens = [t for t in _SPLIT.split(m.group(5).strip()) if t]
    if width < 1 or height < 1:
        raise UsageError(f"a {width}x{height} kernel is empty", subject=subject)
    if len(tokens) != width * height:
        raise UsageError(
            f"a {width}x{height} kernel needs {width * height} values, {len(tokens)} were given",
            subject=subject,
        )
    if m.group(3):
        x, y = int(m.group(3)), int(m.group(4))
        if (x, y) != ((width - 1) // 2, (height - 1) // 2):
            raise UsageError(
                f"origin +{x}+{y} is off-centre; convcli centres kernels (origin "
                f"+{(width - 1) // 2}+{(height - 1) // 2}), pad the kernel with zeros to move it",
                subject=subject,
            )
    values = []
    for i, token in enumerate(tokens):
        if token.lower() in ("nan", "-"):
            values.append(0.0)
            continue
        try:
            value = float(token)
        except ValueError:
            raise UsageError(f"value {i + 1} ({token!r}) is not a number", subject=subject) from None
        if not np.isfinite(value):
            raise UsageError(f"value {i + 1} ({token!r}) is not a finite number", subject=subject)
        values.append(value)
    return check_weights(np.array(values, dtype=np.float64).reshape(height, width), subject=subject)


# ---------------------------------------------------------------- JSON, libvips, SoX


def read_json(text: str, *, subject: str, name: str) -> Definition:
    """A JSON nested list, or an object ``{"weights": [...], "description": ..., "range": ...}``."""
    obj = _load_json(text, subject=subject, where=lambda exc: f"(line {exc.lineno}, column {exc.colno})",
                     what="not valid JSON")
    meta: dict[str, str] = {}
    if isinstance(obj, dict):
        if "weights" not in obj:
            raise UsageError('a JSON kernel object needs a "weights" list', subject=subject)
        meta = {k: str(v) for k, v in obj.items() if k != "weights" and v is not None}
        obj = obj["weights"]
    defn = Definition(name, subject, {None: [nested_to_array(obj, subject=subject)]})
    _apply_meta(defn, meta, subject)
    _check_declared(defn)
    return defn


def read_vips_mat(text: str, *, subject: str, budget: KernelBudget = KernelBudget()) -> np.ndarray:
    """libvips' matrix file: a header ``W H [scale [offset]]`` then H rows of W numbers."""
    start, head_line = _first_row(text)
    if start >= len(text):
        raise UsageError("the matrix file is empty", subject=subject)
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    header = _numbers(text[start:end].split("#", 1)[0].strip(), head_line, subject)
    if len(header) not in (2, 3, 4) or any(v != int(v) or v < 1 for v in header[:2]):
        raise UsageError(f"line {head_line}: the header must be 'width height [scale [offset]]'", subject=subject)
    width, height = int(header[0]), int(header[1])
    scale = header[2] if len(header) > 2 else 1.0
    offset = header[3] if len(header) > 3 else 0.0
    if scale == 0:
        raise UsageError(f"line {head_line}: scale 0 would divide by zero", subject=subject)
    if offset != 0:
        raise UsageError(
            f"line {head_line}: offset {offset:g} is not supported (a kernel only weights samples); "
            "use --range offset to centre signed results",
            subject=subject,
        )
    budget.check_weights(width * height, subject, verb="declares")
    body, body_line = _first_row(text, end + 1, head_line + 1)
    if body < len(text) and _PLAIN.fullmatch(text, body):
        arr = _plain_matrix(text, body, body_line, subject=subject, budget=budget, slices=False)
        rows = arr.shape[0]
    else:
        _check_annotated(len(text), "a matrix file with comments among its numbers", subject)
        lines = [(n, ln.split("#", 1)[0].strip()) for n, ln in enumerate(text[end + 1:].splitlines(), head_line + 1)]
        lines = [(n, ln) for n, ln in lines if ln]
        rows = len(lines)
        arr = _rows_to_array(lines, subject=subject) if lines else np.zeros((0, width))
    if rows != height:
        raise UsageError(f"the header says {height} rows, the file has {rows}", subject=subject)
    if arr.shape != (height, width):
        raise UsageError(f"the header says {width}x{height}, the rows hold {arr.shape[1]}x{arr.shape[0]}",
                         subject=subject)
    return arr / scale


def read_sox_fir(text: str, *, subject: str, budget: KernelBudget = KernelBudget()) -> np.ndarray:
    """SoX ``fir`` coefficients: numbers separated by white space or newlines, ``#`` comments."""
    start, first_line = _first_row(text)
    if start < len(text) and _PLAIN.fullmatch(text, start):
        parts, count = [], 0
        for block, block_line in _blocks(text, start, len(text), first_line):
            try:
                part = np.array(block.translate(_TO_SPACE).split(), dtype=np.float64)
            except ValueError:
                part = np.array([np.nan])
            if not np.isfinite(part).all():
                for offset, raw in enumerate(block.split("\n")):
                    _numbers(raw.strip(), block_line + offset, subject)  # names the bad number
            count += part.size
            budget.check_weights(count, subject, verb="has at least")
            parts.append(part)
        values = np.concatenate(parts) if parts else np.zeros(0)
    else:
        _check_annotated(len(text), "a coefficient file with comments among its numbers", subject)
        numbers: list[float] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                numbers.extend(_numbers(line, lineno, subject))
        values = np.array(numbers, dtype=np.float64)
    if not values.size:
        raise UsageError("the kernel is empty (no coefficients)", subject=subject)
    return check_weights(values, subject=subject)
