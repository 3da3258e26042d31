"""`convcli kernels list|show`: what -k accepts, and what a kernel looks like."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from . import Command, app

kernels_app = typer.Typer(
    name="kernels",
    help="List the named kernels and show what a kernel spec resolves to.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(kernels_app, name="kernels")

MAX_CELLS = 25  # larger kernels are shown by their central part


def complete_kernel(incomplete: str) -> List[str]:
    """Shell completion of kernel names (families, aliases, library and user files)."""
    from ..kernels.catalog import complete

    return complete(incomplete)


@kernels_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List every named kernel: dimensions, parameters with defaults, description."""
    from ..kernels.catalog import catalog

    rows = catalog() + [IMPULSE_RESPONSE]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    cells = [_list_cells(row) for row in rows]
    if not sys.stdout.isatty():
        # For grep, cut and awk: one line per kernel, tab-separated, nothing wrapped.
        sys.stdout.write("".join("\t".join(" ".join(c.split()) for c in row) + "\n" for row in cells))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("name", "dims", "parameters", "description"):
        table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*row)
    console = Console(soft_wrap=False)
    console.print(table)
    console.print("Use NAME, NAME:VALUE or NAME:key=value,...; ? marks a required parameter. "
                  "Lengths: samples, 5ms (audio) or 1.5mm (voxels); frequencies: 2000, 2k, 2khz.",
                  highlight=False)


# Not a name but a spec form that kernels list must show: an audio file's impulse response.
IMPULSE_RESPONSE = {
    "name": "ir", "kind": "file", "dimensions": [1], "parameters": {"FILE": None}, "signature": "ir:FILE",
    "aliases": [], "description": "Impulse response read from an audio file (ir:room.wav): causal convolution; "
    "its sample rate must be the input's", "range_default": "clip", "combine": "single",
}


def _list_cells(row: dict) -> tuple[str, str, str, str]:
    name = row["name"] + (f" ({', '.join(row['aliases'])})" if row["aliases"] else "")
    dims = ",".join(f"{d}D" for d in row["dimensions"])
    if row["name"] == "ir":
        params = "FILE"
    else:
        params = ", ".join(f"{k}={'?' if v is None else v}" for k, v in row["parameters"].items())
    return name, dims, params, row["description"]


@kernels_app.command("show", cls=Command)
def show_command(
    spec: str = typer.Argument(..., metavar="SPEC", autocompletion=complete_kernel,
                               help="A kernel name, file or inline matrix, as given to filter -k."),
    ndim: Optional[int] = typer.Option(None, "--ndim", min=1, max=3,
                                       help="Spatial dimension of the input: 1 audio, 2 image, 3 volume "
                                       "(default: 2 when the kernel has a 2D form)."),
    rate: Optional[float] = typer.Option(None, "--rate", metavar="HZ",
                                         help="Sample rate for audio designs and times (5ms); "
                                         "1D kernels then show their frequency response."),
    spacing: Optional[str] = typer.Option(None, "--spacing", metavar="MM",
                                          help="Sample spacing in mm per axis (3,1,1) for lengths like 1.5mm."),
    normalize: bool = typer.Option(False, "--normalize", help="Divide the kernel by its sum, as filter does."),
    as_json: bool = typer.Option(False, "--json", help="Print the facts and the weights as JSON."),
    plot: Optional[str] = typer.Option(None, "--plot", metavar="PNG",
                                       help="Write a picture: a heat map, or a 1D kernel's frequency response."),
    full: bool = typer.Option(False, "--full", help="Print every weight of a large kernel (default: its centre)."),
) -> None:
    """Show a kernel's weights, sum, separability and rank (and a 1D kernel's frequency response)."""
    from ..errors import UsageError
    from ..kernels import resolve
    from ..kernels.catalog import default_ndim

    spacing_mm = None
    if spacing is not None:
        try:
            spacing_mm = tuple(float(v) for v in spacing.split(","))
        except ValueError:
            raise UsageError(f"{spacing!r} is not a comma list of numbers", subject="--spacing") from None
    if rate is not None and not rate > 0:
        raise UsageError(f"must be positive, not {rate:g}", subject="--rate")
    nd = ndim or (len(spacing_mm) if spacing_mm else 1 if rate else default_ndim(spec))
    if spacing_mm is not None and len(spacing_mm) != nd:
        raise UsageError(f"needs one value per axis ({nd})", subject="--spacing")
    kernel = resolve(spec, ndim=nd, sample_rate=rate, spacing=spacing_mm, normalize=normalize)
    facts = kernel.describe()
    if plot is not None:
        _write_plot(kernel, plot, rate, spec)
    if as_json:
        facts["weights"] = [w.tolist() for w in kernel.weights]
        print(json.dumps(facts))
        return
    _print_kernel(kernel, facts, rate, full)


def _write_plot(kernel, dest: str, rate: Optional[float], spec: str) -> None:
    import os

    from ..errors import UsageError
    from ..io.files import atomic_path
    from ..kernels import plot

    if dest != "-" and not dest.lower().endswith(".png"):
        raise UsageError("--plot writes a PNG picture; give a name ending in .png", subject=dest)
    for candidate in (spec, spec.partition(":")[2]):
        if candidate and dest != "-" and os.path.exists(candidate) and os.path.exists(dest) \
                and os.path.samefile(candidate, dest):
            raise UsageError("--plot would overwrite the kernel file itself", subject=dest)
    if kernel.ndim == 1 and len(kernel.weights) == 1 and kernel.operator is None:  # a median has no frequency response
        freqs, db = plot.frequency_response(kernel.weights[0], rate)
        image = plot.response_plot(freqs, db, rate=rate)
    else:
        image = plot.heatmap(list(kernel.weights))
    with atomic_path(dest, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def _print_kernel(kernel, facts: dict, rate: Optional[float], full: bool = False) -> None:
    from rich.console import Console

    console = Console(soft_wrap=False, highlight=False)
    if full:  # lines as long as the kernel is wide: the terminal wraps them, a pipe or a file keeps them
        widest = max(w.shape[-1] if w.ndim else 1 for w in kernel.weights)
        console = Console(soft_wrap=False, highlight=False, width=max(console.width, 10 * widest + 10))
    console.print(f"[bold]{facts['name']}[/bold]  {facts['description']}".rstrip())
    if kernel.operator is not None:
        _print_operator(console, kernel, facts)
        return
    shape = "x".join(map(str, facts["shape"]))
    count = f", {facts['kernels']} kernels combined by {facts['combine']}" if facts["kernels"] > 1 else ""
    console.print(f"{facts['ndim']}D, shape {shape}{count}")
    for i, w in enumerate(kernel.weights, 1):
        if len(kernel.weights) > 1:
            console.print(f"kernel {i} of {len(kernel.weights)}:")
        _print_weights(console, w, full)
    if any(_rounded(w) for w in kernel.weights):
        console.print(f"(weights rounded to {DIGITS} significant digits; --json gives every digit)")
    sums = facts["sum"] if isinstance(facts["sum"], list) else [facts["sum"]]
    console.print(f"sum: {', '.join(f'{s:.6g}' for s in sums)}")
    rank = "not computed (too large)" if facts["rank"] is None else facts["rank"]
    console.print(f"separable: {'yes' if facts['separable'] else 'no'}   rank: {rank}   "
                  f"symmetry: {facts['symmetry']}")
    console.print(f"range (integer outputs): {facts['range_default']}")
    if kernel.ndim == 1 and len(kernel.weights) == 1 and rate:
        from ..kernels.plot import frequency_response, text_response

        freqs, db = frequency_response(kernel.weights[0], rate)
        console.print("frequency response:")
        for line in text_response(freqs, db, rate=rate):
            console.print(line)


def _print_operator(console, kernel, facts: dict) -> None:
    """A rank, morphology or pooling kernel: its footprint drawn as a mask, what it computes, its twin elsewhere."""
    shape = "x".join(map(str, facts["shape"]))
    console.print(f"{facts['ndim']}D, shape {shape}, {facts['taps']} taps (# in the footprint)")
    mask = kernel.weights[0] != 0
    crop = tuple(slice((n - min(n, MAX_CELLS)) // 2, (n - min(n, MAX_CELLS)) // 2 + min(n, MAX_CELLS))
                 for n in mask.shape)
    shown = mask[crop]
    if shown.shape != mask.shape:
        console.print(f"(the central {'x'.join(map(str, shown.shape))})")
    planes = [shown.reshape(1, -1)] if shown.ndim == 1 else [shown] if shown.ndim == 2 else list(shown)
    for k, plane in enumerate(planes):
        if shown.ndim == 3:
            console.print(f"slice {crop[0].start + k + 1} of {mask.shape[0]}:")
        for row in plane:
            console.print(" ".join("#" if tap else "." for tap in row), markup=False)
    console.print(f"operator: {facts['operator']}")
    console.print(f"as: {facts['equivalent']}", markup=False)
    console.print(f"range (integer outputs): {facts['range_default']}")


def _print_weights(console, w, full: bool = False) -> None:
    import numpy as np
    from rich.table import Table

    from ..kernels.plot import diverging_rgb

    scale = float(np.abs(w).max()) or 1.0
    signed = bool((w < 0).any())
    # as many columns as fit the terminal (a cell is at most 9 characters and a space)
    fit = max(3, (console.width // 10) - (1 - (console.width // 10) % 2))
    if w.ndim == 1 and w.size > fit:
        _print_taps(console, w, fit)
        return
    limits = [MAX_CELLS] * (w.ndim - 1) + [min(MAX_CELLS, fit)]
    if full:
        limits = list(w.shape)
    crop = tuple(slice((n - min(n, m)) // 2, (n - min(n, m)) // 2 + min(n, m)) for n, m in zip(w.shape, limits))
    shown = w[crop]
    if shown.shape != w.shape:
        console.print(f"(the central {'x'.join(map(str, shown.shape))} of {'x'.join(map(str, w.shape))}; "
                      "--full prints every weight)")
    planes = [shown.reshape(1, -1)] if shown.ndim == 1 else [shown] if shown.ndim == 2 else list(shown)
    first = crop[0].start if shown.ndim == 3 else 0
    for k, plane in enumerate(planes):
        if shown.ndim == 3:
            console.print(f"slice {first + k + 1} of {w.shape[0]}:")
        table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1))
        for _ in range(plane.shape[1]):
            table.add_column(justify="right")
        colours = diverging_rgb(plane, scale, signed)
        for values, rgbs in zip(plane, colours):
            table.add_row(*(f"[black on rgb({r},{g},{b})]{_num(v)}[/]" for v, (r, g, b) in zip(values, rgbs)))
        console.print(table)


def _print_taps(console, w, per_line: int) -> None:
    """A long 1D kernel as numbered lines of taps."""
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 1))
    table.add_column(justify="right", style="dim")
    for _ in range(per_line - 1):
        table.add_column(justify="right")
    step = per_line - 1
    for start in range(0, w.size, step):
        chunk = [_num(v) for v in w[start:start + step]]
        table.add_row(f"{start}:", *chunk, *([""] * (step - len(chunk))))
    console.print(table)


DIGITS = 3  # significant digits a cell shows: a 9x7 kernel fits 80 columns


def _num(v: float) -> str:
    return f"{v:.{DIGITS}g}" if v != 0 else "0"


def _rounded(w) -> bool:
    """Some weight differs from what its cell shows."""
    return any(float(_num(v)) != v for v in w.ravel().tolist())
