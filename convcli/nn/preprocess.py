"""From a photo file to the network's input, exactly as the classifier expects it.

1. Open with Pillow, refusing headers over the pixel limit before decoding.
2. Apply the EXIF orientation, so the picture is upright.
3. Convert to 8-bit RGB: alpha composited on white, 16-bit samples scaled
   to 8 bits (``round(v / 257)``), grey expanded to three channels.
4. Centre-crop a square of side ``int(min(W, H) * 224 / 256)`` whose corner
   is ``((W - side + 1) // 2, (H - side + 1) // 2)``.
5. Resize to 224x224 with Pillow's bicubic filter.
6. ``x = (pixel - 127) / 128``, laid out ``(3, 224, 224)``.
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

INPUT_SIZE = 224
CROP_FRACTION = 224 / 256
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold; convcli refuses where Pillow warns


@dataclass
class Photo:
    """An upright 8-bit RGB picture ``(H, W, 3)`` and the square the network looks at."""

    rgb: np.ndarray
    box: tuple[int, int, int, int]  # left, top, right, bottom of the centre crop


def center_crop_box(width: int, height: int, fraction: float = CROP_FRACTION) -> tuple[int, int, int, int]:
    """The centred square the classifier sees: ``(left, top, right, bottom)``."""
    side = max(int(min(width, height) * fraction), 1)
    left = (width - side + 1) // 2
    top = (height - side + 1) // 2
    return left, top, left + side, top + side


def open_photo(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode an image file's bytes into an upright RGB :class:`Photo`, or raise :class:`DataError`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
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
    return Photo(rgb, center_crop_box(rgb.shape[1], rgb.shape[0]))


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


def network_input(photo: Photo, size: int = INPUT_SIZE) -> np.ndarray:
    """The crop resized to ``size`` x ``size`` (bicubic) and scaled to ``(pixel - 127) / 128``: ``(3, size, size)``."""
    from PIL import Image

    crop = Image.fromarray(photo.rgb).crop(photo.box)
    resized = np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return ((resized - 127.0) / 128.0).transpose(2, 0, 1).copy()
