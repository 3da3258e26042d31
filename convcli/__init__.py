"""convcli: convolution kernels for signals of any dimension, and a CNN on the same core.

>>> import numpy as np
>>> from convcli import correlate
>>> correlate(np.arange(5.0), np.array([1.0, 0.0, -1.0]), padding="valid")
array([-2., -2., -2.])
>>> from convcli import apply
>>> apply(np.array([[1, 5], [7, 2]], dtype=np.uint8), "maxpool:2")
array([[7]], dtype=uint8)
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["apply", "correlate", "convolve", "__version__"]


def __getattr__(name: str):
    # Lazy: `import convcli` (and so the CLI's start-up) must not pay for numpy.
    if name in ("correlate", "convolve"):
        from . import engine

        return getattr(engine, name)
    if name == "apply":
        from .kernels import apply

        return apply
    raise AttributeError(f"module 'convcli' has no attribute {name!r}")
