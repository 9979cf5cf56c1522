"""Language models unrolled one position at a time: the graphs the lecture draws.

The batched models (gpt.py, rnn.py) process (B, T) tensors, so their graphs have a size that does not
depend on T. Here every position gets its own nodes, so the graph shows the work a sequence costs:

- RNN-LM: h_t = tanh(x_t W_ih + h_{t-1} W_hh + b) -- one hidden node per position, each depending on the
  previous one: O(T) nodes and edges, and a depth (longest path) of O(T).
- Transformer-LM: per position and head, a query, a key and a value node; one score node per (query,
  earlier key) pair; a softmax per query row over the stacked scores; each output the attention weights
  times the stacked values. O(T^2) nodes and edges; since stack and add_n are n-ary nodes, the depth is
  O(layers), not O(T): all positions can be computed in parallel.

Both read the weights of a batched model (by their state_dict names), so with the same weights they
compute the same loss and gradients as the batched model does (tests/lm/test_unrolled.py).
"""
import math
from dataclasses import dataclass, field

import numpy as np

from .. import ops
from ..execution import topological_order
from ..graph import Graph
from .gpt import sinusoidal_table


@dataclass
class Unrolled:
    """An unrolled graph: the graph, its loss (None without targets), the params by state_dict name, and
    for each position the node holding its final hidden vector (and logits)."""
    graph: Graph
    loss: object
    params: dict
    hidden: list = field(default_factory=list)
    logits: list = field(default_factory=list)


def unroll(model, ids, targets=None, backend=None, dtype="float64"):
    """Unroll a GPT or an RNN-LM over one sequence.

    Args:
        model: a graphdiff.lm GPT or RNNLM (its weights and config are read, not changed).
        ids: (T,) token ids; right padding with the model's pad id is allowed (padded keys are left out).
        targets: (T,) next-token ids, pad id where ignored; None builds no loss.
        backend, dtype: of the new graph.
    Returns:
        an Unrolled; loss is the mean cross-entropy over non-pad targets, as the batched model computes it.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    pad = int(model.config.get("pad_id", 0))
    if ids.size == 0:
        raise ValueError("unroll: empty sequence")
    if ids[0] == pad:
        raise ValueError(f"unroll: the sequence starts with the pad id {pad}; pad on the right")
    g = Graph(backend=backend, dtype=dtype)
    params = {name: g.param(name, value) for name, value in model.state_dict().items()}
    if model.kind == "gpt":
        out = _transformer(g, model.config, params, ids, pad)
    elif model.kind == "rnn":
        out = _rnn(g, params, ids)
    else:
        raise TypeError(f"unroll: no unrolled form for model kind {model.kind!r}")
    out.params = params
    if targets is not None:
        out.loss = _mean_loss(g, out.logits, np.asarray(targets, dtype=np.int64).reshape(-1), pad)
    return out


def _mean_loss(g, logits, targets, pad):
    if targets.shape != (len(logits),):
        raise ValueError(f"unroll: targets have shape {targets.shape}, ids have {len(logits)} positions")
    kept = []
    for t, lg in enumerate(logits):
        if targets[t] != pad:
            with g.scope(f"t{t}"):
                kept.append(ops.cross_entropy(lg, targets[t], name="loss"))
    if not kept:
        raise ValueError("unroll: every target is the pad id; nothing to learn from")
    return ops.multiply(ops.add_n(kept, name="loss_sum"), 1.0 / len(kept), name="loss")


def _rnn(g, P, ids):
    """h_t = tanh(x_t W_ih + h_{t-1} W_hh + b), logits_t = h_t W + b: a chain through time."""
    H = P["cell.weight_hh"].shape[0]
    h = g.constant(np.zeros(H), name="h0")                           # (H,)
    out = Unrolled(g, None, {})
    for t, tok in enumerate(ids):
        with g.scope(f"t{t}"):
            x = ops.getitem(P["wte.weight"], int(tok), name="x")      # (E,)
            a = (ops.matmul(x, P["cell.weight_ih"], name="ih") + ops.matmul(h, P["cell.weight_hh"], name="hh")
                 + P["cell.bias"])
            h = ops.tanh(a, name="h")                                 # (H,)
            logits = ops.add(ops.matmul(h, P["lm_head.weight"]), P["lm_head.bias"], name="logits")   # (V,)
        out.hidden.append(h)
        out.logits.append(logits)
    return out


def _transformer(g, cfg, P, ids, pad):
    """Position by position, layer by layer; keys and values of earlier positions are reused as nodes."""
    C, nh, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    hs = C // nh
    scale = 1.0 / math.sqrt(hs)
    post = cfg.get("norm", "pre") == "post"
    if cfg.get("pos", "learned") == "sinusoidal":
        table = sinusoidal_table(cfg["block_size"], C)
    if len(ids) > cfg["block_size"]:
        raise ValueError(f"unroll: {len(ids)} positions exceed block_size {cfg['block_size']}")
    keys = [[[] for _ in range(nh)] for _ in range(L)]              # keys[l][head]: k nodes of visible positions
    values = [[[] for _ in range(nh)] for _ in range(L)]
    out = Unrolled(g, None, {})

    def ln(x, prefix, name):
        return ops.layer_norm(x, P[prefix + ".weight"], P[prefix + ".bias"], name=name)

    def linear(x, prefix, name):
        y = ops.matmul(x, P[prefix + ".weight"])
        return ops.add(y, P[prefix + ".bias"], name=name) if prefix + ".bias" in P else y

    for t, tok in enumerate(ids):
        visible = tok != pad                                         # a <pad> key is masked for everyone
        with g.scope(f"t{t}"):
            tok_emb = ops.getitem(P["wte.weight"], int(tok), name="tok_emb")               # (C,)
            pos_emb = (ops.getitem(P["wpe.weight"], t, name="pos_emb") if "wpe.weight" in P
                       else g.constant(table[t], name="pos_emb"))                           # (C,)
            x = ops.add(tok_emb, pos_emb, name="x")                                        # (C,)
            for l in range(L):
                pre = f"h.{l}"
                with g.scope(f"h{l}"):
                    a_in = x if post else ln(x, pre + ".ln_1", "ln_1")
                    qkv = linear(a_in, pre + ".attn.c_attn", "qkv")                        # (3C,)
                    heads = []
                    for h in range(nh):
                        with g.scope(f"head{h}"):
                            q = ops.multiply(qkv[h * hs:(h + 1) * hs], scale, name="q")    # (hs,)
                            if visible:
                                keys[l][h].append(ops.getitem(qkv, slice(C + h * hs, C + (h + 1) * hs), name="k"))
                                values[l][h].append(ops.getitem(qkv, slice(2 * C + h * hs, 2 * C + (h + 1) * hs),
                                                                name="v"))
                            # one score node per (query, earlier key) pair
                            scores = [ops.matmul(q, k, name=f"s{j}") for j, k in enumerate(keys[l][h])]
                            att = ops.softmax(ops.stack(scores, name="scores"), name="att")       # (t+1,)
                            heads.append(ops.matmul(att, ops.stack(values[l][h], name="V"), name="o"))  # (hs,)
                    y = linear(ops.concat(heads, name="heads"), pre + ".attn.c_proj", "attn_out")      # (C,)
                    if post:
                        x = ln(x + y, pre + ".ln_1", "ln_1")
                        m = _mlp(x, pre, linear)
                        x = ln(x + m, pre + ".ln_2", "ln_2")
                    else:
                        x = ops.add(x, y, name="resid1")
                        m = _mlp(ln(x, pre + ".ln_2", "ln_2"), pre, linear)
                        x = ops.add(x, m, name="resid2")
            logits = ops.matmul(ln(x, "ln_f", "ln_f"), P["lm_head.weight"], name="logits")    # (V,)
        out.hidden.append(x)
        out.logits.append(logits)
    return out


def _mlp(x, pre, linear):
    h = linear(x, pre + ".mlp.c_fc", "c_fc")
    return linear(ops.gelu(h, approximate="tanh", name="gelu"), pre + ".mlp.c_proj", "mlp_out")


def graph_stats(graph, output=None):
    """nodes, edges (input slots) and depth (edges on the longest path) of graph, or of what output needs."""
    nodes = graph.nodes if output is None else topological_order(graph, [output])
    depth = {}
    edges = 0
    for n in nodes:                       # creation / topological order: inputs come first
        edges += len(n.inputs)
        depth[n.index] = 1 + max(depth[p.index] for p in n.inputs) if n.inputs else 0
    return {"nodes": len(nodes), "edges": edges, "depth": max(depth.values())}
