"""A pure-Python scalar autograd engine of microgpt's structure: the peer examples/microgpt.py is measured against.

Every number is a `Value` (micrograd's pattern: data, grad, the inputs and the local derivatives recorded
when the node is made); the graph of a training step is rebuilt for every document, and its backward walks
a topological order of that graph (built with an explicit stack: no recursion). The model, the data order,
the initialisation, the loss, Adam and the sampling are those of issue 23 (see examples/microgpt.py), so a
run with the same seed and documents gives the same losses.

    python benchmarks/microgpt_ref.py [--data FILE] [--steps 1000] [--seed 42]

Nothing here uses graphdiff; it is a benchmark peer and a test oracle.
"""
import argparse
import math
import os
import random
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(ROOT, "examples", "data", "names.txt")
N_EMBD, N_HEAD, N_LAYER, BLOCK_SIZE = 16, 4, 1, 16
HEAD_DIM = N_EMBD // N_HEAD


class Value:
    """A scalar in the graph: its data, its gradient, its inputs and d(self)/d(input) for each."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0.0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k):                 # k a Python number
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def exp(self):
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def relu(self):
        return Value(max(0.0, self.data), (self,), (float(self.data > 0),))

    def __neg__(self):
        return self * -1.0

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def backward(self):
        """d self / d v into v.grad for every v self depends on (reverse topological order)."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:                      # iterative depth-first post-order
            v, done = stack.pop()
            if done:
                order.append(v)
                continue
            if id(v) in seen:
                continue
            seen.add(id(v))
            stack.append((v, True))
            for c in v._children:
                if id(c) not in seen:
                    stack.append((c, False))
        self.grad = 1.0
        for v in reversed(order):
            for c, d in zip(v._children, v._local_grads):
                c.grad += d * v.grad


# --- the model ------------------------------------------------------------------------------------------
def matrix(rows, cols):
    return [[Value(random.gauss(0, 0.08)) for _ in range(cols)] for _ in range(rows)]


def init_params(vocab_size):
    """The parameters in issue 23's order (wte, wpe, lm_head, then per layer attention and MLP)."""
    p = {"wte": matrix(vocab_size, N_EMBD), "wpe": matrix(BLOCK_SIZE, N_EMBD), "lm_head": matrix(vocab_size, N_EMBD)}
    for i in range(N_LAYER):
        for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
            p[f"layer{i}.{name}"] = matrix(N_EMBD, N_EMBD)
        p[f"layer{i}.mlp_fc1"] = matrix(4 * N_EMBD, N_EMBD)
        p[f"layer{i}.mlp_fc2"] = matrix(N_EMBD, 4 * N_EMBD)
    return p


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def softmax(logits):
    top = max(v.data for v in logits)
    exps = [(v - top).exp() for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def gpt(p, token, pos, keys, values):
    """Logits for position pos, appending its keys and values to the caches (one list per layer)."""
    x = rmsnorm([t + q for t, q in zip(p["wte"][token], p["wpe"][pos])])
    for i in range(N_LAYER):
        r = x
        x = rmsnorm(x)
        q, k, v = (linear(x, p[f"layer{i}.{w}"]) for w in ("attn_wq", "attn_wk", "attn_wv"))
        keys[i].append(k)
        values[i].append(v)
        heads = []
        for h in range(N_HEAD):
            s = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            qh, ks, vs = q[s], [kt[s] for kt in keys[i]], [vt[s] for vt in values[i]]
            att = softmax([sum(a * b for a, b in zip(qh, kh)) / HEAD_DIM ** 0.5 for kh in ks])
            heads.extend(sum(att[t] * vs[t][j] for t in range(len(vs))) for j in range(HEAD_DIM))
        x = [a + b for a, b in zip(linear(heads, p[f"layer{i}.attn_wo"]), r)]
        r = x
        x = rmsnorm(x)
        x = [xi.relu() for xi in linear(x, p[f"layer{i}.mlp_fc1"])]
        x = [a + b for a, b in zip(linear(x, p[f"layer{i}.mlp_fc2"]), r)]
    return linear(x, p["lm_head"])


# --- data, training, sampling -----------------------------------------------------------------------------
def load_docs(path=DEFAULT_DATA):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


class Model:
    """microgpt seeded: docs shuffled, vocabulary, parameters (random's draws in the issue's order)."""

    def __init__(self, docs, seed=42):
        random.seed(seed)
        self.docs = list(docs)
        random.shuffle(self.docs)
        self.chars = sorted(set("".join(self.docs)))
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        self.params = init_params(self.vocab_size)
        self.flat = [v for m in self.params.values() for row in m for v in row]
        self.m = [0.0] * len(self.flat)
        self.v = [0.0] * len(self.flat)

    def tokens(self, doc):
        return [self.bos] + [self.chars.index(c) for c in doc] + [self.bos]

    def step(self, s, steps):
        """One training step on docs[s % len(docs)]: the graph built, backward, Adam. Returns the loss."""
        tokens = self.tokens(self.docs[s % len(self.docs)])
        n = min(BLOCK_SIZE, len(tokens) - 1)
        keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
        losses = []
        for pos in range(n):
            probs = softmax(gpt(self.params, tokens[pos], pos, keys, values))
            losses.append(-probs[tokens[pos + 1]].log())
        loss = (1 / n) * sum(losses)
        loss.backward()
        lr = 0.01 * (1 - s / steps)
        b1, b2, eps = 0.85, 0.99, 1e-8
        c1, c2 = 1 - b1 ** (s + 1), 1 - b2 ** (s + 1)
        m, v = self.m, self.v
        for j, p in enumerate(self.flat):
            g = p.grad
            m[j] = b1 * m[j] + (1 - b1) * g
            v[j] = b2 * v[j] + (1 - b2) * g * g
            p.data -= lr * (m[j] / c1) / (math.sqrt(v[j] / c2) + eps)
            p.grad = 0.0
        return loss.data

    def sample(self, temperature=0.5):
        """One name: tokens drawn with random.choices from softmax(logits / temperature) until BOS."""
        keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
        token, out = self.bos, []
        for pos in range(BLOCK_SIZE):
            logits = gpt(self.params, token, pos, keys, values)
            probs = softmax([v / temperature for v in logits])
            token = random.choices(range(self.vocab_size), weights=[p.data for p in probs])[0]
            if token == self.bos:
                break
            out.append(self.chars[token])
        return "".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    model = Model(load_docs(args.data), args.seed)
    t = time.perf_counter()
    for s in range(args.steps):
        print(f"step {s + 1} loss {model.step(s, args.steps):.12f}")
    print(f"ms/step {(time.perf_counter() - t) * 1e3 / args.steps:.3f}")
    for k in range(20):
        print(f"sample {k + 1} {model.sample()}")


if __name__ == "__main__":
    main()
