"""Shared helpers for the viz tests: renderers, awkward names, the small hand-counted graphs."""
import shutil
import xml.etree.ElementTree as ET

import numpy as np

import graphdiff as gd
from graphdiff.viz import gallery
from graphdiff.viz.renderer import find_renderer
from tests.browser import missing

SVG = "{http://www.w3.org/2000/svg}"
# every character that could break DOT text, an HTML-like label, a record label or the SVG
AWKWARD = 'q"uote <lt> >gt {brace} |pipe\\back\\slash\nnew\tline é ünï 日本 ✓ & amp; \\N \\G \\l \x01'


def need_renderer(name):
    """Skip when the renderer is missing, except in CI, where .ci/run installs both."""
    if find_renderer(name) is None:
        missing(f"renderer {name!r}", ".ci/run must install it")


def svg_texts(path):
    """Parse an SVG file (failing on invalid XML) and return its text content joined."""
    root = ET.parse(path).getroot()
    assert root.tag == SVG + "svg"
    return " ".join("".join(t.itertext()) for t in root.iter(SVG + "text"))


def twice_a():
    """b = a + a; c = b * b (a = 3): the hand-counted graph."""
    g = gd.Graph(dtype="float64")
    a = g.param("a", 3.0)
    b = gd.add(a, a, name="b")
    c = gd.multiply(b, b, name="c")
    g.forward(outputs=c)
    return g, a, b, c


def fan_chain():
    """a = exp(x) feeds h1..h4 = a*k, summed by a chain y = ((h1 + h2) + h3) + h4: gallery's "shared".

    children keeps h1..h4 alive until a pulls from all of them; parents frees each h right after it pushes.
    """
    return gallery.shared()


def scoped_graph(blocks, per_block, depth=2):
    """A graph of blocks * per_block nodes (plus a few) in nested scopes, built with no forward pass."""
    g = gd.Graph()
    h = g.input("x", shape=(2,))
    for b in range(blocks):
        with g.scope(f"block{b}"):
            with g.scope("inner") if depth > 1 else _nullscope():
                w = g.param("w", np.ones(2))
                for _ in range(per_block - 1):
                    h = h * w
    return g, gd.sum(h, name="loss")


class _nullscope:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def has(name):
    return shutil.which(name) is not None
