"""Generation: greedy decoding and ancestral sampling (temperature, top-k), by full recompute of the prefix
or incrementally with a KV cache (GPT) / the carried hidden state (RNN-LM).

The KV cache holds, per layer, the keys and values of the past positions in fixed (B, nh, block_size-1, hs)
arrays; one "step" graph (built once) attends from the new token to them through an additive mask
(0 where a key is filled, NEG where not), so its logits equal the full recompute's (exp(NEG) is exactly 0).
Past block_size tokens the context slides, and each step recomputes the last block_size tokens.
Full recompute (and the cache's prefill) pads the context with <pad> to a multiple of BUCKET positions, so
a handful of graphs serve every length; causal masking keeps the padding from changing any real position.

On a GPU, one token costs one device -> host transfer: the (V,) logits row of the last position (sliced on
the device) comes back, and the token is picked on the host with NumPy's generator (the same samples on
every backend). The cache stays on the device, and so does its attention mask, updated in place; only the
new token's id and position go over (a few bytes, no sync). With cuda_graph=True the step graph's GPU work
is recorded once as a CUDA graph (graphdiff/lm/capture.py) and each token is one launch; the cache then lives
in that graph's own input arrays.
"""
import numpy as np

from .gpt import NEG

BUCKET = 16      # full recompute and prefill pad the context to a multiple of this: one graph per bucket


def _pick(logits, rng, greedy, temperature, top_k):
    """Next id from (V,) host logits: argmax, or a sample from softmax(logits / temperature) kept to top_k."""
    if greedy or temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64)
    with np.errstate(over="ignore"):        # shifted first: a tiny temperature gives 0 and -inf, never inf - inf
        z = (z - z.max()) / temperature
    if top_k:
        kth = np.sort(z)[-min(top_k, len(z))]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


class Decoder:
    """Next-token logits for a growing sequence (batch of 1), with or without a cache.

    Args:
        model: a GPT or RNNLM (set to eval mode).  use_cache: KV cache / carried state, else recompute.
        cuda_graph: record the GPT's KV-cache step as a CUDA graph and launch it per token (CuPy).
    """

    def __init__(self, model, use_cache=True, cuda_graph=False):
        self.model = model.eval()
        self.use_cache = use_cache
        self.F = model.backend
        self.ids = []
        self.recording = None
        if cuda_graph:
            from .capture import Recording
            if not (use_cache and model.kind == "gpt"):
                raise ValueError("cuda_graph records the KV-cache step of a GPT: use it with use_cache=True "
                                 f"on a GPT (this is {'an RNN-LM' if model.kind == 'rnn' else 'no cache'})")
            self.recording = Recording(model.backend, fix="leave out --cuda-graph (cuda_graph=True)")
            self.step_prog = model.build_program(("step", 1))   # its own graph: its inputs hold the cache

    def start(self, ids):
        """Feed the prompt ids; returns the logits (V,) after its last token (host float64 array)."""
        if not ids:
            raise ValueError("the prompt is empty; give at least one character or token")
        self.ids = list(ids)
        if not self.use_cache:
            return self._host_row(self._full())
        if self.model.kind == "rnn":
            self.h = self.F.zeros((1, self.model.config["n_hidden"]), dtype=self.F.dtypes[self.model.dtype])
            for t in ids:
                row = self._rnn_step(t)
            return self._host_row(row)
        return self._host_row(self._prefill())

    def push(self, token):
        """Append one token; returns the logits (V,) for the position after it."""
        self.ids.append(int(token))
        if not self.use_cache:
            return self._host_row(self._full())
        if self.model.kind == "rnn":
            return self._host_row(self._rnn_step(token))
        T = self.model.config["block_size"]
        if self.n >= T:                        # the cache is full: slide the window by recomputing
            return self._host_row(self._prefill())
        return self._host_row(self._gpt_step(token))

    def _host_row(self, row):
        """The (V,) logits row on the host as float64: the token's one device -> host transfer."""
        return self.F.to_numpy(row).astype(np.float64)

    # --- full recompute -------------------------------------------------------------------------
    def _context(self):
        if self.model.kind == "gpt":
            return self.ids[-self.model.config["block_size"]:]
        return self.ids

    def _padded(self, ctx):
        """ctx right-padded with <pad> to a multiple of BUCKET, so a few graphs serve every length (causal
        attention and the RNN never let a padded position change an earlier one)."""
        n = len(ctx)
        Tb = -(-n // BUCKET) * BUCKET
        if self.model.kind == "gpt":
            Tb = min(Tb, self.model.config["block_size"])
        idx = np.full((1, Tb), self.model.pad_id, dtype=np.int64)
        idx[0, :n] = ctx
        mask = np.zeros((1, Tb), dtype=bool)
        mask[0, :n] = True
        return idx, mask

    def _full(self):
        ctx = self._context()
        idx, mask = self._padded(ctx)
        logits = self.model.forward_logits(idx, mask)                  # (1, Tb, V)
        return logits[0, len(ctx) - 1, :]                                 # (V,) on the device

    # --- GPT with a KV cache -------------------------------------------------------------------
    def _prefill(self):
        m, F = self.model, self.F
        cfg = m.config
        T, nh, L = cfg["block_size"], cfg["n_head"], cfg["n_layer"]
        P, hs = T - 1, cfg["n_embd"] // nh
        ctx = self.ids[-T:]
        # the cache keeps at most P positions: prefill all but the last token, then one cached step
        head, last = ctx[:-1], ctx[-1]
        dt = F.dtypes[m.dtype]
        self.k = [F.zeros((1, nh, P, hs), dtype=dt) for _ in range(L)]
        self.v = [F.zeros((1, nh, P, hs), dtype=dt) for _ in range(L)]
        self.bias = F.full((1, 1, 1, P + 1), NEG, dtype=dt)     # additive mask, on the device
        self.bias[..., P] = 0.0                                  # the new token sees itself
        if self.recording is not None:          # the cache is the recorded step's input arrays, reset in place
            self.k, self.v, self.bias = self._recorded_cache(L)
        self.n = 0
        if head:
            n = len(head)
            idx, mask = self._padded(head)
            prog = m.programs(("logits", 1, idx.shape[1]))
            names = [f"k.{l}" for l in range(L)] + [f"v.{l}" for l in range(L)]
            outs = prog.run({"idx": idx, "key_mask": mask}, names)
            for l in range(L):
                self.k[l][:, :, :n, :] = outs[l][:, :, :n, :]
                self.v[l][:, :, :n, :] = outs[L + l][:, :, :n, :]
            self.n = n
            self.bias[..., :n] = 0.0
        return self._gpt_step(last)

    def _recorded_cache(self, L):
        """The recorded step's cache inputs (k, v per layer, bias), given the fresh cache's values in place."""
        from .capture import feed_in_place
        prog = self.step_prog
        fresh = {"bias": self.bias}
        for l in range(L):
            fresh[f"past_k.{l}"], fresh[f"past_v.{l}"] = self.k[l], self.v[l]
        feed_in_place(prog, fresh)
        return ([prog.inputs[f"past_k.{l}"].value for l in range(L)],
                [prog.inputs[f"past_v.{l}"].value for l in range(L)], prog.inputs["bias"].value)

    def _gpt_step(self, token):
        m = self.model
        cfg = m.config
        L, P = cfg["n_layer"], cfg["block_size"] - 1
        names = ["logits"] + [f"k.{l}" for l in range(L)] + [f"v.{l}" for l in range(L)]
        new = {"idx": np.asarray([[token]], dtype=np.int64), "pos": np.asarray([self.n], dtype=np.int64)}
        if self.recording is not None:
            from .capture import feed_in_place
            prog = self.step_prog
            outs = self.recording.run(lambda: feed_in_place(prog, new), lambda: prog.run({}, names))
        else:
            feeds = dict(new, bias=self.bias)
            for l in range(L):
                feeds[f"past_k.{l}"], feeds[f"past_v.{l}"] = self.k[l], self.v[l]
            outs = m.programs(("step", 1)).run(feeds, names)
        if self.n < P:
            for l in range(L):
                self.k[l][:, :, self.n:self.n + 1, :] = outs[1 + l]
                self.v[l][:, :, self.n:self.n + 1, :] = outs[1 + L + l]
            self.bias[..., self.n] = 0.0                         # position n now holds a key
        self.n += 1
        return outs[0][0, -1, :]

    # --- RNN-LM with the carried hidden state ---------------------------------------------------
    def _rnn_step(self, token):
        prog = self.model.programs(("step", 1))
        logits, self.h = prog.run({"idx": np.asarray([[token]], dtype=np.int64), "h": self.h}, ("logits", "h"))
        return logits[0, -1, :]


def generate(model, prompt_ids, max_new_tokens, greedy=False, temperature=1.0, top_k=None, seed=0,
             use_cache=True, cuda_graph=False):
    """Continue prompt_ids by max_new_tokens tokens. Returns the list of new ids.

    Args:
        greedy: always take the most likely token (a heuristic: the most likely next token need not start
            the most likely sequence; see beam_search and sequence_logprob).
        temperature, top_k: else sample each token from the model's next-token distribution, each one
            conditioned on those drawn before: ancestral sampling. temperature=1 and top_k=None is plain
            ancestral sampling from the model; temperature divides the logits (below 1 sharpens the
            distribution towards greedy, above 1 flattens it) and top_k keeps only the k most likely
            tokens: both change the distribution sampled from. NumPy generator seeded with `seed`.
        use_cache: KV cache (GPT) / carried hidden state (RNN); False recomputes the whole prefix.
        cuda_graph: a GPT's KV-cache step recorded once as a CUDA graph and launched per token (CuPy).
    """
    if not greedy and not 0 <= temperature < np.inf:
        raise ValueError(f"generate: temperature={temperature!r}; expected a finite number >= 0 (0 is greedy)")
    rng = np.random.default_rng(seed)
    dec = Decoder(model, use_cache, cuda_graph)
    logits = dec.start(list(prompt_ids))
    out = []
    for _ in range(max_new_tokens):
        logits[model.pad_id] = -np.inf                         # never generate <pad>
        nxt = _pick(logits, rng, greedy, temperature, top_k)
        out.append(nxt)
        if len(out) == max_new_tokens:
            break
        logits = dec.push(nxt)
    return out


def next_logprobs(logits, pad_id):
    """log p(next token) over the vocabulary from (V,) host logits, <pad> excluded as generate excludes it."""
    z = np.asarray(logits, dtype=np.float64).copy()
    z[pad_id] = -np.inf
    m = z.max()
    return z - (m + np.log(np.sum(np.exp(z - m))))


def sequence_logprob(model, prompt_ids, ids):
    """Total log-probability log p(ids | prompt) = sum_t log p(ids[t] | prompt, ids[:t]) under the model."""
    dec = Decoder(model)
    logits = dec.start(list(prompt_ids))
    total = 0.0
    for k, t in enumerate(ids):
        total += float(next_logprobs(logits, model.pad_id)[t])
        if k + 1 < len(ids):
            logits = dec.push(t)
    return total


def beam_search(model, prompt_ids, max_new_tokens, width=4):
    """The `width` best partial sequences kept at each step (by total log-probability), each extended by
    its `width` most likely next tokens. Returns (ids, total log-probability) of the best final sequence.
    width=1 is greedy decoding; a wider beam searches more paths and usually finds a more likely one, but
    not always: greedy's own path can fall out of the beam early."""
    beams = [(0.0, [])]
    for _ in range(max_new_tokens):
        candidates = []
        for score, ids in beams:
            lp = next_logprobs(Decoder(model).start(list(prompt_ids) + ids), model.pad_id)
            for t in np.argsort(-lp)[:width]:
                candidates.append((score + float(lp[t]), ids + [int(t)]))
        candidates.sort(key=lambda c: -c[0])
        beams = candidates[:width]
    score, ids = beams[0]
    return ids, score
