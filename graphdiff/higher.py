"""Derivatives built from the symbolic backward: Hessian-vector products, Hessians and forward mode (jvp).
Each builds its gradient graph once (autodiff.gradients) and runs it with Graph.forward."""
import numpy as np

from .autodiff import gradients, require_fixed_shapes
from .execution import state
from .graph import Node
from .ops import add_n, sum as _sum


def _once(graph, key, build, run):
    """run(*build()), keeping what build made for the next calls with this key (state.built). If the first
    call fails, building or running, its nodes go again (Graph.atomic): no unfed 'hvp/v0' is left behind."""
    st = state(graph)
    made = st.built.get(key)
    if made is not None:
        return run(*made)
    mark = len(graph.nodes)
    try:
        with graph.atomic():
            made = build()
            out = run(*made)
    except BaseException:
        for k in [k for k in st.residuals if k >= mark]:    # kept by the failed run for nodes now gone
            del st.residuals[k]
        raise
    st.built[key] = made
    return out


def _free_name(graph, base):
    k = 0
    while (f"{base}{k}") in graph:
        k += 1
    return f"{base}{k}"


def _dot(pairs):
    terms = [_sum(a * b) for a, b in pairs]
    return terms[0] if len(terms) == 1 else add_n(terms)


def _listed(x):
    return (True, [x]) if isinstance(x, Node) else (False, list(x))


def hvp(y, wrt, v, variant="children"):
    """Hessian-vector product H v of a scalar y, from the current feeds and params (arrays).

    Built as graph nodes once per (y, wrt, variant): the gradient g of y, then the gradient of <g, v> with v
    an input fed each call. Args: y: scalar Node; wrt: a Node or list; v: array(s) shaped like wrt.
    """
    graph = y.graph
    require_fixed_shapes(graph, "hvp")
    single, ws = _listed(wrt)
    vs = [v] if single else list(v)

    def build():
        vin = [graph.input(_free_name(graph, "hvp/v"), w.shape, dtype=w.dtype) for w in ws]
        grads = gradients(graph, y, ws, variant)
        with graph.scope("hvp"):
            hv = gradients(graph, _dot(zip(grads, vin)), ws, variant)
        return vin, hv

    def run(vin, hv):
        return graph.forward(dict(zip(vin, vs)), outputs=hv, resample=False)

    with graph.lock:                        # built and run as one step (Graph.lock)
        values = _once(graph, ("hvp", y.index, tuple(w.index for w in ws), variant), build, run)
    return values[0] if single else values


def hessian(y, wrt, variant="children"):
    """The Hessian of scalar y with respect to one node (small: one hvp per element): shape wrt.shape * 2."""
    require_fixed_shapes(y.graph, "hessian")
    n = int(np.prod(wrt.shape, dtype=np.int64))
    if n == 0:                                # an empty block (the hvp still checks y and wrt)
        hv = hvp(y, wrt, np.zeros(wrt.shape), variant)
        return np.zeros(wrt.shape * 2, dtype=np.asarray(y.graph.backend.to_numpy(hv)).dtype)
    rows = []
    for k in range(n):
        e = np.zeros(n)
        e[k] = 1.0
        rows.append(np.asarray(y.graph.backend.to_numpy(hvp(y, wrt, e.reshape(wrt.shape), variant))))
    return np.stack(rows).reshape(wrt.shape + wrt.shape)


def jvp(outputs, wrt, tangents, variant="children"):
    """Forward mode: J t, the change of each output along tangents t of wrt, from the current values.

    Built once per (outputs, wrt, variant) by transposing the backward pass: J^T u is linear in the
    cotangent u, so J t is the gradient of <J^T u, t> with respect to u (no second copy of any rule).
    Args: outputs: a float Node or list; wrt: a Node or list; tangents: array(s) shaped like wrt.
    """
    single_out, ys = _listed(outputs)
    single, ws = _listed(wrt)
    ts = [tangents] if single else list(tangents)
    graph = ys[0].graph
    require_fixed_shapes(graph, "jvp")

    def build():
        us = [graph.input(_free_name(graph, "jvp/u"), y.shape, dtype=y.dtype) for y in ys]
        tin = [graph.input(_free_name(graph, "jvp/t"), w.shape, dtype=w.dtype) for w in ws]
        with graph.scope("jvp"):
            vjps = gradients(graph, _dot(zip(ys, us)), ws, variant)          # J^T u
            jt = gradients(graph, _dot(zip(vjps, tin)), us, variant)         # J t
        return us, tin, jt

    def run(us, tin, jt):
        feeds = {u: np.zeros(u.shape) for u in us}
        feeds.update(zip(tin, ts))
        return graph.forward(feeds, outputs=jt, resample=False)

    with graph.lock:                        # built and run as one step (Graph.lock)
        values = _once(graph, ("jvp", tuple(y.index for y in ys), tuple(w.index for w in ws), variant), build, run)
    return values[0] if single_out else values
