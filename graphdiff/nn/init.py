"""Initialisation on the host (NumPy's PCG64), so a seed gives the same weights on every backend."""
import numpy as np


def normal(rng, shape, std):
    return rng.standard_normal(shape) * std


def uniform(rng, shape, bound):
    """U(-bound, bound), PyTorch's default for Linear and RNN weights (bound = 1/sqrt(fan_in))."""
    return rng.uniform(-bound, bound, size=shape)


def zeros(shape):
    return np.zeros(shape)


def ones(shape):
    return np.ones(shape)


def as_rng(seed_or_rng):
    """A numpy Generator from a seed, a Generator, or None (seed 0, so models are reproducible by default)."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(0 if seed_or_rng is None else seed_or_rng)
