"""cupyx of the CuPy stand-in: scatter_add (in place, repeated indices add up, as CuPy's)."""
import numpy as _np

import cupy


def scatter_add(a, slices, value):
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    target, idx, value = a._a, cupy._index(slices), cupy._operand(value)
    cupy._mutate(lambda: _np.add.at(target, idx, value))
