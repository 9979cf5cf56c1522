"""microgpt on graphdiff: the 200-line scalar GPT's model and training run, with the graph built once per length.

microgpt writes every number as a scalar node and rebuilds the graph for each training document. Here the
same model trains with the same data order, initialisation, loss and Adam, so a run with the same seed gives
the same losses as a scalar engine of microgpt's structure (benchmarks/microgpt_ref.py), but each graph is
built once per sequence length and re-run with new feeds:

- `--mode scalar`: every number a node of a float64 graph, as microgpt writes it (a sum is one add_n node);
  the parameters are scalar leaves fed each step, the token's embedding row and the target's one-hot too.
- `--mode tensor`: the same model on float64 arrays (16-wide vectors, 4 heads of 4, a causal mask).

    python examples/microgpt.py [--data FILE] [--steps 1000] [--seed 42] [--mode scalar|tensor]
        [--variant children|parents] [--backend numpy|cupy]

prints `step K loss X` for K = 1..steps, then `ms/step M` (the training loop's wall time, graphs built and
compiled included, over the steps), then 20 names sampled at temperature 0.5. The default data is
examples/data/names.txt: 5,163 first names of the 1990 US Census (public domain), as shipped in the `names`
package (MIT) on PyPI, lower-cased, female then male list, duplicates dropped.

The model (1 layer, width 16, 4 heads, context 16, no biases, no norm gains): for position p,
x = rmsnorm(wte[token] + wpe[p]); r = x; x = rmsnorm(x); q, k, v = Wq x, Wk x, Wv x; each head attends over
positions 0..p with logits q_h . k_h[t] / 2 and a max-subtracted softmax; x = Wo heads + r; r = x;
x = W_fc2 relu(W_fc1 rmsnorm(x)) + r; logits = lm_head x. Step s trains on docs[s % len(docs)] with the mean
of -log softmax(logits_p)[next token] over its positions; Adam with lr 0.01 (1 - s / steps), betas 0.85 and
0.99, eps 1e-8.
"""
import argparse
import math
import os
import random
import time

import numpy as np

import graphdiff as gd
from graphdiff.cli import add_backend_argument

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "names.txt")
N_EMBD, N_HEAD, N_LAYER, BLOCK_SIZE = 16, 4, 1, 16
HEAD_DIM = N_EMBD // N_HEAD
LAYER = ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")
BETA1, BETA2, EPS = 0.85, 0.99, 1e-8
EMBEDDINGS = ("wte", "wpe")          # looked up by row; every other matrix maps x to W x


def load_docs(path=DEFAULT_DATA):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


class Run:
    """Data, vocabulary and parameters, drawn from `random` in microgpt's order; Adam on one flat vector.

    self.params maps each matrix's name to a view of self.theta (rows x cols, float64), in the order
    wte, wpe, lm_head, then per layer attn_wq, attn_wk, attn_wv, attn_wo, mlp_fc1, mlp_fc2.
    """

    def __init__(self, docs, seed=42):
        random.seed(seed)
        self.docs = list(docs)
        random.shuffle(self.docs)
        self.chars = sorted(set("".join(self.docs)))
        self.bos = len(self.chars)
        self.vocab_size = V = len(self.chars) + 1
        shapes = {"wte": (V, N_EMBD), "wpe": (BLOCK_SIZE, N_EMBD), "lm_head": (V, N_EMBD)}
        for i in range(N_LAYER):
            shapes.update({f"layer{i}.{w}": (N_EMBD, N_EMBD) for w in LAYER[:4]})
            shapes[f"layer{i}.mlp_fc1"] = (4 * N_EMBD, N_EMBD)
            shapes[f"layer{i}.mlp_fc2"] = (N_EMBD, 4 * N_EMBD)
        size = sum(r * c for r, c in shapes.values())
        self.theta = np.array([random.gauss(0, 0.08) for _ in range(size)])    # row by row, in order
        self.offsets, self.params, at = {}, {}, 0
        for name, (r, c) in shapes.items():
            self.offsets[name] = at
            self.params[name] = self.theta[at:at + r * c].reshape(r, c)
            at += r * c
        self.m, self.v = np.zeros(size), np.zeros(size)
        self.index = {c: k for k, c in enumerate(self.chars)}

    def tokens(self, doc):
        return [self.bos] + [self.index[c] for c in doc] + [self.bos]

    def adam(self, grad, s, steps):
        """One Adam update of theta (microgpt's arithmetic, element by element, in NumPy)."""
        lr = 0.01 * (1 - s / steps)
        c1, c2 = 1 - BETA1 ** (s + 1), 1 - BETA2 ** (s + 1)
        self.m[:] = BETA1 * self.m + (1 - BETA1) * grad
        self.v[:] = BETA2 * self.v + (1 - BETA2) * grad * grad
        self.theta -= lr * (self.m / c1) / (np.sqrt(self.v / c2) + EPS)


def softmax_floats(xs):
    """Max-subtracted softmax of Python floats (for sampling)."""
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


# --- scalar mode: every number a node ---------------------------------------------------------------------
class ScalarGPT:
    """microgpt's graph for sequences of n positions, every number a 0-d float64 node.

    Leaves: the parameter entries it uses (inputs with requires_grad, fed from theta each step), per position
    the 16 entries of the token's wte row (fed; their gradients go back to that row) and the next token's
    one-hot (27 floats: loss_p = -log(sum_j onehot_j * probs_j), exactly -log probs[target]). Each position's
    nodes are built in scopes pos{p}/embed, pos{p}/layer{i}/qkv, .../head{h}, .../attn_out, .../mlp and
    pos{p}/loss, and the parameters' leaves in one scope per matrix, so a diagram can fold them by position
    and head (draw()).
    """

    def __init__(self, run, n):
        self.run, self.n = run, n
        g = self.g = gd.Graph(dtype="float64")
        V = run.vocab_size
        self.leaves, self.slots = [], []          # param leaves and their positions in theta

        def matrix(name, rows=None):
            r, c = run.params[name].shape
            off = run.offsets[name]
            rows = range(r) if rows is None else rows
            out = []
            with g.scope(name):
                for i in rows:
                    row = [g.input(f"{i}_{j}", (), requires_grad=True) for j in range(c)]
                    self.leaves += row
                    self.slots += range(off + i * c, off + (i + 1) * c)
                    out.append(row)
            return out

        wpe = matrix("wpe", range(n))
        lm_head = matrix("lm_head")
        layers = [{w: matrix(f"layer{i}.{w}") for w in LAYER} for i in range(N_LAYER)]
        self.tok, self.onehot, losses, self.logits = [], [], [], []
        keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
        for p in range(n):
            with g.scope(f"pos{p}/tokens"):
                tok = [g.input(f"wte_{j}", (), requires_grad=True) for j in range(N_EMBD)]
                onehot = [g.input(f"onehot_{j}", ()) for j in range(V)]
            with g.scope(f"pos{p}/embed"):
                x = rmsnorm([t + q for t, q in zip(tok, wpe[p])])
            for i, W in enumerate(layers):
                with g.scope(f"pos{p}/layer{i}/qkv"):
                    r = x
                    x = rmsnorm(x)
                    q, k, v = linear(x, W["attn_wq"]), linear(x, W["attn_wk"]), linear(x, W["attn_wv"])
                keys[i].append(k)
                values[i].append(v)
                heads = []
                for h in range(N_HEAD):
                    with g.scope(f"pos{p}/layer{i}/head{h}"):
                        s = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
                        qh = q[s]
                        att = softmax([gd.add_n([a * b for a, b in zip(qh, kt[s])]) / HEAD_DIM ** 0.5
                                       for kt in keys[i]])
                        heads += [gd.add_n([att[t] * vt[s][j] for t, vt in enumerate(values[i])])
                                  for j in range(HEAD_DIM)]
                with g.scope(f"pos{p}/layer{i}/attn_out"):
                    x = [a + b for a, b in zip(linear(heads, W["attn_wo"]), r)]
                with g.scope(f"pos{p}/layer{i}/mlp"):
                    r = x
                    x = [gd.relu(a) for a in linear(rmsnorm(x), W["mlp_fc1"])]
                    x = [a + b for a, b in zip(linear(x, W["mlp_fc2"]), r)]
            with g.scope(f"pos{p}/loss"):
                logits = linear(x, lm_head)
                probs = softmax(logits)
                losses.append(-gd.log(gd.add_n([o * pr for o, pr in zip(onehot, probs)])))
            self.tok.append(tok)
            self.onehot.append(onehot)
            self.logits.append(logits)
        self.loss = gd.add_n(losses) / n
        self.slots = np.array(self.slots)

    def feeds(self, tokens):
        """{leaf: float}: parameters from theta, embedding rows and one-hots for tokens[:n + 1]."""
        run = self.run
        feeds = dict(zip(self.leaves, run.theta[self.slots].tolist()))
        for p in range(min(self.n, len(tokens))):
            feeds.update(zip(self.tok[p], run.params["wte"][tokens[p]].tolist()))
            if p + 1 < len(tokens):
                feeds.update((o, float(j == tokens[p + 1])) for j, o in enumerate(self.onehot[p]))
        return feeds

    def step(self, tokens, variant):
        """Loss and the flat gradient of one document (its first n + 1 tokens)."""
        g = self.g
        loss = g.forward(self.feeds(tokens), outputs=self.loss)
        g.backward(self.loss, variant=variant)
        grad = np.zeros_like(self.run.theta)
        np.add.at(grad, self.slots, [float(n.grad) for n in self.leaves])
        off = self.run.offsets["wte"]
        for p in range(self.n):
            at = off + tokens[p] * N_EMBD
            grad[at:at + N_EMBD] += [float(n.grad) for n in self.tok[p]]
        return float(loss), grad

    def last_logits(self, tokens):
        """The logits at the last of n positions for the prefix tokens (len n)."""
        out = self.g.forward(self.feeds(tokens), outputs=self.logits[self.n - 1])
        return [float(x) for x in out]


def linear(x, w):
    """W x for a list of nodes x and rows of nodes w."""
    return [gd.add_n([a * b for a, b in zip(row, x)]) for row in w]


def softmax(xs):
    """Max-subtracted softmax of a list of scalar nodes. The max is taken pairwise, a tree of maximum nodes
    (the same max, as many nodes as a running max, but a depth of log2(len(xs)) instead of len(xs) - 1: the
    engine runs the nodes of a level together)."""
    tops = list(xs)
    while len(tops) > 1:
        tops = [gd.maximum(a, b) for a, b in zip(tops[::2], tops[1::2])] + tops[len(tops) // 2 * 2:]
    top = tops[0]
    exps = [gd.exp(x - top) for x in xs]
    total = gd.add_n(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    scale = (gd.add_n([a * a for a in x]) / len(x) + 1e-5) ** -0.5
    return [a * scale for a in x]


# --- tensor mode: the same model on arrays ------------------------------------------------------------------
class TensorGPT:
    """microgpt's model for sequences of n positions on float64 arrays (rows are positions); the parameters
    are params of this graph, assigned from theta each step. The matrices that map x to W x are held as W^T
    (in, out), so a row x maps to x @ W^T with no transpose node: fewer ops at this size, where each op's
    cost is mostly its overhead."""

    def __init__(self, run, n):
        self.run, self.n = run, n
        g = self.g = gd.Graph(dtype="float64")
        P = self.P = {name: g.param(name, w) for name, w in self.values()}
        self.ids = g.input("ids", (n,), dtype="int64")
        self.targets = g.input("targets", (n,), dtype="int64")
        causal = g.constant(np.tril(np.ones((n, n), dtype=bool)), name="causal")
        x = rmsnorm_rows(gd.embedding(P["wte"], self.ids) + P["wpe"][:n])          # (n, C)
        for i in range(N_LAYER):
            with g.scope(f"layer{i}"):
                W = {w: P[f"layer{i}.{w}"] for w in LAYER}
                r = x
                x = rmsnorm_rows(x)
                q, k, v = (heads_first(x @ W[w]) for w in ("attn_wq", "attn_wk", "attn_wv"))  # (H, n, D)
                att = gd.where(causal, q @ k.transpose(0, 2, 1) / HEAD_DIM ** 0.5, -math.inf)   # (H, n, n)
                y = (gd.softmax(att, axis=-1) @ v).transpose(1, 0, 2).reshape(n, N_EMBD)      # (n, C)
                x = y @ W["attn_wo"] + r
                r = x
                x = gd.relu(rmsnorm_rows(x) @ W["mlp_fc1"]) @ W["mlp_fc2"] + r
        self.logits = x @ P["lm_head"]                                                      # (n, V)
        self.loss = gd.cross_entropy(self.logits, self.targets)

    def values(self):
        """(name, the value its param holds): wte and wpe as they are, the other matrices transposed."""
        for name, w in self.run.params.items():
            yield name, (w if name in EMBEDDINGS else w.T)

    def assign(self):
        for name, w in self.values():
            self.P[name].value = w

    def step(self, tokens, variant):
        self.assign()
        ids = np.array(tokens[:self.n + 1])
        loss, = self.g.forward_backward({self.ids: ids[:-1], self.targets: ids[1:]}, [self.loss], self.loss,
                                        variant=variant)
        grads = ((name, gd.to_numpy(node.grad)) for name, node in self.P.items())
        grad = np.concatenate([(g if name in EMBEDDINGS else g.T).ravel() for name, g in grads])
        return float(gd.to_numpy(loss)), grad

    def last_logits(self, tokens):
        self.assign()
        out = self.g.forward({self.ids: np.array(tokens)}, outputs=self.logits)
        return gd.to_numpy(out)[-1].tolist()


def heads_first(x):
    """(n, C) -> (H, n, D)"""
    return x.reshape(x.shape[0], N_HEAD, HEAD_DIM).transpose(1, 0, 2)


def rmsnorm_rows(x):
    return x * (gd.mean(x * x, axis=-1, keepdims=True) + 1e-5) ** -0.5


MODES = {"scalar": ScalarGPT, "tensor": TensorGPT}


class Trainer:
    """Training and sampling with one graph per sequence length, built when a length first comes up."""

    def __init__(self, docs, seed=42, mode="tensor", variant="children"):
        self.run = Run(docs, seed)
        self.model, self.variant, self.graphs = MODES[mode], variant, {}

    def graph(self, n):
        got = self.graphs.get(n)
        if got is None:
            got = self.graphs[n] = self.model(self.run, n)
        return got

    def step(self, s, steps):
        """Train on docs[s % len(docs)]; returns the loss."""
        run = self.run
        tokens = run.tokens(run.docs[s % len(run.docs)])
        n = min(BLOCK_SIZE, len(tokens) - 1)
        loss, grad = self.graph(n).step(tokens, self.variant)
        run.adam(grad, s, steps)
        return loss

    def sample(self, temperature=0.5):
        """One name: tokens drawn with random.choices from softmax(logits / temperature) until BOS."""
        run = self.run
        tokens = [run.bos]
        for pos in range(BLOCK_SIZE):
            logits = self.graph(pos + 1).last_logits(tokens)
            probs = softmax_floats([x / temperature for x in logits])
            token = random.choices(range(run.vocab_size), weights=probs)[0]
            if token == run.bos:
                break
            tokens.append(token)
        return "".join(run.chars[t] for t in tokens[1:])


def draw(docs, out_dir, name="jo", seed=42, formats=("svg", "png")):
    """microgpt's forward and backward graph for one short name, drawn with graphdiff.viz: scalar mode folded
    (each parameter matrix, and per position its embedding, queries/keys/values, each head, the attention
    output, the MLP and the loss, one box each; the backward pass, g.gradients, is the box "grad"), and
    tensor mode whole. Returns the paths written."""
    from graphdiff import viz
    run = Run(docs, seed)
    tokens = run.tokens(name)
    n = len(tokens) - 1
    paths = []
    sg = ScalarGPT(run, n)
    sg.g.forward(sg.feeds(tokens), outputs=sg.loss)
    sg.g.backward(sg.loss, retain_grads=True)       # the forward nodes' labels show their gradients
    wrt = sg.leaves + [t for row in sg.tok for t in row]
    nodes = viz.backward_graph(sg.g, sg.loss, "children", wrt=wrt)
    scopes = sorted({nd.scope for nd in sg.g.nodes if nd.scope}, key=_scope_key)
    ops = sum(nd.kind == "op" for nd in sg.g.nodes)
    title = (f"microgpt, scalar mode, the name '{name}' ({n} positions): {len(sg.g.nodes):,} scalar nodes "
             f"({ops:,} ops, forward and backward), folded by position and head")
    dot = viz.to_dot(nodes, collapse=scopes, rankdir="LR", title=title)
    paths += [viz.render(dot, os.path.join(out_dir, "microgpt_scalar"), format=f) for f in formats]
    tg = TensorGPT(run, n)
    ids = np.array(tokens)
    tg.g.forward({tg.ids: ids[:-1], tg.targets: ids[1:]}, outputs=tg.loss)
    tg.g.backward(tg.loss, retain_grads=True)
    nodes = viz.backward_graph(tg.g, tg.loss, "children")
    title = (f"microgpt, tensor mode, the name '{name}': forward and backward graph (g.gradients, pink; dashed: "
             "forward values the backward reads), whole")
    dot = viz.to_dot(nodes, rankdir="TB", max_nodes=None, title=title)
    paths += [viz.render(dot, os.path.join(out_dir, "microgpt_tensor"), format=f) for f in formats]
    return paths


def _scope_key(scope):
    """Scopes in build order: parameters first, then by position (pos10 after pos9)."""
    head, _, rest = scope.partition("/")
    return (1, int(head[3:]), rest) if head.startswith("pos") and head[3:].isdigit() else (0, 0, scope)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="documents, one per line (default: names.txt)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--mode", choices=tuple(MODES), default="tensor")
    p.add_argument("--variant", choices=gd.VARIANTS, default="children", help="backward variant")
    p.add_argument("--draw", metavar="DIR", help="instead of training, draw the forward and backward graphs of "
                   "the name 'jo' (scalar mode folded, tensor mode whole) into DIR as SVG and PNG")
    add_backend_argument(p)
    args = p.parse_args(argv)
    gd.set_backend(args.backend)
    if args.draw:
        for path in draw(load_docs(args.data), args.draw, seed=args.seed):
            print(f"wrote {path}")
        return
    trainer = Trainer(load_docs(args.data), args.seed, args.mode, args.variant)
    t = time.perf_counter()
    for s in range(args.steps):
        print(f"step {s + 1} loss {trainer.step(s, args.steps):.12f}")
    print(f"ms/step {(time.perf_counter() - t) * 1e3 / args.steps:.3f}")
    for k in range(20):
        print(f"sample {k + 1} {trainer.sample()}")


if __name__ == "__main__":
    main()
