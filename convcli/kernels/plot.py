"""Pictures of kernels: frequency responses and heat maps, drawn with Pillow (no matplotlib).

The functions return data or a ``PIL.Image``; writing the file is the caller's job.
"""
from __future__ import annotations

import numpy as np

FLOOR_DB = -120.0


def frequency_response(w: np.ndarray, rate: float | None = None, n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude response of a 1D kernel in dB, from 0 to Nyquist.

    Frequencies are in Hz with a ``rate``, else in cycles per sample (0 to 0.5).
    The magnitude is floored at -120 dB so a perfect zero stays plottable.
    """
    from scipy import signal

    freqs, h = signal.freqz(np.asarray(w, dtype=np.float64), worN=n, fs=rate if rate else 1.0,
                            include_nyquist=True)
    with np.errstate(divide="ignore"):
        db = 20 * np.log10(np.abs(h))
    return freqs, np.maximum(db, FLOOR_DB)


def diverging_rgb(values: np.ndarray, scale: float, signed: bool) -> np.ndarray:
    """Colours for weights: blue (negative) - white - red (positive), or white - red when all >= 0."""
    v = np.asarray(values, dtype=np.float64) / (scale or 1.0)
    v = np.clip(v, -1, 1)
    white = np.array([255.0, 255.0, 255.0])
    red = np.array([200.0, 30.0, 40.0])
    blue = np.array([30.0, 80.0, 200.0])
    pos = np.clip(v, 0, 1)[..., None]
    neg = np.clip(-v, 0, 1)[..., None]
    rgb = white + pos * (red - white) + neg * (blue - white)
    if not signed:
        rgb = white + np.abs(v)[..., None] * (red - white)
    return rgb.round().astype(np.uint8)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no scalable default font
        return ImageFont.load_default()


def heatmap(weights: list[np.ndarray], cell: int | None = None):
    """Each weight array as a grid of coloured cells (3D: its slices side by side), values written in small ones."""
    from PIL import Image, ImageDraw

    panels = []
    for w in weights:
        w = np.asarray(w, dtype=np.float64)
        panels.extend([w.reshape(1, -1)] if w.ndim == 1 else [w] if w.ndim == 2 else list(w))
    scale = max(float(np.abs(p).max()) for p in panels) or 1.0
    signed = any(float(p.min()) < 0 for p in panels)
    biggest = max(max(p.shape) for p in panels)
    cell = cell or int(np.clip(480 // biggest, 3, 48))
    gap = max(cell // 2, 6)
    width = sum(p.shape[1] * cell for p in panels) + gap * (len(panels) + 1)
    height = max(p.shape[0] for p in panels) * cell + 2 * gap
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(max(cell // 3, 8))
    x0 = gap
    for p in panels:
        rgb = diverging_rgb(p, scale, signed)
        block = Image.fromarray(np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1), "RGB")
        image.paste(block, (x0, gap))
        draw.rectangle([x0 - 1, gap - 1, x0 + p.shape[1] * cell, gap + p.shape[0] * cell], outline=(90, 90, 90))
        if cell >= 28:
            for (i, j), v in np.ndenumerate(p):
                text = f"{v:.3g}"
                box = draw.textbbox((0, 0), text, font=font)
                tx = x0 + j * cell + (cell - (box[2] - box[0])) // 2
                ty = gap + i * cell + (cell - (box[3] - box[1])) // 2
                draw.text((tx, ty), text, fill=(0, 0, 0), font=font)
        x0 += p.shape[1] * cell + gap
    return image


def response_plot(freqs: np.ndarray, db: np.ndarray, *, rate: float | None, size=(640, 360)):
    """A frequency response (dB against frequency) as a line plot with a labelled grid."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 56, 16, 16, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = _font(12)
    lo = max(FLOOR_DB, np.floor(min(float(db.min()), -20.0) / 20) * 20)
    hi = max(10.0, np.ceil(float(db.max()) / 10) * 10)
    fmax = float(freqs[-1]) or 1.0

    def xy(f, d):
        x = left + (width - left - right) * f / fmax
        y = top + (height - top - bottom) * (hi - np.clip(d, lo, hi)) / (hi - lo)
        return x, y

    for d in np.arange(lo, hi + 1e-9, 20):
        _, y = xy(0, d)
        draw.line([left, y, width - right, y], fill=(225, 225, 225))
        draw.text((4, y - 7), f"{d:.0f} dB", fill=(60, 60, 60), font=font)
    for i in range(5):
        f = fmax * i / 4
        x, _ = xy(f, lo)
        draw.line([x, top, x, height - bottom], fill=(225, 225, 225))
        label = _hz(f) if rate else f"{f:.3g}"
        draw.text((x - 12, height - bottom + 6), label, fill=(60, 60, 60), font=font)
    draw.text((width // 2 - 40, height - 18), "frequency" + (" (Hz)" if rate else " (cycles/sample)"),
              fill=(60, 60, 60), font=font)
    draw.rectangle([left, top, width - right, height - bottom], outline=(90, 90, 90))
    draw.line([xy(f, d) for f, d in zip(freqs, db)], fill=(200, 30, 40), width=2)
    return image


def _hz(f: float) -> str:
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"


def text_response(freqs: np.ndarray, db: np.ndarray, *, rate: float | None, width: int = 64,
                  lo: float = -80.0) -> list[str]:
    """The frequency response as lines of block characters: one column per band, one row per 10 dB."""
    hi = max(0.0, float(np.ceil((db.max() - 0.05) / 10) * 10))  # passband ripple does not add a row
    height = int(round((hi - lo) / 10))
    edges = np.linspace(0, len(db), width + 1).astype(int)
    levels = [float(db[a:max(b, a + 1)].max()) for a, b in zip(edges[:-1], edges[1:])]
    eighths = " ▁▂▃▄▅▆▇█"
    rows = []
    for r in range(height):
        top = hi - (hi - lo) * r / height
        bottom = hi - (hi - lo) * (r + 1) / height
        line = ""
        for level in levels:
            fill = (level - bottom) / (top - bottom)
            line += eighths[int(np.clip(round(fill * 8), 0, 8))]
        label = f"{top:5.0f} dB " if r % 2 == 0 else " " * 9
        rows.append(label + "│" + line)
    rows.append(" " * 9 + "└" + "─" * width)
    fmax = float(freqs[-1])
    unit = " Hz" if rate else " cycles/sample"
    left = "0"
    mid = _hz(fmax / 2) if rate else f"{fmax / 2:.3g}"
    right = (_hz(fmax) if rate else f"{fmax:.3g}") + unit
    gap = width - len(left) - len(right)
    axis = left + (mid.center(gap) if gap >= len(mid) + 2 else " " * max(gap, 1)) + right
    rows.append(" " * 10 + axis)
    return rows
