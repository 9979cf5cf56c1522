"""PyTorch as a test oracle, where it is installed: `torch` (None where it is not) and `needs_torch`, the mark
that skips the checks comparing with it, so that every other check in their files runs without it."""
import pytest

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch oracle: needs torch (pip install torch)")
