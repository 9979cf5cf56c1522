"""Built-in example graphs for `graphdiff render NAME` and `graphdiff compare NAME`.

Each builder returns (graph, output) with the forward pass done, so the diagram shows values.
"""
import numpy as np

import graphdiff as gd
from graphdiff.lm import GPT, RNNLM, unroll


def scalar(seed=0):
    """micrograd's expression: L = (a*b + c) * f, with a=2, b=-3, c=10, f=-2 (float64 scalars)."""
    g = gd.Graph(dtype="float64")
    a = g.param("a", 2.0)
    b = g.param("b", -3.0)
    c = g.param("c", 10.0)
    e = gd.multiply(a, b, name="e")
    d = gd.add(e, c, name="d")
    f = g.param("f", -2.0)
    L = gd.multiply(d, f, name="L")
    g.forward(outputs=L)
    return g, L


def mlp(seed=0, d=4, h=3, k=3):
    """The lecture MLP: a = alpha x, z = sigmoid(a), b = beta z, y_hat = softmax(b), J = -sum(y log y_hat).

    Args:
        d, h, k: input size, hidden size, number of classes (x: (d,), alpha: (h, d), beta: (k, h)).
    """
    rng = np.random.default_rng(seed)
    g = gd.Graph(dtype="float64")
    x = g.input("x", shape=(d,))
    y = g.input("y", shape=(k,))                               # one-hot target
    alpha = g.param("alpha", rng.standard_normal((h, d)) * 0.5)
    beta = g.param("beta", rng.standard_normal((k, h)) * 0.5)
    a = gd.matmul(alpha, x, name="a")                          # (h,)
    z = gd.sigmoid(a, name="z")                                # (h,)
    b = gd.matmul(beta, z, name="b")                           # (k,)
    y_hat = gd.softmax(b, name="y_hat")                        # (k,)
    J = gd.negative(gd.sum(y * gd.log(y_hat, name="log_y_hat"), name="sum"), name="J")
    g.forward({x: rng.standard_normal(d), y: np.eye(k)[1]}, outputs=J)
    return g, J


def transformer(seed=0, T=4, C=8, hidden=16):
    """One pre-LN transformer block on a (T, C) sequence, then loss = mean(out^2).

    x -> x + proj(causal_attention(ln1(x))) -> ... + mlp(ln2(...)); each part in its own scope.
    """
    rng = np.random.default_rng(seed)
    g = gd.Graph(dtype="float32")
    x = g.input("x", shape=(T, C))

    def w(name, *shape):
        return g.param(name, rng.standard_normal(shape) * (1.0 / np.sqrt(shape[0])))

    with g.scope("block"):
        with g.scope("ln1"):
            h = gd.layer_norm(x, g.param("gamma", np.ones(C)), g.param("beta", np.zeros(C)), name="out")
        with g.scope("attn"):
            q = gd.matmul(h, w("W_q", C, C), name="q")                       # (T, C)
            k = gd.matmul(h, w("W_k", C, C), name="k")                       # (T, C)
            v = gd.matmul(h, w("W_v", C, C), name="v")                       # (T, C)
            scores = gd.divide(gd.matmul(q, gd.transpose(k, name="kT"), name="qk"),
                               float(np.sqrt(C)), name="scores")             # (T, T)
            mask = g.constant(np.tril(np.ones((T, T), dtype=bool)), name="causal_mask")
            masked = gd.where(mask, scores, -1e9, name="masked")
            att = gd.softmax(masked, axis=-1, name="att")                    # (T, T)
            y = gd.matmul(gd.matmul(att, v, name="att_v"), w("W_o", C, C), name="out")
        x1 = gd.add(x, y, name="resid1")
        with g.scope("ln2"):
            h2 = gd.layer_norm(x1, g.param("gamma", np.ones(C)), g.param("beta", np.zeros(C)), name="out")
        with g.scope("mlp"):
            fc = gd.add(gd.matmul(h2, w("W_fc", C, hidden), name="fc"), g.param("b_fc", np.zeros(hidden)),
                        name="fc_b")                                         # (T, hidden)
            act = gd.gelu(fc, name="gelu")
            out = gd.matmul(act, w("W_proj", hidden, C), name="proj")        # (T, C)
        x2 = gd.add(x1, out, name="resid2")
    loss = gd.mean(x2 * x2, name="loss")
    g.forward({x: rng.standard_normal((T, C))}, outputs=loss)
    return g, loss


def shared(seed=0):
    """A node used four times: a = exp(x); h_k = a * (k + 1); y = ((h1 + h2) + h3) + h4 (float64 scalars).

    The variants differ here: children keeps h1..h4's adjoints alive until a pulls all four and sums them
    (peak 5 live adjoints); parents adds into a's adjoint as each h pushes (=, then +=, +=, +=) and frees
    each h right after (peak 4).
    """
    g = gd.Graph(dtype="float64")
    x = g.param("x", 0.5)
    a = gd.exp(x, name="a")
    h = [gd.multiply(a, float(k + 2), name=f"h{k + 1}") for k in range(4)]
    s1 = gd.add(h[0], h[1], name="s1")
    s2 = gd.add(s1, h[2], name="s2")
    y = gd.add(s2, h[3], name="y")
    g.forward(outputs=y)
    return g, y


def gpt(seed=0, n_layer=3, T=4):
    """graphdiff.lm's GPT (n_layer blocks h/0, h/1, ..., 2 heads, n_embd 8, vocabulary 16): the loss graph of
    one sequence of T tokens; `render gpt --fold` draws the blocks once, "x 3"."""
    model = GPT(vocab_size=16, block_size=8, n_layer=n_layer, n_head=2, n_embd=8, seed=seed)
    prog = model.programs(("loss", 1, T))
    ids = np.random.default_rng(seed).integers(1, 16, (1, T + 1))
    loss = prog.outputs["loss"]
    prog.graph.forward({"idx": ids[:, :-1], "targets": ids[:, 1:], "key_mask": np.ones((1, T), dtype=bool)},
                       outputs=loss)
    return prog.graph, loss


def rnn(seed=0, T=4):
    """graphdiff.lm's RNN-LM (n_embd 4, n_hidden 4, vocabulary 16) unrolled over T tokens: time steps t0, t1,
    ... (graphdiff.lm.unroll); `render rnn --fold` draws one step, "x 4", with the hidden state's edge to the
    next step."""
    model = RNNLM(vocab_size=16, block_size=T, n_embd=4, n_hidden=4, seed=seed)
    ids = np.random.default_rng(seed).integers(1, 16, T + 1)
    u = unroll(model, ids[:-1], ids[1:], dtype="float64")
    u.graph.forward(outputs=u.loss)
    return u.graph, u.loss


EXAMPLES = {"scalar": scalar, "mlp": mlp, "transformer": transformer, "shared": shared, "gpt": gpt, "rnn": rnn}


def build(name, seed=0):
    """(graph, output) of a built-in example, forward done.

    Args:
        name: one of EXAMPLES ("scalar", "mlp", "transformer").
    """
    try:
        builder = EXAMPLES[name]
    except KeyError:
        raise ValueError(f"no example graph {name!r}; choose from {', '.join(EXAMPLES)}") from None
    return builder(seed=seed)
