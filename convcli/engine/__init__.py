"""The convolution core: geometry, border modes and strategies for N-dimensional signals.

The engine knows nothing of files or terminals; it takes arrays and returns
arrays.  ``correlate`` is the default operation (the kernel laid over the
samples as written, as in PyTorch and CNNs); ``convolve`` flips the kernel.
Over the same window geometry, ``rank_filter`` takes order statistics
(median, minimum, maximum, any rank), ``morphology_filter`` builds erosion,
dilation, opening, closing and their differences on it, and ``max_pool``
and ``avg_pool`` follow PyTorch's pooling.

Its public names are those in ``_EXPORTS`` below: the two operations, the
plans behind them (:func:`make_plan`, :func:`execute`, the per-axis
geometry), the depthwise layer a network runs, and the tables the other
layers check values against or show (border modes and their help, methods).
The other layers import these from here, never from the modules, which are
internals.

Names are imported from their modules on first use, so a caller pays only
for the parts it touches (the filter command never loads the CNN's
depthwise layer).
"""
from importlib import import_module

_EXPORTS = {
    "BORDER_MODES": "borders", "help_text": "borders", "extend_indices": "borders", "reads_far_end": "borders",
    "Plan": "correlation", "convolve": "correlation", "correlate": "correlation", "execute": "correlation",
    "make_plan": "correlation", "rows_independent": "correlation",
    "DEPTHWISE_METHODS": "depthwise", "DepthwisePlan": "depthwise", "plan_depthwise": "depthwise",
    "same_patches": "depthwise", "split_phases": "depthwise",
    "AxisPlan": "geometry", "per_axis": "geometry", "plan_axes": "geometry",
    "streamed_band_bytes": "bands", "source_index": "bands",
    "METHODS": "strategies", "Choice": "strategies", "choose_method": "strategies",
    "weighted_sum": "weighted",
    "RankPlan": "rank", "execute_rank": "rank", "plan_rank": "rank", "rank_filter": "rank",
    "MorphologyPlan": "morphology", "OPERATIONS": "morphology", "execute_morphology": "morphology",
    "morphology_filter": "morphology", "plan_morphology": "morphology",
    "PoolPlan": "pooling", "avg_pool": "pooling", "execute_pool": "pooling", "max_pool": "pooling",
    "plan_pool": "pooling", "pool_axes": "pooling",
    "SVD_MAX_WORK": "strategies", "svd_work": "strategies", "rank1_factors": "strategies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
