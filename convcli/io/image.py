"""Images through Pillow: PNG, JPEG, BMP, WebP, GIF, PPM/PGM and TIFF pages, in their own bit depth and mode.

Samples are read in their stored type: uint8 for modes 1/L/LA/RGB/RGBA/CMYK
(mode 1 as 0/255, palettes expanded to RGB or RGBA), uint16 for 16-bit grey
(and 16-bit colour PNG through :mod:`convcli.io.png16`), int32 for mode I,
float32 for mode F.  Colour and alpha are the last axis.  The EXIF
orientation is applied (and the tag dropped) unless ``auto_orient=False``; the
ICC profile, DPI and EXIF travel in ``meta`` to the writer, which puts them
back where the output format allows.

Pillow's decompression-bomb guard stays on and is stricter: the pixel count is
checked from the header, before decoding, against ``max_pixels``.

TIFF files are read and written by :mod:`convcli.io.tiff`, which hands a
single page to :func:`image_signal` and :func:`write_image`.
"""
from __future__ import annotations

import contextlib
import warnings

from ..errors import DataError, OutputError, UsageError
from . import formats

# Pillow mode -> (numpy sample type, channels) of the samples convcli works on.
MODE_SAMPLES = {
    "1": ("uint8", 1), "L": ("uint8", 1), "LA": ("uint8", 2), "RGB": ("uint8", 3), "RGBA": ("uint8", 4),
    "CMYK": ("uint8", 4), "I;16": ("uint16", 1), "I;16S": ("int16", 1), "I": ("int32", 1), "F": ("float32", 1),
    "LA;16": ("uint16", 2), "RGB;16": ("uint16", 3), "RGBA;16": ("uint16", 4),
}
MODES_WITH_ALPHA = {"LA", "RGBA", "LA;16", "RGBA;16"}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "webp": "WEBP", "gif": "GIF", "pnm": "PPM"}


@contextlib.contextmanager
def pillow_errors(subject: str, limits):
    """Map everything Pillow raises on a bad file to one DataError; keep its bomb guard at our limit."""
    from PIL import Image, UnidentifiedImageError

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's guard fired while opening (set to our limit): report it in our words.
        import re

        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise DataError(
            f"{pixels} is over the limit of {limits.max_pixels:,} "
            "(a possible decompression bomb; raise it with --max-pixels)",
            subject=subject,
        ) from None
    except UnidentifiedImageError:
        raise DataError("not a readable image (unrecognised or corrupt data)", subject=subject) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
            OverflowError, __import__("struct").error) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text or isinstance(exc, EOFError):
            text = f"truncated or corrupt image ({text})"
        raise DataError(f"cannot decode the image: {text}", subject=subject) from None
    except MemoryError:
        raise DataError("the image is too large to decode in memory", subject=subject) from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def read_image(source, fmt: str, *, limits, kind=None, key=None, auto_orient=True, stream=False):
    """Reader for the image formats but TIFF (:mod:`convcli.io.tiff`): the first frame, in its own mode."""
    from . import png16

    if kind in ("signal", "audio"):
        raise UsageError(f"an image file cannot be read as {kind}", subject="--kind")
    if fmt == "png" and png16.wants_png16(source.head(64)):
        if kind == "volume":
            raise UsageError("a PNG image cannot be read as a volume", subject="--kind")
        return _read_png16(source, limits)
    with pillow_errors(source.name, limits):
        from PIL import Image

        png_stream = _png_pixel_stream(source) if fmt == "png" and kind in (None, "image") else None
        with source.open() as fh, Image.open(fh) as im:
            limits.check_pixels(im.width, im.height, source.name)
            frames = getattr(im, "n_frames", 1)
            if kind == "volume":
                raise UsageError(f"a {fmt.upper()} image cannot be read as a volume", subject="--kind")
            return image_signal(im, fmt, frames, source.name, limits, auto_orient, source.head(4096), png_stream)


OPENCV_PNG_PIXELS = 1 << 22  # from about 4 megapixels the faster decode pays for importing OpenCV


def _png_pixel_stream(source) -> bytes | None:
    """An 8-bit grey/RGB/RGBA PNG's pixel chunks for OpenCV to decode (see png.pixel_stream), else None.

    OpenCV (libpng) decodes a 4K photo in 0.16 s where Pillow takes 0.19 s
    and two copies more (0.23-0.27 s); the samples are the same.  Importing
    OpenCV costs about 35-70 ms, so a small image takes that route only when
    OpenCV is loaded already.
    """
    import struct
    import sys

    from . import png

    head = source.head(33)
    if len(head) < 33 or head[24] != 8 or head[25] not in png.OPENCV_CHANNELS:
        return None
    width, height = struct.unpack(">II", head[16:24])
    if width * height < OPENCV_PNG_PIXELS and "cv2" not in sys.modules:
        return None
    with source.open() as fh:
        return png.pixel_stream(fh.read())


def image_signal(im, fmt: str, frames: int, subject: str, limits, auto_orient: bool, head: bytes = b"",
                 png_stream: bytes | None = None, *, stored_mode: str | None = None, spacing_of=None):
    """The Signal of an open Pillow image's first frame, with the metadata a writer puts back.

    `stored_mode` is the mode of the stored samples where Pillow's own says
    less (a TIFF's signed 16-bit page opens as ``I``); `spacing_of(image)`
    gives the pixel size the format states, asked of the image as finally
    decoded (None: the format states none).
    """
    import numpy as np
    from PIL import Image, ImageOps

    meta = {"format": fmt}
    if frames > 1:
        meta["frames"] = frames
        meta["first_frame_only"] = True
    info = dict(im.info)
    if png_stream is not None and frames == 1:
        # Everything Pillow would read on loading is already in im.info (only
        # pixels follow the first IDAT): read the EXIF without decoding them.
        exif = Image.Image.getexif(im)
    else:
        png_stream = None
        exif = im.getexif() if hasattr(im, "getexif") else None
    orientation = exif.get(0x0112, 1) if exif else 1
    mode = stored_mode or im.mode
    if fmt == "pnm" and mode == "I":
        mode = "I;16"  # Pillow opens 16-bit PGM as 32-bit I; its samples are 16-bit
    if fmt == "webp":
        meta["lossless"] = _webp_lossless(head)
    channels = MODE_SAMPLES.get(_normal_mode(mode, im), (None, 3))[1]
    limits.check_samples((im.height, im.width, channels), 4, subject)
    if png_stream is not None and mode in ("L", "RGB", "RGBA") and not (auto_orient and orientation not in (1, None)):
        from . import png

        pixels = png.decode_with_opencv(png_stream, im.width, im.height)
        if pixels is not None:
            return _signal_of(pixels, mode, meta, info, exif, fmt, auto_orient, im, spacing_of)
    im.load()
    if auto_orient and orientation not in (1, None):
        im = ImageOps.exif_transpose(im)  # upright pixels, Orientation tag removed
        meta["oriented"] = int(orientation)
        exif = im.getexif()
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in info or (im.palette and im.palette.mode == "RGBA")
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        mode = "I;16"
    elif mode == "LA" or mode == "La":
        im = im.convert("LA") if mode == "La" else im
    elif mode in ("RGBa", "RGBX"):
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode not in MODE_SAMPLES:
        raise DataError(f"unsupported image mode {mode}", subject=subject)
    mode = im.mode if mode not in ("1", "I;16", "I;16S") else mode
    if mode == "1":
        data = np.where(np.asarray(im, dtype=bool), np.uint8(255), np.uint8(0))
    else:
        data = np.asarray(im)
        dtype = np.dtype(MODE_SAMPLES[mode][0])
        data = np.array(data, dtype=dtype, order="C", copy=True)  # native order, writable
    return _signal_of(data, mode, meta, info, exif, fmt, auto_orient, im, spacing_of)


def _signal_of(data, mode: str, meta: dict, info: dict, exif, fmt: str, auto_orient: bool, im, spacing_of=None):
    """The Signal of decoded samples, with the metadata a writer puts back."""
    from .signal import Signal

    meta["mode"] = mode
    meta["dtype"] = str(data.dtype)
    meta["alpha"] = mode in MODES_WITH_ALPHA
    if info.get("icc_profile"):
        meta["icc_profile"] = info["icc_profile"]
    if info.get("dpi"):
        meta["dpi"] = tuple(float(v) for v in info["dpi"])
    if exif and fmt in ("jpeg", "webp", "png"):  # a TIFF's "EXIF" is its own tag directory: never copied
        if auto_orient:
            exif.pop(0x0112, None)  # the pixels are upright now
        if len(exif):
            meta["exif"] = exif.tobytes()
    spacing = spacing_of(im) if spacing_of is not None else None
    return Signal(data=data, kind="image", channel_axis=-1 if data.ndim == 3 else None, spacing=spacing, meta=meta)


def _webp_lossless(head: bytes) -> bool:
    """True when a WebP holds a lossless (VP8L) bitstream: written back losslessly too."""
    return b"VP8L" in head[12:4096] and b"VP8 " not in head[12:4096]


def _normal_mode(mode: str, im) -> str:
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return "I;16"
    if mode in ("P", "PA"):
        return "RGBA" if mode == "PA" or "transparency" in im.info else "RGB"
    return mode


def _read_png16(source, limits):
    from . import png16
    from .signal import Signal

    with source.open() as fh:
        raw = fh.read()
    data, info = png16.decode(raw, source.name, limits)
    channels = data.shape[2]
    mode = png16.MODES[channels]
    meta = {"format": "png", "mode": mode, "dtype": "uint16", "alpha": mode in MODES_WITH_ALPHA}
    if info.get("icc_profile"):
        meta["icc_profile"] = info["icc_profile"]
    if info.get("dpi"):
        meta["dpi"] = info["dpi"]
    if info.get("transparency_dropped"):
        meta["transparency_dropped"] = True
    return Signal(data=data, kind="image", channel_axis=-1, meta=meta)


# ---- writing -------------------------------------------------------------------------------


def _mode_for(channels: int, dtype, meta_mode: str | None) -> str:
    """The Pillow-style mode of samples with `channels` of `dtype`, preferring the input's mode."""
    import numpy as np

    if meta_mode in MODE_SAMPLES and MODE_SAMPLES[meta_mode][1] == channels:
        return meta_mode
    dtype = np.dtype(dtype)
    if dtype == np.uint16:
        return {1: "I;16", 2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels]
    if channels == 1:
        return {"i": "I", "f": "F"}.get(dtype.kind, "L")
    return {2: "LA", 3: "RGB", 4: "RGBA"}[channels]


def _fit_mode(mode: str, fmt: str, notes: list[str]) -> str:
    """The nearest mode `fmt` can store, noting any loss."""
    allowed = formats.get(fmt).modes
    if mode in allowed:
        return mode
    channels = MODE_SAMPLES[mode][1]
    wide = mode.endswith(";16") or mode in ("I", "F", "I;16", "I;16S")
    alpha = mode in MODES_WITH_ALPHA
    candidates = []
    if channels == 1:
        candidates = ["I;16", "L"] if wide else ["L"]
    elif mode == "CMYK":
        candidates = ["RGB"]
    else:
        base = "L" if channels <= 2 else "RGB"
        if alpha:
            candidates += [base + "A;16", base + "A"] if wide else [base + "A"]
        candidates += [base + ";16", base] if wide else [base]
        candidates += ["RGBA", "RGB"] if base == "L" else []
    for candidate in candidates + ["RGB", "L"]:
        if candidate in allowed:
            what = []
            if alpha and candidate not in MODES_WITH_ALPHA:
                what.append("alpha dropped")
            if wide and MODE_SAMPLES[candidate][0] == "uint8":
                what.append("reduced to 8 bits")
            if mode == "CMYK":
                what.append("CMYK converted to RGB")
            notes.append(f"{fmt.upper()} cannot store mode {mode}: written as {candidate}"
                         + (f" ({', '.join(what)})" if what else ""))
            return candidate
    raise AssertionError(f"no mode for {fmt}")  # every format allows L or RGB


# zlib level for PNG when none is asked for.  convcli.io.png deflates with
# zlib-ng, whose level 1 is a quick mode with fixed Huffman codes: the blurred 4K
# photo of the benchmark takes 0.06 s at level 1 but 8.0 MB, 0.08 s at 2 (4.8 MB),
# 0.11 s at 3 (4.2 MB) on one core (Pillow/zlib at 1: 0.47 s, 5.5 MB).  Level 2
# costs 0.02 s more than 1 for 40 % less; --compress-level 6..9 trades more time
# for smaller files.  With the standard library's zlib (zlib-ng missing) level 2
# is 0.17 s, 5.1 MB.
PNG_COMPRESS_LEVEL = 2
# Modes written by convcli.io.png (numpy filtering, deflate in parallel bands:
# 0.3 s on one core for that photo at level 1, 4.2 MB) rather than Pillow; mode 1 stays with Pillow.
PNG_DIRECT_MODES = {"L", "LA", "RGB", "RGBA", "I;16", "LA;16", "RGB;16", "RGBA;16"}


def write_image(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip"):
    """Writer for every image format: samples converted by to_samples, mode and metadata kept where possible."""
    import numpy as np

    from .files import atomic_path
    from .signal import Written

    data = np.asarray(sig.data)
    spatial = sig.spatial_ndim
    if spatial != 2:
        raise OutputError(
            f"a {spatial}-D {sig.kind} of shape {data.shape} cannot be written as an image; "
            "use .npy" + (", .tif or .nii" if spatial == 3 else ""),
            subject=dest,
        )
    channels = 1 if sig.channel_axis is None else data.shape[-1]
    if channels > 4:
        raise OutputError(f"{channels} channels cannot be written as an image; use .npy", subject=dest)
    if data.ndim == 3 and channels == 1:
        data = data[:, :, 0]
    meta = sig.meta
    notes: list[str] = []
    stored = meta.get("dtype")
    source_dtype = np.dtype(stored) if stored else (data.dtype if data.dtype.kind in "iu" else np.dtype(np.uint8))
    mode = _mode_for(channels, source_dtype, meta.get("mode"))
    out_mode = _fit_mode(mode, fmt, notes)
    samples, clipped = _to_mode_samples(data, mode, out_mode, range_mode)
    if fmt == "gif" and meta.get("first_frame_only"):
        notes.append("only the first frame of the animation was filtered and written")
    level = PNG_COMPRESS_LEVEL if compress_level is None else int(compress_level)
    with atomic_path(dest) as tmp:
        if fmt == "png" and out_mode in PNG_DIRECT_MODES:
            from . import png

            exif = meta.get("exif") if MODE_SAMPLES[out_mode][0] == "uint8" else None
            with open(tmp, "wb") as fh:
                png.write(fh, samples, compress_level=level, icc_profile=meta.get("icc_profile"),
                          dpi=meta.get("dpi"), exif=exif)
        else:
            _save_pillow(samples, out_mode, fmt, tmp, meta, compress_level, dest)
    return Written(path=dest, format=fmt, clipped=clipped, notes=notes)


def _to_mode_samples(data, mode: str, out_mode: str, range_mode: str):
    """Filtered values in `mode`'s units -> samples of `out_mode` (clipping counted once)."""
    import numpy as np

    from .samples import to_samples

    src_dtype = np.dtype(MODE_SAMPLES[mode][0])
    dst_dtype = np.dtype(MODE_SAMPLES[out_mode][0])
    if mode == "CMYK" and out_mode == "RGB":
        cmyk, clipped = to_samples(data, np.uint8, range_mode)
        from PIL import Image

        return np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB")), clipped
    values = data
    if MODE_SAMPLES[out_mode][1] < MODE_SAMPLES[mode][1]:
        values = values[..., : MODE_SAMPLES[out_mode][1]] if MODE_SAMPLES[out_mode][1] > 1 else values[..., 0]
    alpha = mode in MODES_WITH_ALPHA and out_mode in MODES_WITH_ALPHA  # opacity is never offset or stretched
    if src_dtype == dst_dtype or dst_dtype.kind == "f" or {src_dtype.name, dst_dtype.name} != {"uint8", "uint16"}:
        # Same units (int32 or int16 into uint16 is a clip, not a rescale).
        return to_samples(values, dst_dtype, range_mode, alpha=alpha)
    if src_dtype.kind == "f":
        # Float samples into an integer format: the values are taken in the
        # output's own units (use --range rescale to map any range onto it).
        return to_samples(values, dst_dtype, range_mode, alpha=alpha)
    # Integer to a narrower or wider integer format: convert in the input's
    # units first (so clipping means what it says), then scale full range to full range.
    samples, clipped = to_samples(values, src_dtype, range_mode, alpha=alpha)
    src_max = float(np.iinfo(src_dtype).max)
    dst_max = float(np.iinfo(dst_dtype).max)
    scaled = np.rint(np.clip(samples.astype(np.float64), 0, None) * (dst_max / src_max))
    return np.clip(scaled, 0, dst_max).astype(dst_dtype), clipped


def _save_pillow(samples, mode: str, fmt: str, path: str, meta: dict, compress_level, dest: str) -> None:
    import numpy as np
    from PIL import Image

    if mode == "1":
        im = Image.fromarray(samples, "L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    elif mode in ("I;16", "I;16S", "I", "F"):
        im = Image.fromarray(np.ascontiguousarray(samples))  # Pillow names these from the dtype
    else:
        im = Image.fromarray(samples, mode)
    options = {}
    if meta.get("icc_profile") and fmt in ("png", "jpeg", "tiff", "webp"):
        options["icc_profile"] = meta["icc_profile"]
    if meta.get("dpi") and fmt in ("png", "jpeg", "tiff", "bmp"):
        options["dpi"] = tuple(float(v) for v in meta["dpi"])
    if meta.get("exif") and fmt in ("jpeg", "webp", "png"):
        options["exif"] = meta["exif"]
    if fmt == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL if compress_level is None else int(compress_level)
    if fmt == "jpeg":
        options["quality"] = 95
    if fmt == "webp":
        options.update(lossless=True) if meta.get("lossless") else options.update(quality=95)
    if fmt == "tiff" and compress_level is not None and int(compress_level) > 0:
        options["compression"] = "tiff_adobe_deflate"
    try:
        im.save(path, format=PIL_FORMAT[fmt], **options)
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"cannot write this image as {fmt.upper()}: {exc}", subject=dest) from None
