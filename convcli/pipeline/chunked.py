"""Filter a Zarr array or OME-Zarr image chunk by chunk, as Dask tasks, on this machine or on a cluster.

The kernels are planned once, as for an in-memory run (the same chain,
precision, border and range), and applied lazily to a Dask array over the
input's chunks (:func:`convcli.engine.correlate` of a Dask array: halos from
the neighbours, the border rule only at the true edges).  Each output chunk
is one task that computes its samples, converts them to the output's sample
type and writes them into the partial store beside the destination
(``out.zarr.partial``); only when every chunk is there is the store moved
into place.  An interrupted run leaves the partial store, and ``--resume``
computes only the chunks it lacks (those written are kept, not rewritten).

By default the tasks run on this machine's threads; ``scheduler`` (an
address such as ``tcp://10.0.0.5:8786``) sends them to a Dask distributed
cluster whose workers see the same files.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError, UsageError
from .chain import prepare, resolve_kernels
from .options import FilterOptions

# A chunk's float working copies: its window, the result, the samples written (and the chunk read).
COPIES = 6
# Chunks no larger than this keep both cores busy and progress moving even with a large budget.
MAX_CHUNK_BYTES = 64 << 20


@dataclass
class Chunked:
    """What a chunked run did."""

    steps: list[dict]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    clipped: int
    notes: list[str]


def filter_chunked(source: str, dest: str, options: FilterOptions, *, progress=None) -> Chunked:
    """Filter the Zarr store or large TIFF ``source`` into the Zarr store or tiled BigTIFF ``dest``; see the module docstring.

    ``progress(done, added)`` (as :func:`convcli.parallel.progress_to`'s) hears
    of the chunks to compute, then of each as it is written (with ``--range
    rescale`` every chunk is counted twice: its bounds, then its samples).
    """
    from .. import io
    from ..io import tiff_chunked, zarr as zarr_io
    from .chunked_tiff import refuse_alpha

    image = zarr_io.open_zarr(source) if zarr_io.is_zarr(source) else tiff_chunked.open_tiff(
        source, memory_budget=options.memory_budget)
    refuse_alpha(image, options)
    to_tiff = tiff_chunked.names_tiff(dest)
    if not (zarr_io.names_zarr(dest) or to_tiff):
        raise UsageError(f"a chunked input is written to a Zarr store or a TIFF: name the output NAME.zarr or "
                         f"NAME.tif, not {dest}", subject="--output")
    order = _signal_order(image)
    signal = _placeholder(image, tuple(image.array.shape[i] for i in order))
    kernels = resolve_kernels(options, signal)
    for kernel in kernels:
        if kernel.routing is not None:
            raise DataError(f"a chunked input is not filtered by a multichannel impulse response ({kernel.spec})",
                            subject=source)
    run = prepare(signal, kernels, options)
    chain = run.chain
    y = _lazy_chain(chain, image, order, signal, source, io.memory_budget(options.memory_budget), run.space)
    mode = options.range or kernels[-1].range_default
    strides = dict(zip(image.spatial, chain.strides(run.steps)))
    dtype, convert = samples_of(y, image.array.dtype, options.depth, mode, options.scheduler, progress, source)
    notes = list(image.notes)
    if to_tiff:
        from .chunked_tiff import store_tiff

        clipped, written = store_tiff(y, image, dest, dtype, convert, strides, options, progress)
        notes += written
    else:
        chunks = tuple(c[0] for c in y.chunks)
        array, partial = zarr_io.create_like(image, dest, y.shape, chunks, dtype, strides, resume=options.resume)
        clipped = _store(y, array, convert, options.scheduler, progress)
        zarr_io.finish(partial, dest)
    if image.levels > 1:
        notes.append(f"only level 0 of the input's {image.levels} resolution levels was filtered and written")
    return Chunked(run.steps, tuple(image.array.shape), tuple(y.shape), clipped, notes)


def samples_of(y, stored, depth: str | None, mode: str, scheduler: str | None, progress, source: str):
    """The output's sample type and the function that makes a chunk of ``y`` its samples, as in memory.

    ``stored`` is the input's sample type, ``depth`` the ``--depth`` asked
    (None: the input's).  The function returns (samples, samples clipped),
    as :func:`convcli.io.samples.to_samples` (or ``to_depth``) does for the
    whole array.  ``--range rescale`` into integers needs the whole
    result's minimum and maximum: they are computed first, by one more pass
    over the lazy result (each chunk computed and reduced to its bounds, so
    the memory stays that of the tasks), and every chunk is stretched by them.
    """
    import functools

    import numpy as np

    from ..io.samples import depth_type

    dtype = np.dtype(stored) if depth is None else depth_type(depth, stored)[0]
    bounds = None
    if mode == "rescale" and dtype.kind in "iub":
        bounds = _bounds(y, dtype, scheduler, progress, source)
    return dtype, functools.partial(_samples, stored=np.dtype(stored), depth=depth, mode=mode, bounds=bounds)


def _samples(values, *, stored, depth, mode, bounds):
    from ..io.samples import to_depth, to_samples

    if depth is None:
        return to_samples(values, stored, mode, bounds=bounds)
    return to_depth(values, stored, depth, mode, bounds=bounds)


def _bounds(y, dtype, scheduler: str | None, progress, source: str) -> tuple[float, float]:
    """The minimum and maximum of the lazy result ``y``, computed chunk by chunk; NaN or infinity refused."""
    import dask.array as da
    import numpy as np
    from dask.highlevelgraph import HighLevelGraph

    indices = list(_indices(y))
    name = "convcli-bounds-" + y.name
    dsk = {(name, j, 0): (_block_bounds, (y.name,) + index) for j, index in enumerate(indices)}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[y])
    found = da.Array(graph, name, chunks=((1,) * len(indices), (3,)), dtype=np.float64,
                     meta=np.empty((0, 0), np.float64))
    if progress is not None:
        progress(0, len(indices))
    found = np.asarray(_compute(found, scheduler, progress)).reshape(-1, 3)
    bad = int(found[:, 2].sum())
    if bad:
        raise DataError(f"{bad} non-finite sample{'s' if bad != 1 else ''} (NaN or infinity) in the result cannot "
                        f"be written as {dtype} (a float output type keeps them)", subject=source)
    return float(found[:, 0].min()), float(found[:, 1].max())


def _block_bounds(values):
    import numpy as np

    low, high = float(np.min(values)), float(np.max(values))
    bad = 0 if np.isfinite(low) and np.isfinite(high) else values.size - int(np.count_nonzero(np.isfinite(values)))
    return np.array([[low, high, bad]], dtype=np.float64)


def _signal_order(image) -> list[int]:
    """The input's axes in a Signal's layout: time points, the spatial axes, channels last."""
    axes = image.axes
    return ([i for i, a in enumerate(axes) if a == "t"] + list(image.spatial)
            + [i for i, a in enumerate(axes) if a == "c"])


def plan_chunks(shape, spatial, stored, reach: int, itemsize: int, stored_itemsize: int, threads: int, budget: int):
    """Chunks whose windows fit ``budget`` bytes, or None: near-cubes, whole multiples of the stored chunks.

    Each of ``threads`` tasks holds :data:`COPIES` windows of a chunk and its
    halo of ``reach`` samples a side (a task reads its own window, so nothing
    else waits in memory) and, while reading, the stored chunks its window
    touches, raw and decoded; a chunk is at most :data:`MAX_CHUNK_BYTES`.  Time
    points and channels go one at a time.
    """
    def chunks_of(side: int):
        chunks = []
        for i, n in enumerate(shape):
            if i not in spatial:
                chunks.append(1)
                continue
            c = min(n, side)
            chunks.append(c - c % stored[i] if stored[i] <= c < n else c)  # aligned reads where they fit
        return chunks

    def fits(chunks) -> bool:
        window = size = itemsize
        cover = stored_itemsize  # the stored chunks a window touches, each read and decoded whole
        for i, n in enumerate(chunks):
            reach_here = min(2 * reach, shape[i] - n + 2 * reach) if i in spatial and n < shape[i] else 0
            window *= n + reach_here
            size *= n
            cover *= min(shape[i], (-(-(n + reach_here) // stored[i]) + (i in spatial)) * stored[i])
        return threads * (COPIES * window + 2 * cover) <= budget and size <= MAX_CHUNK_BYTES

    low, high = 0, max(shape[i] for i in spatial)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(chunks_of(middle)):
            low = middle
        else:
            high = middle - 1
    return tuple(chunks_of(low)) if low else None


def _permutation(chain, order, ndim: int) -> list[int]:
    """Which axis of the stored array each axis of the engine's layout is (the signal's order, then --axes)."""
    import numpy as np

    probe = np.broadcast_to(np.zeros(()), tuple(range(2, 2 + ndim)))  # distinct lengths name the axes
    moved = chain.axes.to_engine(probe).shape
    return [order[n - 2] for n in moved]


class _Permuted:
    """A stored array seen with its axes permuted: what a task slices its window from."""

    def __init__(self, array, permutation):
        self.array, self.permutation = array, list(permutation)
        self.shape = tuple(array.shape[i] for i in self.permutation)
        self.dtype = array.dtype

    def __getitem__(self, cut):
        import numpy as np

        stored = [slice(None)] * len(self.permutation)
        for axis, piece in zip(self.permutation, cut):
            stored[axis] = piece
        return np.asarray(self.array[tuple(stored)]).transpose(self.permutation)


def _placeholder(image, shape):
    """A Signal with the input's shape and type but no samples, for planning the chain."""
    import numpy as np

    from ..io import Signal

    nd = len(image.spatial)
    frames = "t" in image.axes
    channels = "c" in image.axes
    data = np.broadcast_to(np.zeros((), image.array.dtype), shape)
    return Signal(data, kind={1: "signal", 2: "image", 3: "volume"}[nd], channel_axis=-1 if channels else None,
                  spacing=image.spacing, frames=frames,
                  meta={"format": "zarr", "dtype": np.dtype(image.array.dtype).name})


class _Working:
    """A stored array (in the engine's layout, channels last) seen in the values a ``--colorspace`` filters.

    The conversion is the in-memory one (:meth:`Space.to_working`), sample by
    sample, or pixel by pixel for luma: a window is read with all its
    channels, converted, and cut to the channels asked for.
    """

    def __init__(self, view, space, work, channels: bool):
        import numpy as np

        self.view, self.space, self.work, self.channels = view, space, np.dtype(work), channels
        self.dtype = self.work
        self.shape = tuple(view.shape[:-1]) + (_working_channels(space, view.shape[-1]),) if channels else view.shape

    def __getitem__(self, cut):
        if not self.channels:
            return self.space.to_working(self.view[cut], self.work)
        cut = tuple(cut) + (slice(None),) * (len(self.shape) - len(cut))
        samples = self.view[cut[:-1] + (slice(None),)]
        return self.space.to_working(samples, self.work)[..., cut[-1]]


def _working_channels(space, channels: int) -> int:
    return channels - space.colour + 1 if space.name == "luma" else channels


def _lazy_working(y, view):
    """The Dask array ``y`` of samples (engine layout) in working values, as ``view`` (a :class:`_Working`) gives."""
    if not view.channels:
        return y.map_blocks(view.space.to_working, view.work, dtype=view.work)
    y = y.rechunk({y.ndim - 1: -1})
    return y.map_blocks(view.space.to_working, view.work, dtype=view.work,
                        chunks=y.chunks[:-1] + ((view.shape[-1],),))


def _lazy_colour(chain, y, view, stored, space):
    """The lazy result ``y`` (working values, engine layout) back in sample values, as :meth:`Run.filter` does.

    ``stored`` is the input as a Dask array in the engine's layout: luma adds
    the filtered change to its colour moved onto the output grid
    (:meth:`Chain.grid`, lazily).
    """
    if chain.signal.channel_axis is None:
        return y.map_blocks(space.from_working, dtype=y.dtype)
    y = y.rechunk({y.ndim - 1: -1})
    if space.name != "luma":
        return y.map_blocks(space.from_working, dtype=y.dtype)
    colour = stored[..., :space.colour]
    base = chain.axes.to_engine(chain.grid(chain.axes.from_engine(colour)))
    base = base.rechunk(y.chunks[:-1] + ((space.colour,),))
    channels = view.shape[-1]
    return y.map_blocks(space.from_working, base, dtype=y.dtype, chunks=y.chunks[:-1] + ((channels,),))


def _lazy_chain(chain, image, order, signal, source: str, budget: int, space=None):
    """The chain's kernels applied lazily (a Dask array in the stored array's axis order).

    The first kernel's tasks read their windows from the store; the next
    ones take their halos from the previous kernel's chunks.  A ``space``
    other than stored (``--colorspace``) converts the samples before the
    first kernel and back after the last, as in memory.
    """
    import dask.array as da
    import numpy as np

    from .. import io
    from ..parallel import thread_count

    ndim = len(image.array.shape)
    permutation = _permutation(chain, order, ndim)
    view = _Permuted(image.array, permutation)
    stored_view = view
    colour = space is not None and space.name != "stored"
    if colour:
        view = _Working(view, space, chain.work, chain.signal.channel_axis is not None)
    spatial = [permutation.index(i) for i in image.spatial]
    stored = [image.array.chunks[i] for i in permutation]
    reach = _reach(chain)
    shared = _shared_chunks(image, permutation, spatial, reach, thread_count(), budget)
    y = None
    if shared is not None:
        # Every stored chunk read and decoded once; its neighbours take their halos from it in memory.
        y = da.from_zarr(image.array, chunks=shared).transpose(permutation)
        samples = y
        if colour:
            y = _lazy_working(y, view)
    else:
        # Within a tight budget each task reads its own window (stored chunks at its edges decoded again).
        chunks = plan_chunks(view.shape, spatial, stored, reach, max(view.dtype.itemsize, 4), view.dtype.itemsize,
                             thread_count(), budget)
        if chunks is None:
            raise DataError(f"filtering it in chunks within the memory budget of {io.human_size(budget)} is not "
                            f"possible with kernels that reach {reach} samples; raise --memory-budget",
                            subject=source)
        grid = tuple(_regular(n, c) for n, c in zip(view.shape, chunks))
        samples = None
        if colour and space.name == "luma":
            samples = da.from_array(stored_view, chunks=grid[:-1] + (stored_view.shape[-1],), asarray=True,
                                    lock=False, meta=np.empty((0,) * ndim, stored_view.dtype))
    for i, kernel in enumerate(chain.kernels):
        args = chain.args(i == len(chain.kernels) - 1, chain.pad_mode or kernel.border)
        if y is None:
            y = _lazy_kernel(kernel, view, args, chain.options.convolve, grid)
        else:
            y = _lazy_kernel(kernel, y, args, chain.options.convolve, None)
    if chain.non_negative and signal.data.dtype.kind in "ub" and y.dtype.kind == "f":
        y = da.maximum(y, 0)  # round-off below zero of non-negative kernels on unsigned samples
    if colour:
        y = _lazy_colour(chain, y, stored_view, samples, space)
    return y.transpose(_inverse(permutation))


def _lazy_kernel(kernel, x, args: dict, convolve: bool, read_chunks):
    """One kernel of the chain on ``x`` (a Dask array, or a stored array read in ``read_chunks``), lazily.

    An operator (rank, morphology, pooling) is planned for the whole array
    as in memory and runs that plan on every chunk; a kernel of several
    weight arrays (sobel's magnitude) combines its lazy responses chunk by
    chunk as :meth:`Kernel.combined` combines them in memory.
    """
    import dask.array as da

    from ..engine.chunked import lazy_correlate, lazy_operator

    if kernel.operator is not None:
        return lazy_operator(x, kernel.plan(x.shape, x.dtype, convolve=convolve, **args), read_chunks=read_chunks)
    args = kernel.window_args(dict(args), None)
    responses = [lazy_correlate(x, w, flip=convolve, read_chunks=read_chunks, **args) for w in kernel.weights]
    if len(responses) == 1:
        return responses[0]
    return da.map_blocks(_combined, *responses, kernel=kernel, dtype=responses[0].dtype)


def _combined(*responses, kernel):
    return kernel.combined(responses)


def _reach(chain) -> int:
    """How far an output's chain of windows reaches, in samples: a two-step morphology reaches twice its footprint."""
    dilation = chain.options.geometry.dilations(chain.axes.ndim)

    def passes(kernel) -> int:
        return 2 if getattr(kernel.operator, "operation", None) in ("open", "close", "tophat", "blackhat") else 1

    return max(sum(passes(k) * d * (k.shape[axis] // 2) for k in chain.kernels) for axis, d in enumerate(dilation))


def _shared_chunks(image, permutation, spatial, reach: int, threads: int, budget: int):
    """Chunks of whole stored chunks whose run fits ``budget`` when neighbours share halos in memory, or None.

    Slabs along the first spatial axis (whole planes, which OpenCV pads
    itself) where they fit, else near-cubes.  The chunks of about three
    layers along the first axis wait in memory for their neighbours, and each
    of ``threads`` tasks holds :data:`COPIES` windows.
    """
    import dask.array as da
    import numpy as np

    shape, stored = image.array.shape, image.array.chunks
    sides = [permutation[a] for a in spatial]
    first = sides[0]
    item = max(image.array.dtype.itemsize, 4)

    def fits(chunks) -> bool:
        layer = window = size = item
        for i, n in enumerate(shape):
            layer *= chunks[i] if i == first else n
            window *= chunks[i] + (2 * reach if i in sides and chunks[i] < n else 0)
            size *= chunks[i]
        return 3 * layer + threads * COPIES * window <= budget and size <= MAX_CHUNK_BYTES

    slab = [n if i in sides else 1 for i, n in enumerate(shape)]
    plane = item * int(np.prod([n for i, n in enumerate(slab) if i != first]))
    thickness = max(stored[first], MAX_CHUNK_BYTES // max(plane, 1) // stored[first] * stored[first])
    for t in range(min(thickness, shape[first]), 0, -stored[first]):
        slab[first] = t
        if fits(slab):
            return tuple(slab)
    cubes = [c[0] for c in da.core.normalize_chunks("auto", shape, limit=MAX_CHUNK_BYTES, dtype="f4",
                                                      previous_chunks=stored)]
    cubes = [c if i in sides else 1 for i, c in enumerate(cubes)]
    return tuple(cubes) if fits(cubes) else None


def _regular(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())


def _inverse(order):
    inverse = [0] * len(order)
    for position, axis in enumerate(order):
        inverse[axis] = position
    return inverse


def _indices(y):
    import itertools

    return itertools.product(*(range(len(c)) for c in y.chunks))


def _store(y, array, convert, scheduler: str | None, progress) -> int:
    """Compute the chunks of ``y`` the store lacks and write each where it belongs; return the samples clipped.

    ``convert`` makes a chunk's values samples (see :func:`samples_of`).
    """
    import dask.array as da
    import numpy as np
    from dask.highlevelgraph import HighLevelGraph

    from ..io import zarr as zarr_io

    missing = [index for index in _indices(y) if not zarr_io.chunk_written(array, index)]
    if not missing:
        return 0
    name = "convcli-store-" + y.name
    dsk = {(name, j): (_store_block, (y.name,) + index, array, index, convert) for j, index in enumerate(missing)}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[y])
    counts = da.Array(graph, name, chunks=((1,) * len(missing),), dtype=np.int64, meta=np.empty((0,), np.int64))
    if progress is not None:
        progress(0, len(missing))
    return int(_compute(counts, scheduler, progress).sum())


def _store_block(values, array, index, convert):
    import numpy as np

    samples, clipped = convert(values)
    region = tuple(slice(i * c, i * c + n) for i, c, n in zip(index, array.chunks, values.shape))
    array[region] = samples
    return np.array([clipped], dtype=np.int64)


def _compute(counts, scheduler: str | None, progress):
    """Run the graph on this machine's threads or on the cluster at ``scheduler``; the per-chunk results."""
    if scheduler is None:
        from ..parallel import thread_count

        return _local(counts, thread_count(), progress)
    from .cluster import client_for

    with client_for(scheduler) as client:
        futures = client.compute(counts.to_delayed().ravel().tolist())
        return _gather(client, futures, progress)


def _local(counts, workers: int, progress):
    import dask
    import numpy as np
    from dask.threaded import get

    # The threaded scheduler given as its function: named by its string, Dask first imports
    # distributed to look for a client (a quarter of a second at every start).
    if progress is None:
        return counts.compute(scheduler=get, num_workers=workers)
    from dask.callbacks import Callback

    class _Written(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(key, tuple) and key[0] == counts.name:
                progress(1, 0)

    with _Written():
        parts = dask.compute(counts, scheduler=get, num_workers=workers)[0]
    return np.asarray(parts)


def _gather(client, futures, progress):
    import numpy as np
    from distributed import KilledWorker, as_completed

    results = []
    for future in as_completed(futures):
        try:
            results.append(future.result())
        except KilledWorker as exc:
            # Dask re-ran the chunk on other workers up to its allowed failures; it is not retried forever.
            raise DataError(f"a chunk's task killed {exc.last_worker.address if exc.last_worker else 'its'} "
                            "worker each time it ran (Dask's allowed failures); the partial store is kept",
                            subject="--scheduler") from None
        if progress is not None:
            progress(1, 0)
    return np.concatenate([np.ravel(r) for r in results]) if results else np.zeros(0, np.int64)
