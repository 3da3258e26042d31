"""Images through Pillow: PNG, JPEG, BMP, WebP, GIF and PPM/PGM, in their own bit depth and mode, every frame.

Samples are read in their stored type: uint8 for modes 1/L/LA/RGB/RGBA/CMYK
(mode 1 as 0/255, palettes expanded to RGB or RGBA), uint16 for 16-bit grey
(and 16-bit colour PNG through :mod:`convcli.io.png16`), int32 for mode I,
float32 for mode F.  Colour and alpha are the last axis.  The EXIF
orientation is applied (and the tag dropped) unless ``auto_orient=False``; the
ICC profile, DPI, EXIF, XMP, a JPEG's quantisation tables, chroma subsampling
and comment, and a PNG's other chunks (text, colour space) travel in
``meta`` to the writer, which puts them back where the output format allows.

An animated GIF, WebP or PNG is read whole: every frame, composed as a
viewer shows it, along a first axis of frames (``Signal.frames``), with the
frame durations, loop count and disposal in ``meta["animation"]``; the
writer writes every frame back with them.

Pillow's decompression-bomb guard stays on and is stricter: the pixel count is
checked from the header, before decoding, against ``max_pixels``, and the
frames of an animation against the memory budget.

TIFF is :mod:`convcli.io.tiff`'s (tifffile).
"""
from __future__ import annotations

import contextlib
import warnings

from ..errors import DataError, FormatMismatch, OutputError, UsageError
from . import formats

# Pillow mode -> (numpy sample type, channels) of the samples convcli works on.
MODE_SAMPLES = {
    "1": ("uint8", 1), "L": ("uint8", 1), "LA": ("uint8", 2), "RGB": ("uint8", 3), "RGBA": ("uint8", 4),
    "CMYK": ("uint8", 4), "I;16": ("uint16", 1), "I;16S": ("int16", 1), "I": ("int32", 1), "F": ("float32", 1),
    "LA;16": ("uint16", 2), "RGB;16": ("uint16", 3), "RGBA;16": ("uint16", 4),
}
MODES_WITH_ALPHA = {"LA", "RGBA", "LA;16", "RGBA;16"}
PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "webp": "WEBP", "gif": "GIF", "pnm": "PPM"}
DEFAULT_QUALITY = 90  # JPEG/WebP output when neither --quality nor a JPEG input says otherwise
MAX_SIDE = {"webp": 16383, "jpeg": 65535, "gif": 65535}  # the formats' own limits on a side


@contextlib.contextmanager
def pillow_errors(subject: str, limits):
    """Map everything Pillow raises on a bad file to one DataError; keep its bomb guard at our limit."""
    from PIL import Image, UnidentifiedImageError

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        # Pillow warns of damaged metadata ("Truncated File Read", "Tag data larger than file")
        # on stderr with its own source line; kept here, the reader makes them a note of ours.
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield warned
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
    """Reader for the image formats but TIFF (:mod:`convcli.io.tiff`): every frame, in its own mode."""
    from . import png16

    if kind in ("signal", "audio"):
        raise UsageError(f"an image file cannot be read as {kind}", subject="--kind")
    if kind == "volume":
        raise UsageError(f"a {fmt.upper()} image cannot be read as a volume", subject="--kind")
    chunks = _png_chunks(source) if fmt == "png" else None
    if fmt == "png" and png16.wants_png16(source.head(64)):
        if chunks is not None and chunks[2]:
            raise DataError("16-bit animated PNGs are not supported (only their first frame could be read)",
                            subject=source.name)
        return _with_chunks(_read_png16(source, limits), chunks)
    with pillow_errors(source.name, limits) as warned:
        from PIL import Image

        png_stream = _png_pixel_stream(source) if fmt == "png" else None
        with source.open() as fh, Image.open(fh) as im:
            limits.check_pixels(im.width, im.height, source.name)
            jpeg = _jpeg_meta(im) if fmt == "jpeg" else {}
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                sig = _read_frames(im, fmt, frames, source.name, limits, source.head(4096))
            else:
                sig = image_signal(im, fmt, source.name, limits, auto_orient, source.head(4096), png_stream)
    sig.meta.update(jpeg)
    if warned:
        sig.meta["metadata_damaged"] = " ".join(str(warned[0].message).split())[:200]
    return _with_chunks(sig, chunks)


def _png_chunks(source):
    """A PNG's other chunks (see png.other_chunks): (kept, dropped names, animated)."""
    from . import png

    with source.open() as fh:
        return png.other_chunks(fh)


def _with_chunks(sig, chunks):
    if chunks is not None:
        kept, dropped, _ = chunks
        if kept:
            sig.meta["png_chunks"] = kept
        if dropped:
            sig.meta["png_dropped"] = dropped
    return sig


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


def image_signal(im, fmt: str, subject: str, limits, auto_orient: bool, head: bytes = b"",
                 png_stream: bytes | None = None):
    """The Signal of an open single-frame Pillow image, with the metadata a writer puts back."""
    import numpy as np
    from PIL import Image, ImageOps

    meta = {"format": fmt}
    info = dict(im.info)
    if png_stream is not None:
        # Everything Pillow would read on loading is already in im.info (only
        # pixels follow the first IDAT): read the EXIF without decoding them.
        exif = Image.Image.getexif(im)
    else:
        exif = im.getexif() if hasattr(im, "getexif") else None
    orientation = exif.get(0x0112, 1) if exif else 1
    mode = im.mode
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
            return _signal_of(pixels, mode, meta, info, exif, fmt, auto_orient)
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
    elif mode == "La":
        im = im.convert("LA")
    elif mode in ("RGBa", "RGBX"):
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode not in MODE_SAMPLES:
        raise DataError(f"unsupported image mode {mode}", subject=subject)
    mode = im.mode if mode not in ("1", "I;16") else mode
    if mode == "1":
        data = np.where(np.asarray(im, dtype=bool), np.uint8(255), np.uint8(0))
    else:
        dtype = np.dtype(MODE_SAMPLES[mode][0])
        data = np.array(np.asarray(im), dtype=dtype, order="C", copy=True)  # native order, writable
    return _signal_of(data, mode, meta, info, exif, fmt, auto_orient)


def _signal_of(data, mode: str, meta: dict, info: dict, exif, fmt: str, auto_orient: bool, frames: bool = False):
    """The Signal of decoded samples, with the metadata a writer puts back."""
    from .signal import Signal

    meta["mode"] = mode
    meta["dtype"] = str(data.dtype)
    meta["alpha"] = mode in MODES_WITH_ALPHA
    if info.get("icc_profile"):
        meta["icc_profile"] = info["icc_profile"]
    if info.get("dpi"):
        meta["dpi"] = tuple(float(v) for v in info["dpi"])
    if info.get("xmp") and fmt in ("jpeg", "webp"):
        meta["xmp"] = info["xmp"]
    if info.get("comment") and fmt in ("jpeg", "gif"):
        meta["comment"] = info["comment"]
    if exif and fmt in ("jpeg", "webp", "png"):
        if auto_orient and not frames:
            exif.pop(0x0112, None)  # the pixels are upright now
        if len(exif):
            meta["exif"] = exif.tobytes()
    channel_axis = -1 if data.ndim == 3 + int(frames) else None
    return Signal(data=data, kind="image", channel_axis=channel_axis, meta=meta, frames=frames)


def _jpeg_meta(im) -> dict:
    """A JPEG's quantisation tables (written back as they are), its quality, subsampling and progression."""
    from PIL import JpegImagePlugin

    from .jpegq import estimate_quality

    tables = [list(im.quantization[k]) for k in sorted(getattr(im, "quantization", None) or {})]
    meta = {"jpeg": {"qtables": tables, "subsampling": JpegImagePlugin.get_sampling(im),
                     "progressive": bool(im.info.get("progressive") or im.info.get("progression"))}}
    quality = estimate_quality(tables)
    if quality is not None:
        meta["quality"] = quality
    return meta


def _read_frames(im, fmt: str, count: int, subject: str, limits, head: bytes):
    """Every frame of an animation, composed as shown, in one array (frames, rows, columns[, channels])."""
    import numpy as np

    mode = _frames_mode(im, fmt, subject)
    channels = MODE_SAMPLES[mode][1]
    shape = (count, im.height, im.width) + ((channels,) if channels > 1 else ())
    limits.check_samples(shape, 1, subject)
    data = np.empty(shape, dtype=np.uint8)
    animation = {"durations": [], "disposal": []}
    transparent, info = False, {}
    for index in range(count):
        im.seek(index)
        im.load()
        if index == 0:
            info = dict(im.info)
        transparent = transparent or "transparency" in im.info or im.mode in ("RGBA", "PA", "LA")
        data[index] = np.asarray(im.convert(mode))
        animation["durations"].append(im.info.get("duration"))
        animation["disposal"].append(_disposal_name(fmt, im))
    if fmt == "gif" and not transparent:
        data, mode = np.ascontiguousarray(data[..., :3]), "RGB"
    for key in ("loop", "background", "default_image"):
        if info.get(key) is not None and not (fmt == "gif" and key == "background"):
            animation[key] = info[key]
    meta = {"format": fmt, "animation": animation}
    if fmt == "webp":
        meta["lossless"] = _webp_lossless(head)
    from PIL import Image

    exif = Image.Image.getexif(im) if fmt in ("webp", "png") else None
    return _signal_of(data, mode, meta, info, exif, fmt, False, frames=True)


# What happens to a frame's area before the next is drawn, as GIF and APNG number it.
GIF_DISPOSAL = {0: "unspecified", 1: "keep", 2: "background", 3: "previous"}
APNG_DISPOSAL = {0: "keep", 1: "background", 2: "previous"}


def _disposal_name(fmt: str, im) -> str | None:
    if fmt == "gif":
        return GIF_DISPOSAL.get(getattr(im, "disposal_method", None))
    if fmt == "png":
        return APNG_DISPOSAL.get(im.info.get("disposal"))
    return None


def _disposal_codes(fmt: str, names: list) -> list[int] | None:
    """Disposal names as `fmt` numbers them (None: the format has none, or a frame's is unknown)."""
    if fmt == "gif":
        codes = {name: code for code, name in GIF_DISPOSAL.items()}
    elif fmt == "png":
        codes = {name: code for code, name in APNG_DISPOSAL.items()} | {"unspecified": 0}
    else:
        return None
    return [codes[name] for name in names] if all(name in codes for name in names) else None


def _frames_mode(im, fmt: str, subject: str) -> str:
    """The one mode every frame is read in: the file's; a GIF's frames vary, so RGBA (RGB if no frame is clear)."""
    if fmt == "gif":
        return "RGBA"
    mode = im.mode
    if mode in ("P", "PA"):
        return "RGBA" if mode == "PA" or "transparency" in im.info else "RGB"
    if mode in ("L", "LA", "RGB", "RGBA"):
        return mode
    raise DataError(f"unsupported animation mode {mode}", subject=subject)


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


def mode_for(channels: int, dtype, meta_mode: str | None = None) -> str:
    """The Pillow-style mode of samples with `channels` of `dtype`, preferring the input's mode.

    Colour samples of integers wider than 8 bits take the 16-bit modes;
    float colour takes the 8-bit ones (the values taken as they are).
    """
    import numpy as np

    dtype = np.dtype(dtype)
    if meta_mode in MODE_SAMPLES and MODE_SAMPLES[meta_mode][1] == channels and (
            MODE_SAMPLES[meta_mode][0] == dtype.name or dtype.kind not in "iu"):
        return meta_mode
    if channels == 1:
        if dtype.kind == "f":
            return "F"
        return {"uint8": "L", "int8": "L", "uint16": "I;16", "int16": "I;16S"}.get(dtype.name, "I")
    wide = dtype.kind in "iu" and dtype.itemsize > 1
    return {2: "LA", 3: "RGB", 4: "RGBA"}[channels] + (";16" if wide else "")


# Pillow has no 16-bit colour modes, so the frames it writes (animated PNG) hold 8 bits per channel.
WIDE_COLOUR = frozenset({"LA;16", "RGB;16", "RGBA;16"})


def _fit_mode(mode: str, fmt: str, notes: list[str], alpha: bool, frames: bool = False) -> str:
    """The nearest mode `fmt` can store (in frames, if `frames`), noting any loss."""
    allowed = formats.get(fmt).modes - (WIDE_COLOUR if frames else frozenset())
    if mode in allowed:
        return mode
    channels = MODE_SAMPLES[mode][1]
    wide = mode.endswith(";16") or mode in ("I", "F", "I;16", "I;16S")
    candidates = []
    if channels == 1:
        candidates = ["I;16", "L"] if wide else ["L"]
        candidates += ["RGB"]  # grey as three equal channels (WebP has no grey mode)
    elif mode == "CMYK":
        candidates = ["RGB"]
    else:
        base = "L" if channels <= 2 else "RGB"
        if channels in (2, 4):
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
            if channels <= 2 and MODE_SAMPLES[candidate][1] >= 3 and mode != "CMYK":
                what.append("grey stored as RGB")
            where = f"{fmt.upper()} frames" if frames and mode in formats.get(fmt).modes else fmt.upper()
            notes.append(f"{where} cannot store mode {mode}: written as {candidate}"
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
# 0.3 s on one core for that photo at level 1, 4.2 MB) rather than Pillow.
PNG_DIRECT_MODES = {"1", "L", "LA", "RGB", "RGBA", "I;16", "LA;16", "RGB;16", "RGBA;16"}


def write_image(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip", depth=None,
                quality=None):
    """Writer for every image format but TIFF: samples converted by to_samples, mode and metadata kept where possible."""
    import numpy as np

    from .files import atomic_path
    from .signal import Written

    data = np.asarray(sig.data)
    spatial = sig.spatial_ndim
    if spatial != 2:
        raise FormatMismatch(
            f"a {spatial}-D {sig.kind} of shape {data.shape} cannot be written as an image; "
            "use .npy" + (", .tif or .nii" if spatial == 3 else ""),
            subject=dest,
        )
    channels = 1 if sig.channel_axis is None else data.shape[-1]
    if channels > 4:
        raise FormatMismatch(f"{channels} channels cannot be written as an image; use .npy or .tif", subject=dest)
    if sig.channel_axis is not None and channels == 1:
        data = data[..., 0]
    if sig.frames and data.shape[0] == 1:
        data = data[0]
    frames = sig.frames and data.ndim == 3 + int(channels > 1)
    height, width = data.shape[int(frames):int(frames) + 2]
    if fmt in MAX_SIDE and max(height, width) > MAX_SIDE[fmt]:
        raise OutputError(f"{width}x{height} is larger than {fmt.upper()} holds ({MAX_SIDE[fmt]} pixels a side)",
                          subject=dest)
    meta = sig.meta
    notes: list[str] = []
    alpha = bool(meta.get("alpha")) and channels in (2, 4)
    samples, out_mode, clipped = convert(data, channels, meta, fmt, range_mode, depth, notes, alpha, frames)
    level = PNG_COMPRESS_LEVEL if compress_level is None else int(compress_level)
    with atomic_path(dest) as tmp:
        if frames:
            _save_frames(samples, out_mode, fmt, tmp, meta, level, quality, dest, notes)
        elif fmt == "png" and out_mode in PNG_DIRECT_MODES:
            _write_png(tmp, samples, out_mode, meta, level, notes)
        else:
            _save_pillow(samples, out_mode, fmt, tmp, meta, level, quality, dest, notes)
    return Written(path=dest, format=fmt, clipped=clipped, notes=notes)


def convert(data, channels: int, meta: dict, fmt: str, range_mode: str, depth, notes: list[str], alpha: bool,
            frames: bool = False):
    """Filtered values -> (samples, mode written, clipped count), in the input's depth or `depth`, as `fmt` holds them."""
    import numpy as np

    from .samples import depth_type, rescale

    stored = meta.get("dtype")
    source_dtype = np.dtype(stored) if stored else (data.dtype if data.dtype.kind in "iu" else np.dtype(np.uint8))
    mode = mode_for(channels, source_dtype, meta.get("mode"))
    if depth in ("32f", "64f"):
        notes.append(f"--depth {depth}: {fmt.upper()} holds no float samples; written at the input's depth")
        depth = None
    elif depth in ("24", "32"):
        notes.append(f"--depth {depth}: {fmt.upper()} holds at most 16 bits per sample; written as 16-bit")
        depth = "16"
    bilevel_asked = depth == "1"
    if depth is not None:
        target, _ = depth_type(depth, source_dtype)
        data = rescale(data, source_dtype, target)
        mode = mode_for(channels, target)
        if bilevel_asked:
            if channels == 1:
                mode = "1"
            else:
                notes.append("--depth 1 (bilevel) needs one grey channel: written as 8-bit")
                bilevel_asked = False
    wanted = np.dtype(MODE_SAMPLES[mode][0]) if depth is not None else source_dtype
    noted = len(notes)
    out_mode = _fit_mode(mode, fmt, notes, alpha, frames)
    written = np.dtype(MODE_SAMPLES[out_mode][0])
    if len(notes) == noted and written != wanted and not (wanted.kind == "b" or written.kind == wanted.kind == "f"):
        how = " (values taken as they are; --range rescale maps them onto the range)" if wanted.kind == "f" else ""
        notes.append(f"{fmt.upper()} cannot store {wanted.name} samples: written as {written.name}{how}")
    samples, clipped = _to_mode_samples(data, mode, out_mode, range_mode)
    if out_mode == "1" and not bilevel_asked and not np.all((samples == 0) | (samples == 255)):
        notes.append("the result is not black and white: written as 8-bit grey (--depth 1 thresholds it)")
        out_mode = _fit_mode("L", fmt, notes, alpha, frames)
    elif out_mode == "1":
        samples = np.where(samples >= 128, np.uint8(255), np.uint8(0))
    if fmt == "gif" and alpha and out_mode in MODES_WITH_ALPHA and np.any((samples[..., -1] > 0)
                                                                          & (samples[..., -1] < 255)):
        notes.append("GIF transparency is all or nothing: partly transparent pixels were made opaque or clear")
    return samples, out_mode, clipped


def _to_mode_samples(data, mode: str, out_mode: str, range_mode: str):
    """Filtered values in `mode`'s units -> samples of `out_mode` (clipping counted once)."""
    import numpy as np

    from .samples import to_samples

    src_dtype = np.dtype(MODE_SAMPLES[mode][0])
    dst_dtype = np.dtype(MODE_SAMPLES[out_mode][0])
    src_channels, dst_channels = MODE_SAMPLES[mode][1], MODE_SAMPLES[out_mode][1]
    if mode == "CMYK" and out_mode == "RGB":
        cmyk, clipped = to_samples(data, np.uint8, range_mode)
        from PIL import Image

        if cmyk.ndim == 4:  # frames
            return np.stack([np.asarray(Image.fromarray(f, "CMYK").convert("RGB")) for f in cmyk]), clipped
        return np.asarray(Image.fromarray(cmyk, "CMYK").convert("RGB")), clipped
    values = data
    if dst_channels < src_channels:
        values = values[..., :dst_channels] if dst_channels > 1 else values[..., 0]
    alpha = mode in MODES_WITH_ALPHA and out_mode in MODES_WITH_ALPHA  # opacity is never offset or stretched
    samples, clipped = _rescaled_samples(values, src_dtype, dst_dtype, range_mode, alpha)
    if dst_channels > src_channels:
        samples = _more_channels(samples, src_channels, dst_channels, dst_dtype)
    return samples, clipped


def _rescaled_samples(values, src_dtype, dst_dtype, range_mode: str, alpha: bool):
    import numpy as np

    from .samples import to_samples

    if src_dtype == dst_dtype or dst_dtype.kind == "f" or {src_dtype.name, dst_dtype.name} != {"uint8", "uint16"}:
        # Same units (int32 or int16 into uint16 is a clip, not a rescale).
        return to_samples(values, dst_dtype, range_mode, alpha=alpha)
    # Integer to a narrower or wider integer format: convert in the input's
    # units first (so clipping means what it says), then scale full range to full range.
    samples, clipped = to_samples(values, src_dtype, range_mode, alpha=alpha)
    src_max = float(np.iinfo(src_dtype).max)
    dst_max = float(np.iinfo(dst_dtype).max)
    scaled = np.rint(np.clip(samples.astype(np.float64), 0, None) * (dst_max / src_max))
    return np.clip(scaled, 0, dst_max).astype(dst_dtype), clipped


def _more_channels(samples, src: int, dst: int, dtype):
    """Grey (with alpha) samples spread over RGB (and alpha), for a format with no grey mode."""
    import numpy as np

    grey = samples if src == 1 else samples[..., 0]
    parts = [grey, grey, grey]
    if dst == 4:
        opaque = np.full(grey.shape, np.iinfo(dtype).max, dtype=dtype)
        parts.append(samples[..., 1] if src == 2 else opaque)
    return np.stack(parts, axis=-1)


def _write_png(path: str, samples, mode: str, meta: dict, level: int, notes: list[str]) -> None:
    from . import png

    exif = meta.get("exif") if MODE_SAMPLES[mode][0] == "uint8" else None
    _png_notes(meta, notes)
    with open(path, "wb") as fh:
        png.write(fh, samples, compress_level=level, icc_profile=meta.get("icc_profile"), dpi=meta.get("dpi"),
                  exif=exif, bilevel=mode == "1", chunks=meta.get("png_chunks", ()))


def _png_notes(meta: dict, notes: list[str]) -> None:
    if meta.get("png_dropped"):
        notes.append(f"the PNG's {', '.join(meta['png_dropped'])} chunks describe the original samples and were "
                     "not kept")


def _pillow_image(samples, mode: str):
    import numpy as np
    from PIL import Image

    if mode == "1":
        return Image.fromarray(samples, "L").point(lambda v: 255 if v >= 128 else 0).convert(
            "1", dither=Image.Dither.NONE)
    if mode in ("I;16", "I;16S", "I", "F"):
        return Image.fromarray(np.ascontiguousarray(samples))  # Pillow names these from the dtype
    return Image.fromarray(samples, mode)


def _save_options(fmt: str, meta: dict, level: int, quality, notes: list[str]) -> dict:
    """Pillow's save options that keep the input's metadata and compression where `fmt` allows."""
    options = {}
    if meta.get("icc_profile") and fmt in ("png", "jpeg", "webp"):
        options["icc_profile"] = meta["icc_profile"]
    if meta.get("dpi") and fmt in ("png", "jpeg", "bmp"):
        options["dpi"] = tuple(float(v) for v in meta["dpi"])
    if meta.get("exif") and fmt in ("jpeg", "webp", "png"):
        options["exif"] = meta["exif"]
    if meta.get("xmp") and fmt in ("jpeg", "webp"):
        options["xmp"] = meta["xmp"]
    if meta.get("comment") and fmt in ("jpeg", "gif"):
        options["comment"] = meta["comment"]
    if fmt == "png":
        options["compress_level"] = level
        if meta.get("png_chunks"):
            from PIL import PngImagePlugin

            info = PngImagePlugin.PngInfo()
            for kind, body, after in meta["png_chunks"]:
                info.add(bytes(kind), bytes(body), after_idat=after)
            options["pnginfo"] = info
        _png_notes(meta, notes)
    if fmt == "jpeg":
        options.update(_jpeg_options(meta, quality))
    if fmt == "webp":
        if meta.get("lossless") and quality is None:
            options["lossless"] = True
        else:
            options["quality"] = quality or meta.get("quality") or DEFAULT_QUALITY
    return options


def _jpeg_options(meta: dict, quality) -> dict:
    """A JPEG input's own quantisation tables, subsampling and progression; or the quality asked for."""
    jpeg = meta.get("jpeg") or {}
    options = {}
    if quality is None and jpeg.get("qtables") and meta.get("format") == "jpeg":
        options["qtables"] = jpeg["qtables"]
    else:
        options["quality"] = quality or meta.get("quality") or DEFAULT_QUALITY
    if jpeg.get("subsampling", -1) in (0, 1, 2):
        options["subsampling"] = jpeg["subsampling"]
    if jpeg.get("progressive"):
        options["progressive"] = True
    return options


def _save_pillow(samples, mode: str, fmt: str, path: str, meta: dict, level: int, quality, dest: str,
                 notes: list[str]) -> None:
    im = _pillow_image(samples, mode)
    options = _save_options(fmt, meta, level, quality, notes)
    try:
        im.save(path, format=PIL_FORMAT[fmt], **options)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise OutputError(f"cannot write this image as {fmt.upper()}: {exc}", subject=dest) from None


def _save_frames(samples, mode: str, fmt: str, path: str, meta: dict, level: int, quality, dest: str,
                 notes: list[str]) -> None:
    """Every frame through Pillow's save_all, with the input's durations, loop count and disposal."""
    images = [_pillow_image(frame, mode) for frame in samples]
    options = _save_options(fmt, meta, level, quality, notes)
    animation = meta.get("animation") or {}
    count = len(images)

    def per_frame(key):
        values = animation.get(key) or []
        return list(values) if len(values) == count and all(v is not None for v in values) else None

    durations = per_frame("durations")
    if durations is not None:
        options["duration"] = [int(round(d)) for d in durations] if fmt != "png" else list(durations)
    if animation.get("loop") is not None:
        options["loop"] = int(animation["loop"])
    disposal = per_frame("disposal")
    codes = _disposal_codes(fmt, disposal) if disposal is not None else None
    if codes is not None:
        options["disposal"] = codes
    if fmt == "png":
        # The frames are whole pictures, as composed for showing: each replaces the canvas
        # (blending one over the last again would compose its transparent parts twice).
        options["blend"] = [0] * count
    if fmt == "webp" and animation.get("background") is not None:
        options["background"] = tuple(animation["background"])
    try:
        images[0].save(path, format=PIL_FORMAT[fmt], save_all=True, append_images=images[1:], **options)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise OutputError(f"cannot write these frames as {fmt.upper()}: {exc}", subject=dest) from None
