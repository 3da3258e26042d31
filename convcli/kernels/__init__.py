"""Kernels by name, file or inline matrix, for inputs of any dimension.

>>> from convcli.kernels import resolve
>>> k = resolve("sobel-x", ndim=2)
>>> k.weights[0]
array([[-1.,  0.,  1.],
       [-2.,  0.,  2.],
       [-1.,  0.,  1.]])
>>> k.range_default
'offset'

``resolve`` is what ``convcli filter -k SPEC`` calls; ``kernels/`` (shipped
in the wheel) holds the fixed-weight library, ``generators`` the
parametrised families, ``files`` the file formats.
"""
from __future__ import annotations

from .kernel import Kernel
from .resolve import apply, file_of, known_names, resolve, resolve_all

__all__ = ["Kernel", "apply", "file_of", "resolve", "resolve_all", "known_names"]
