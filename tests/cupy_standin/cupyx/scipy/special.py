"""cupyx.scipy.special of the CuPy stand-in: erf as a device ufunc (NumPy arrays refused)."""
from scipy import special as _special

import cupy


def erf(x):
    if cupy._fusion.tracing():               # a CuPy ufunc (cupyx/scipy/special/_erf.py): fuse traces it
        return cupy._fusion.call_ufunc("erf", _special.erf, (x,), {})
    return cupy._wrap(_special.erf(cupy._operand(x)))
