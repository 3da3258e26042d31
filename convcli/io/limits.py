"""Size limits checked from headers, before a byte of pixel or sample data is decoded.

Two budgets guard every reader:

- ``max_pixels``: pixels of one image (or one TIFF page).  The default is
  Pillow's decompression-bomb threshold (89 478 485); where Pillow would only
  warn, convcli refuses.
- ``memory_budget``: bytes a read may cost, counting the decoded samples and
  the two float working copies a filter needs.  The default is half the memory
  available when the run starts.

A compressed container (``.npz``, ``.nii.gz``) that declares a large array in a
tiny file is a decompression bomb unless the user said otherwise: with the
default budget, more than 64 MiB inflating at a ratio over 100:1 is refused.
"""
from __future__ import annotations

import os
import re

from ..errors import DataError, ParameterError

DEFAULT_MAX_PIXELS = 89_478_485  # = PIL.Image.MAX_IMAGE_PIXELS, without importing Pillow
BOMB_RATIO = 100
BOMB_MIN_BYTES = 64 << 20

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int, *, subject: str = "--memory-budget") -> int:
    """Parse a byte count such as ``2G``, ``512M``, ``1.5GiB`` or ``1000000``."""
    if isinstance(text, int):
        if text <= 0:
            raise ParameterError("must be a positive number of bytes", subject=subject)
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ParameterError(
            f"{text!r} is not a size; use bytes or a number with K, M, G or T (e.g. 4G)", subject=subject
        )
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ParameterError("must be a positive number of bytes", subject=subject)
    return value


def human(nbytes: int) -> str:
    """A byte count for people: 1.5 GiB, 300 MiB, 12 KiB."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{nbytes} B"


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_memory_budget() -> int:
    """Half the memory available now: room for the run and for whatever else the machine does."""
    return available_memory() // 2


class Limits:
    """The budgets of one read, resolved once; ``explicit`` says whether the user chose the budget."""

    def __init__(self, max_pixels: int | None = None, memory_budget: int | str | None = None) -> None:
        if max_pixels is not None and int(max_pixels) <= 0:
            raise ParameterError("must be a positive number of pixels", subject="--max-pixels")
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
        self.explicit = memory_budget is not None
        self.memory_budget = default_memory_budget() if memory_budget is None else parse_size(memory_budget)

    def check_pixels(self, width: int, height: int, subject: str) -> None:
        """Refuse an image whose header declares more pixels than allowed."""
        if width <= 0 or height <= 0:
            raise DataError(f"the header declares an empty image ({width}x{height})", subject=subject)
        pixels = width * height
        if pixels > self.max_pixels:
            raise DataError(
                f"{width}x{height} = {pixels:,} pixels is over the limit of {self.max_pixels:,} "
                "(a possible decompression bomb; raise it with --max-pixels)",
                subject=subject,
            )

    def fits_samples(self, shape, itemsize: int, *, work_itemsize: int = 4) -> bool:
        """Whether a declared array can be read and filtered within the memory budget (see :meth:`check_samples`)."""
        return _sample_cost(shape, itemsize, work_itemsize) <= self.memory_budget

    def check_samples(self, shape, itemsize: int, subject: str, *, work_itemsize: int = 4) -> None:
        """Refuse a declared array whose decoding and filtering would exceed the memory budget.

        The cost counted is the samples themselves plus two float working
        copies (the input converted to float and the result).
        """
        need = _sample_cost(shape, itemsize, work_itemsize)
        if need > self.memory_budget:
            dims = "x".join(str(int(n)) for n in shape)
            raise DataError(
                f"{dims} samples need about {human(need)} to read and filter, over the memory "
                f"budget of {human(self.memory_budget)} (raise it with --memory-budget)",
                subject=subject,
            )

    def check_inflation(self, declared: int, stored: int, subject: str) -> None:
        """Refuse a compressed member that inflates suspiciously, unless the budget was given explicitly."""
        if self.explicit or declared < BOMB_MIN_BYTES:
            return
        ratio = declared / max(int(stored), 1)
        if ratio > BOMB_RATIO:
            raise DataError(
                f"{human(declared)} packed into {human(stored)} (ratio {ratio:,.0f}:1) looks like a "
                "decompression bomb; pass --memory-budget to read it anyway",
                subject=subject,
            )


def _sample_cost(shape, itemsize: int, work_itemsize: int) -> int:
    count = 1
    for n in shape:
        count *= int(n)
    return count * int(itemsize) + 2 * count * int(work_itemsize)
