"""How filtered float values become output samples: the one place that owns the dtype policy.

A filter computes in float; a file stores uint8, uint16, int16, 24-bit PCM, ...
:func:`to_samples` maps one onto the other under a ``--range`` mode:

========  ==================================================================
clip      round half to even, then clip to the type's range (the default)
abs       take the absolute value first (edge magnitudes), then as clip
offset    add the middle of the range (128, 32768; 0 for signed types) so
          negative responses stay visible, then as clip
rescale   map the result's min..max linearly onto the type's full range
========  ==================================================================

An image's alpha channel is opacity, already in sample units: with
``alpha=True`` it is only rounded and clipped, whatever the mode (an offset
or a stretch of opacity would make transparent pixels half visible).
Integer samples never wrap: every value outside the range is clipped and
counted.  NaN and infinity never reach an integer output; they are refused
with their count.  Float output types keep the raw values whatever the mode.

``--depth`` chooses another sample type than the input's (:func:`depth_type`);
:func:`rescale` brings values from the input's units into it:

=============================  =============================================================
integer -> integer, unsigned    full range onto full range, as ImageMagick's ``-depth``:
                                8 -> 16 multiplies by 257, 16 -> 8 is round(x / 257)
integer -> integer, signed      by a power of two, as PCM audio: 16 -> 24 bits multiplies by 256
integer -> float (32f, 64f)     the values as they are, in the input's units (0..255 for 8-bit
                                input), so that going back to the input's depth is exact
float -> integer                the values as they are, taken in the output's units (use
                                ``--range rescale`` to map any range onto the type)
=============================  =============================================================
"""
from __future__ import annotations

RANGE_MODES = ("clip", "abs", "offset", "rescale")
# --depth values: bits per integer sample (1 = bilevel, held as 0/255 in uint8), or a float type.
DEPTHS = ("1", "8", "16", "24", "32", "32f", "64f")


def check_depth(depth) -> str | None:
    """Refuse a ``--depth`` that is not one of DEPTHS; return it as text (None: the input's depth)."""
    from ..errors import check_choice

    if depth is None:
        return None
    depth = str(depth).lower()
    check_choice(depth, DEPTHS, "depth")
    return depth


def depth_type(depth: str, stored) -> tuple:
    """The sample type and significant bits ``--depth`` asks for: size from `depth`, signedness from `stored`.

    ``"1"`` is bilevel, held as 0/255 in uint8 (bits None: it is an 8-bit
    sample thresholded at mid-grey); ``"24"`` is a 32-bit container with 24
    significant bits.  Float types give (float32 or float64, None).

    >>> depth_type("16", "uint8"), depth_type("24", "int16"), depth_type("32f", "uint8")
    ((dtype('uint16'), None), (dtype('int32'), 24), (dtype('float32'), None))
    """
    import numpy as np

    if depth in ("32f", "64f"):
        return np.dtype(np.float32 if depth == "32f" else np.float64), None
    bits = int(depth)
    signed = np.dtype(stored).kind == "i"
    container = {1: 1, 8: 1, 16: 2, 24: 4, 32: 4}[bits]
    return np.dtype(f"{'i' if signed else 'u'}{container}"), (24 if bits == 24 else None)


def rescale(values, src, dst, *, src_bits: int | None = None, dst_bits: int | None = None):
    """`values` in the units of sample type `src` brought into the units of `dst` (see the module docstring).

    Returns `values` itself when the units are the same (a float type on
    either side, or the same integer range), else a new float64 array.

    >>> import numpy as np
    >>> rescale(np.array([0.0, 1.0, 255.0]), "uint8", "uint16").tolist()
    [0.0, 257.0, 65535.0]
    >>> rescale(np.array([-1.0, 100.0]), "int16", "int32", dst_bits=24).tolist()
    [-256.0, 25600.0]
    """
    import numpy as np

    src, dst = np.dtype(src), np.dtype(dst)
    if src.kind not in "iu" or dst.kind not in "iu":
        return values
    sb = src_bits or np.iinfo(src).bits
    db = dst_bits or np.iinfo(dst).bits
    if (src.kind, sb) == (dst.kind, db):
        return values
    v = np.asarray(values, dtype=np.float64)
    if src.kind == "u" and dst.kind == "u":
        return v * (((1 << db) - 1) / ((1 << sb) - 1))
    scale = 2.0 ** (db - sb)
    if src.kind == "u":  # offset binary (unsigned PCM) into two's complement
        return (v - (1 << (sb - 1))) * scale
    if dst.kind == "u":
        return v * scale + (1 << (db - 1))
    return v * scale


def to_depth(values, stored, depth: str, mode: str = "clip", *, bits: int | None = None, bounds=None):
    """Float results in the units of the `stored` type as samples of ``--depth`` `depth`; return (samples, n_clipped).

    The values are brought into the new type's units by :func:`rescale`,
    then converted by :func:`to_samples`; depth ``"1"`` thresholds the
    8-bit result at mid-grey (0 or 255).  ``bounds`` as in :func:`to_samples`,
    in the `stored` type's units.

    >>> import numpy as np
    >>> to_depth(np.array([0.0, 127.6, 255.0]), "uint8", "16")[0].tolist()
    [0, 32793, 65535]
    >>> to_depth(np.array([10.0, 200.0]), "uint8", "1")[0].tolist()
    [0, 255]
    """
    dst, dst_bits = depth_type(depth, stored)
    if bounds is not None:  # the same conversion as every value's, so they stay the converted values' bounds
        import numpy as np

        bounds = tuple(float(b) for b in np.atleast_1d(rescale(np.array(bounds, dtype=np.float64), stored, dst,
                                                                       src_bits=bits, dst_bits=dst_bits)))
    samples, clipped = to_samples(rescale(values, stored, dst, src_bits=bits, dst_bits=dst_bits), dst, mode,
                                  bits=dst_bits, bounds=bounds)
    if depth == "1":
        import numpy as np

        samples = np.where(samples >= 128, np.uint8(255), np.uint8(0))
    return samples, clipped


def sample_range(dtype, bits: int | None = None) -> tuple[int, int]:
    """The lowest and highest sample of an integer type, or of its low `bits` bits.

    ``bits`` narrows a container type to the precision actually stored
    (24-bit PCM held in int32, 8-bit PCM held in int16).
    """
    import numpy as np

    info = np.iinfo(np.dtype(dtype))
    if bits is None or bits >= info.bits:
        return int(info.min), int(info.max)
    if info.min < 0:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def to_samples(values, dtype, mode: str = "clip", *, bits: int | None = None, alpha: bool = False, bounds=None):
    """Convert float results to samples of `dtype` under a range mode; return (samples, n_clipped).

    Parameters
    ----------
    values : array_like
        Filter results (any real dtype).
    dtype : numpy dtype
        The output sample type.  Float types pass the values through unchanged
        (``mode`` does not apply: float files keep raw values).
    mode : {"clip", "abs", "offset", "rescale"}
        How values are brought into the integer range (see the module docstring).
    bits : int, optional
        Significant bits when fewer than the type holds (e.g. 24 for 24-bit PCM
        kept in int32); the range is then that of a `bits`-bit integer.
    alpha : bool
        The last channel (last axis) is alpha: converted as ``clip``, the mode
        applying to the other channels only.
    bounds : (float, float), optional
        The minimum and maximum ``rescale`` maps onto the type's range, for
        `values` that are one part of a larger result (a chunk): the whole
        result's, so that every part is stretched alike.  By default those
        of `values`.

    Returns
    -------
    samples : numpy.ndarray
        Values of type `dtype`, rounded half to even, never wrapped.
    n_clipped : int
        How many samples lay outside the range and were clipped.

    Raises
    ------
    ParameterError
        An unknown mode (subject ``--range``).
    DataError
        NaN or infinity in values bound for an integer type.

    Examples
    --------
    >>> import numpy as np
    >>> to_samples(np.array([-3.0, 0.5, 1.5, 300.0]), np.uint8, "clip")
    (array([  0,   0,   2, 255], dtype=uint8), 2)
    >>> to_samples(np.array([-3.0, 3.0]), np.uint8, "offset")[0]
    array([125, 131], dtype=uint8)
    >>> to_samples(np.array([[-3.0, 0.0]]), np.uint8, "offset", alpha=True)[0]  # colour -3, transparent
    array([[125,   0]], dtype=uint8)
    """
    import numpy as np

    from ..errors import ParameterError

    if mode not in RANGE_MODES:
        raise ParameterError(
            f"unknown range mode {mode!r}; choose one of {', '.join(RANGE_MODES)}", subject="--range"
        )
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if alpha and mode != "clip" and dtype.kind != "f" and values.ndim >= 1 and values.shape[-1] >= 2:
        colour, clipped = to_samples(values[..., :-1], dtype, mode, bits=bits)
        opacity, more = to_samples(values[..., -1:], dtype, "clip", bits=bits)
        return np.concatenate([colour, opacity], axis=-1), clipped + more
    if dtype.kind == "f":
        # Raw values are kept; one too large for a narrower float type becomes
        # infinity, as IEEE says, without numpy's overflow warning.
        with np.errstate(over="ignore", invalid="ignore"):
            return values.astype(dtype, copy=False), 0
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    if dtype.kind not in "iu":
        raise ParameterError(f"cannot write samples of type {dtype}", subject="dtype")
    if mode == "clip" and bits is None and values.dtype == dtype:
        return values, 0  # already samples of the type (a median picks input samples): nothing to round or clip

    lo, hi = sample_range(dtype, bits)
    # float32 holds every integer only up to 2**24; wider types need float64 so
    # that rounding and the range test are exact.
    work = np.float64 if (hi - lo) > (1 << 24) or values.dtype == np.float64 else np.float32
    # For 64-bit types float(hi) rounds up past the type's range: clip just below it.
    top = float(hi) if float(hi) <= hi else float(np.nextafter(float(hi), 0.0))
    if mode == "rescale" or values.ndim == 0:
        return _whole(values, dtype, mode, work, lo, hi, top, bounds)
    return _in_blocks(values, dtype, mode, work, lo, hi, top)


# Elements converted per block: the scratch buffer (1 MiB of float32) stays in
# cache, and no full-size float temporary is made (a 4K RGB image would need 100 MB).
BLOCK = 1 << 18
# From this many elements the rows are split between threads (numpy releases
# the GIL): a 4K RGB image converts in 25 ms on two cores instead of 40.
PARALLEL = 1 << 22


def _in_blocks(values, dtype, mode: str, work, lo: int, hi: int, top: float, out=None):
    """clip / abs / offset, a block of rows at a time into the output array."""
    import numpy as np

    if out is None:
        out = np.empty(values.shape, dtype=dtype)
    if values.ndim >= 3 and values[0].size > BLOCK:
        # A few large pages or frames first: their rows are the blocks, so the scratch stays small.
        counts = [_in_blocks(values[i], dtype, mode, work, lo, hi, top, out[i])[1] for i in range(values.shape[0])]
        return out, sum(counts)
    height = values.shape[0]
    per_row = max(1, values.size // max(1, height))
    rows = max(1, BLOCK // per_row)
    from ..parallel import map_ordered, thread_count

    spans = max(1, min(thread_count(), height // rows)) if values.size >= PARALLEL else 1
    edges = [height * i // spans for i in range(spans + 1)]
    counts = map_ordered(lambda i: _convert_rows(values, out, edges[i], edges[i + 1], rows, dtype, mode, work, lo, hi,
                                                 top), range(spans))
    return out, sum(counts)


def _convert_rows(values, out, start: int, stop: int, rows: int, dtype, mode, work, lo, hi, top) -> int:
    """Convert values[start:stop] into out[start:stop], `rows` at a time; return the clipped count."""
    import numpy as np

    shift = (lo + hi + 1) / 2  # 128 for uint8, 32768 for uint16, 0 for signed types
    scratch = np.empty((min(rows, max(1, stop - start)),) + values.shape[1:], dtype=work)
    n_clipped = 0
    for r0 in range(start, stop, rows):
        src = values[r0:min(r0 + rows, stop)]
        v = scratch[:src.shape[0]]
        if mode == "abs":
            np.abs(src, out=v, casting="unsafe")
        else:
            np.copyto(v, src, casting="unsafe")
            if mode == "offset":
                v += shift
        np.rint(v, out=v)  # IEEE round half to even
        if v.size:
            low, high = v.min(), v.max()  # NaN propagates through both; infinity shows in one
            if not (np.isfinite(low) and np.isfinite(high)):
                _refuse_non_finite(values, dtype)
            if low < lo or high > hi:
                n_clipped += int(np.count_nonzero(v < lo)) + int(np.count_nonzero(v > hi))
                np.clip(v, lo, top, out=v)
        np.copyto(out[r0:r0 + src.shape[0]], v, casting="unsafe")
    return n_clipped


def clip_to_uint8(values, out) -> int:
    """``to_samples(values, np.uint8, "clip")`` written into `out` (same shape); returns the clipped count.

    The same samples in three passes instead of five when OpenCV is loaded
    (the filter loaded it): numpy's min and max (NaN shows in both), then,
    if no sample clips, OpenCV's ``convertScaleAbs``, whose rounding is
    half to even as ``np.rint``'s (a value in [-0.5, 0) rounds to 0 either
    way).  Anything else takes :func:`to_samples`.
    """
    import sys

    import numpy as np

    cv2 = sys.modules.get("cv2")
    if (cv2 is not None and values.dtype == np.float32 and values.ndim >= 2 and values.size
            and values.flags.c_contiguous and out.flags.c_contiguous and out.dtype == np.uint8):
        low, high = values.min(), values.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            _refuse_non_finite(values, np.dtype(np.uint8))
        if -0.5 <= low and high < 255.5:  # rint keeps every value in 0..255: nothing clips
            cv2.convertScaleAbs(values.reshape(values.shape[0], -1), dst=out.reshape(out.shape[0], -1))
            return 0
    samples, clipped = to_samples(values, np.uint8, "clip")
    out[...] = samples
    return clipped


def _refuse_non_finite(values, dtype):
    import numpy as np

    from ..errors import DataError

    v = np.asarray(values)
    bad = v.size - int(np.count_nonzero(np.isfinite(v))) if v.dtype.kind in "fc" else 0
    raise DataError(
        f"{bad} non-finite sample{'s' if bad != 1 else ''} (NaN or infinity) cannot be "
        f"written as {dtype} (write .npy or a float TIFF to keep them)"
    )


def _whole(values, dtype, mode: str, work, lo: int, hi: int, top: float, bounds=None):
    """The whole array at once: rescale needs its min and max (or the whole result's ``bounds``) first."""
    import numpy as np

    v = np.array(values, dtype=work, copy=True)
    if not np.all(np.isfinite(v)):
        _refuse_non_finite(v, dtype)
    if mode == "abs":
        np.abs(v, out=v)
    elif mode == "offset":
        v += (lo + hi + 1) / 2
    elif mode == "rescale" and v.size:
        vmin, vmax = (float(v.min()), float(v.max())) if bounds is None else bounds
        if vmax > vmin:
            # (v - vmin) / (vmax - vmin) in [0, 1] before stretching, in float64
            # so that the ends land exactly on lo and hi.
            scaled = (v.astype(np.float64) - vmin) * ((hi - lo) / (vmax - vmin)) + lo
            v = scaled.astype(work, copy=False)
    np.rint(v, out=v)  # IEEE round half to even
    n_clipped = int(np.count_nonzero(v < lo)) + int(np.count_nonzero(v > hi))
    np.clip(v, lo, top, out=v)
    return v.astype(dtype), n_clipped
