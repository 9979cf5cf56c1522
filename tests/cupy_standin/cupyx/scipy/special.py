"""cupyx.scipy.special of the CuPy stand-in: erf as a device ufunc (NumPy arrays refused)."""
from scipy import special as _special

import cupy


def erf(x):
    return cupy._wrap(_special.erf(cupy._operand(x)))
