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
    w = np.asarray(w, dtype=np.float64).ravel()
    # n points from 0 to Nyquist inclusive are the bins k * m / (2 (n - 1)) of an
    # m-point real FFT, m the first multiple of 2 (n - 1) holding every tap: numpy's
    # FFT instead of scipy.signal.freqz, whose import alone took over a second.
    step = 2 * (n - 1)
    factor = max(1, -(-len(w) // step))
    h = np.fft.rfft(w, step * factor)[::factor][:n]
    freqs = np.linspace(0.0, (rate if rate else 1.0) / 2, n)
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
    """Each weight array as a grid of coloured cells, with a colour bar; values written where they fit.

    A 3D kernel shows its slices side by side, each labelled with its index
    along the first axis (z=0, z=1, ...); a combined kernel shows each array.
    """
    from PIL import Image, ImageDraw

    panels, labels = [], []
    for k, w in enumerate(weights):
        w = np.asarray(w, dtype=np.float64)
        prefix = f"{k + 1}: " if len(weights) > 1 else ""
        if w.ndim == 3:
            panels.extend(list(w))
            labels.extend(f"{prefix}z={z}" for z in range(w.shape[0]))
        else:
            panels.append(w.reshape(1, -1) if w.ndim == 1 else w)
            labels.append(prefix.rstrip(": ") if prefix else "")
    scale = max(float(np.abs(p).max()) for p in panels) or 1.0
    signed = any(float(p.min()) < 0 for p in panels)
    rows, columns = max(p.shape[0] for p in panels), sum(p.shape[1] for p in panels)
    cell = cell or int(np.clip(min(480 // rows, 1600 // columns), 3, 48))  # slices side by side stay on a screen
    gap = max(cell // 2, 8)
    font = _font(12)
    label_height = 16 if any(labels) else 0
    bar_width = 90
    width = sum(p.shape[1] * cell for p in panels) + gap * (len(panels) + 1) + bar_width
    grid_height = max(p.shape[0] for p in panels) * cell
    height = max(grid_height, 120) + 2 * gap + label_height
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top = gap + label_height
    numbers = _cell_texts(panels, cell, draw)
    x0 = gap
    for p, label, texts in zip(panels, labels, numbers):
        rgb = diverging_rgb(p, scale, signed)
        block = Image.fromarray(np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1), "RGB")
        image.paste(block, (x0, top))
        draw.rectangle([x0 - 1, top - 1, x0 + p.shape[1] * cell, top + p.shape[0] * cell], outline=(90, 90, 90))
        if label:
            draw.text((x0, gap - 2), label, fill=(40, 40, 40), font=font)
        for (i, j), (text, tw, th) in texts.items():
            draw.text((x0 + j * cell + (cell - tw) // 2, top + i * cell + (cell - th) // 2), text,
                      fill=(0, 0, 0), font=_font(max(cell // 3, 8)))
        x0 += p.shape[1] * cell + gap
    _colour_bar(draw, image, x0 + 4, top, max(grid_height, 120), scale, signed, font)
    return image


def _cell_texts(panels, cell: int, draw) -> list[dict]:
    """Per panel, ``{(i, j): (text, width, height)}`` for every value, or nothing if any would not fit its cell."""
    font = _font(max(cell // 3, 8))
    out = []
    for p in panels:
        texts = {}
        for (i, j), v in np.ndenumerate(p):
            text = f"{v:.3g}" if v != 0 else "0"
            box = draw.textbbox((0, 0), text, font=font)
            tw, th = box[2] - box[0], box[3] - box[1]
            if tw > cell - 4 or th > cell - 4:
                return [{} for _ in panels]  # numbers everywhere or nowhere: never overlapping
            texts[(i, j)] = (text, tw, th)
        out.append(texts)
    return out


def _colour_bar(draw, image, x: int, top: int, height: int, scale: float, signed: bool, font) -> None:
    """A vertical ramp of the cell colours from the largest weight (top) to the smallest, with its values."""
    from PIL import Image

    low = -scale if signed else 0.0
    values = np.linspace(scale, low, height)[:, None]
    ramp = diverging_rgb(np.repeat(values, 14, axis=1), scale, signed)
    image.paste(Image.fromarray(ramp, "RGB"), (x, top))
    draw.rectangle([x - 1, top - 1, x + 14, top + height], outline=(90, 90, 90))
    ticks = [(scale, top), (low, top + height - 12)]
    if signed:
        ticks.append((0.0, top + height // 2 - 6))
    for value, y in ticks:
        draw.text((x + 18, y), f"{value:.3g}" if value else "0", fill=(40, 40, 40), font=font)


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
    kilo = bool(rate) and fmax >= 2000
    for f in nice_ticks(fmax):
        x, _ = xy(f, lo)
        draw.line([x, top, x, height - bottom], fill=(225, 225, 225))
        label = f"{f / 1000:g}" if kilo else f"{f:g}"
        box = draw.textbbox((0, 0), label, font=font)
        draw.text((x - (box[2] - box[0]) // 2, height - bottom + 6), label, fill=(60, 60, 60), font=font)
    unit = " (kHz)" if kilo else " (Hz)" if rate else " (cycles/sample)"
    draw.text((width // 2 - 40, height - 18), "frequency" + unit, fill=(60, 60, 60), font=font)
    draw.rectangle([left, top, width - right, height - bottom], outline=(90, 90, 90))
    draw.line([xy(f, d) for f, d in zip(freqs, db)], fill=(200, 30, 40), width=2)
    return image


def nice_ticks(top: float, most: int = 7) -> list[float]:
    """Round tick values from 0 up to ``top``: steps of 1, 2 or 5 times a power of ten, at most ``most`` ticks."""
    if top <= 0:
        return [0.0]
    for power in range(int(np.floor(np.log10(top))) - 1, int(np.ceil(np.log10(top))) + 2):
        for mult in (1, 2, 5):
            step = mult * 10.0 ** power
            if top / step + 1 <= most:
                count = int(np.floor(top / step + 1e-9))
                return [round(i * step, 12) for i in range(count + 1)]
    return [0.0, top]


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
