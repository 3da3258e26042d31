"""The convolution core: geometry, border modes and strategies for N-dimensional signals.

The engine knows nothing of files or terminals; it takes arrays and returns
arrays.  ``correlate`` is the default operation (the kernel laid over the
samples as written, as in PyTorch and CNNs); ``convolve`` flips the kernel.
"""
from .borders import BORDER_MODES, mode_names, parse_pad_mode
from .correlation import Plan, convolve, correlate, execute, make_plan
from .depthwise import DEPTHWISE_METHODS, DepthwisePlan, depthwise_same, plan_depthwise, same_patches
from .geometry import AxisPlan, plan_axes
from .strategies import METHODS, Choice, choose_method, rank1_factors

__all__ = [
    "BORDER_MODES", "DEPTHWISE_METHODS", "METHODS", "AxisPlan", "Choice", "DepthwisePlan", "Plan",
    "choose_method", "convolve", "correlate", "depthwise_same", "execute", "make_plan", "mode_names",
    "parse_pad_mode", "plan_axes", "plan_depthwise", "rank1_factors", "same_patches",
]
