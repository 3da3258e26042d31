"""Photos for the classifier: any image file as upright 8-bit RGB, the way the reference prepares it.

1. Open with Pillow, refusing headers over the pixel limit before decoding.
2. Apply the EXIF orientation, so the picture is upright.
3. Convert to 8-bit RGB: alpha composited on white, 16-bit samples scaled
   to 8 bits (``round(v / 257)``), grey expanded to three channels.

The crop, resize and scaling that follow are the network's
(:mod:`convcli.nn.preprocess`).
"""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np

from ..errors import DataError
from .limits import DEFAULT_MAX_PIXELS

MAX_PHOTO_BYTES = 512 << 20  # a photo file larger than this is refused before it is read


def read_photo(source, max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """The upright RGB samples of the image at ``source`` (a path, or ``-`` for stdin), and its name."""
    from .files import Source

    src = Source.open_input(source, max_bytes=MAX_PHOTO_BYTES)
    if src.data is not None:
        data = src.data
    else:
        if src.size > MAX_PHOTO_BYTES:
            raise DataError(f"is {src.size:,} bytes; image files over {MAX_PHOTO_BYTES:,} bytes are refused",
                            subject=src.name)
        with src.open() as fh:
            try:
                data = fh.read(MAX_PHOTO_BYTES + 1)
            except OSError as exc:
                raise DataError(exc.strerror or str(exc), subject=src.name) from None
    return decode_photo(data, src.name, max_pixels), src.name


def decode_photo(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file's bytes into upright 8-bit RGB ``(H, W, 3)``, or raise :class:`DataError`."""
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged EXIF: classifying needs the pixels only
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise DataError(
                    f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
                    "(a possible decompression bomb)", subject=name,
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = to_rgb8(image)
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError("not an image (Pillow cannot identify the format)", subject=name) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"refused as a possible decompression bomb: {exc}", subject=name) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
            ZeroDivisionError, struct.error) as exc:
        # Pillow's decoders report damaged data with a variety of exception types.
        raise DataError(f"corrupt or unreadable image ({exc or type(exc).__name__})", subject=name) from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise DataError("the image is empty", subject=name)
    return rgb


def to_rgb8(image) -> np.ndarray:
    """Any Pillow image as ``(H, W, 3)`` uint8 RGB, following the rules of this module."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (Pillow opens some as 32-bit "I"): scale, do not clip.
        v = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        grey = ((v + 128) // 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        # Float grey, read on the 8-bit scale as Pillow converts it; NaN has no grey level.
        values = np.asarray(image, dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ValueError(f"{bad} of {values.size} samples are NaN or infinite")
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
        return composite_on_white(rgba)
    if mode == "L":
        grey = np.asarray(image, dtype=np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``round((c * a + 255 * (255 - a)) / 255)`` per channel: the picture laid on a white page."""
    rgba = rgba.astype(np.uint32)
    alpha = rgba[..., 3:4]
    rgb = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return rgb.astype(np.uint8)
