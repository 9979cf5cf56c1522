"""graphdiff.lm.GPT's architecture (pre-LN, learned positions, tanh GELU, key padding mask, tied to nothing)
written for its peers, all taking the parameters by graphdiff's state_dict names:

- torch_loss(P, cfg, idx, targets, key_mask): PyTorch eager (copied from tests/lm/torch_ref.py's float64
  oracle, any dtype; masked scores get graphdiff's finite NEG instead of -inf, so padded rows agree);
- autograd_loss(P, cfg, idx, targets, key_mask): HIPS autograd (autograd.numpy);
- NumpyGPT: a hand-written NumPy forward + backward step, the floor: 2-D GEMMs, fused formulas for layer
  norm, softmax, GELU and cross-entropy backward, nothing clever beyond that.
"""
import math

import numpy as np

NEG = -1e9            # graphdiff.nn.attention.NEG
GELU_C = math.sqrt(2.0 / math.pi)
CONFIGS = {
    "tiny": dict(vocab_size=65, n_embd=64, n_head=4, n_layer=2, block_size=64, batch_size=16),
    "small": dict(vocab_size=65, n_embd=128, n_head=4, n_layer=4, block_size=128, batch_size=32),
    "gpu": dict(vocab_size=65, n_embd=384, n_head=6, n_layer=6, block_size=256, batch_size=64),
}


def model_config(cfg):
    """graphdiff.lm.GPT keyword arguments from a CONFIGS entry."""
    return {k: cfg[k] for k in ("vocab_size", "n_embd", "n_head", "n_layer", "block_size")}


def batch(cfg, seed=0, pad_tail=0):
    """idx, targets (B, T) int64 in 1..V-1 (0 is <pad>) and key_mask (B, T) bool; pad_tail pads that many
    final positions of the first row (so the masks do some work)."""
    rng = np.random.default_rng(seed)
    B, T, V = cfg["batch_size"], cfg["block_size"], cfg["vocab_size"]
    idx = rng.integers(1, V, (B, T)).astype(np.int64)
    targets = rng.integers(1, V, (B, T)).astype(np.int64)
    mask = np.ones((B, T), dtype=bool)
    if pad_tail:
        idx[0, -pad_tail:] = 0
        targets[0, -pad_tail:] = 0
        mask[0, -pad_tail:] = False
    return idx, targets, mask


# --- PyTorch ---------------------------------------------------------------------------------------------
def torch_loss(P, cfg, idx, targets, key_mask, pad_id=0):
    """Loss tensor of the GPT with torch parameters P (graphdiff names); idx etc. are torch tensors."""
    import torch
    import torch.nn.functional as TF
    B, T = idx.shape
    C, nh = cfg["n_embd"], cfg["n_head"]
    hs = C // nh
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool, device=idx.device))[None, None] \
        & key_mask[:, None, None, :]

    def ln(x, p):
        return TF.layer_norm(x, (C,), P[p + ".weight"], P[p + ".bias"], eps=1e-5)

    def lin(x, p, bias=True):
        y = x @ P[p + ".weight"]
        return y + P[p + ".bias"] if bias else y

    def attn(x, p):
        q, k, v = lin(x, p + ".c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~allowed, NEG).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return lin(y, p + ".c_proj")

    def mlp(x, p):
        return lin(TF.gelu(lin(x, p + ".c_fc"), approximate="tanh"), p + ".c_proj")

    for li in range(cfg["n_layer"]):
        p = f"h.{li}"
        x = x + attn(ln(x, p + ".ln_1"), p + ".attn")
        x = x + mlp(ln(x, p + ".ln_2"), p + ".mlp")
    logits = lin(ln(x, "ln_f"), "lm_head", bias=False)
    return TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id)


def torch_greedy_logits(P, cfg, idx):
    """Logits (1, T, V) for a (1, T) prompt without a cache (the forward of torch_loss up to lm_head)."""
    import torch
    import torch.nn.functional as TF
    B, T = idx.shape
    C, nh = cfg["n_embd"], cfg["n_head"]
    hs = C // nh
    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
    for li in range(cfg["n_layer"]):
        p = f"h.{li}"
        h = TF.layer_norm(x, (C,), P[p + ".ln_1.weight"], P[p + ".ln_1.bias"], eps=1e-5)
        q, k, v = (h @ P[p + ".attn.c_attn.weight"] + P[p + ".attn.c_attn.bias"]).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        att = ((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))).masked_fill(~allowed, NEG).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ P[p + ".attn.c_proj.weight"] + P[p + ".attn.c_proj.bias"]
        h = TF.layer_norm(x, (C,), P[p + ".ln_2.weight"], P[p + ".ln_2.bias"], eps=1e-5)
        h = TF.gelu(h @ P[p + ".mlp.c_fc.weight"] + P[p + ".mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ P[p + ".mlp.c_proj.weight"] + P[p + ".mlp.c_proj.bias"]
    x = TF.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], eps=1e-5)
    return x @ P["lm_head.weight"]


# --- HIPS autograd ---------------------------------------------------------------------------------------
def autograd_loss(P, cfg, idx, targets, key_mask, pad_id=0):
    """The same loss in autograd.numpy (differentiable in P, a dict of arrays)."""
    import autograd.numpy as anp
    B, T = idx.shape
    C, nh = cfg["n_embd"], cfg["n_head"]
    hs = C // nh
    allowed = np.tril(np.ones((T, T), dtype=bool))[None, None] & key_mask[:, None, None, :]

    def ln(x, p):
        mu = anp.mean(x, axis=-1, keepdims=True)
        xc = x - mu
        var = anp.mean(xc * xc, axis=-1, keepdims=True)
        return xc / anp.sqrt(var + 1e-5) * P[p + ".weight"] + P[p + ".bias"]

    def lin(x, p, bias=True):
        y = anp.dot(x.reshape(-1, x.shape[-1]), P[p + ".weight"]).reshape(x.shape[:-1] + (-1,))
        return y + P[p + ".bias"] if bias else y

    def softmax(a):
        e = anp.exp(a - anp.max(a, axis=-1, keepdims=True))
        return e / anp.sum(e, axis=-1, keepdims=True)

    x = P["wte.weight"][idx] + P["wpe.weight"][:T]
    for li in range(cfg["n_layer"]):
        p = f"h.{li}"
        qkv = lin(ln(x, p + ".ln_1"), p + ".attn.c_attn").reshape(B, T, 3, nh, hs)
        q = anp.transpose(qkv[:, :, 0], (0, 2, 1, 3))
        k = anp.transpose(qkv[:, :, 1], (0, 2, 1, 3))
        v = anp.transpose(qkv[:, :, 2], (0, 2, 1, 3))
        att = anp.matmul(q, anp.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(hs))
        att = softmax(anp.where(allowed, att, NEG))
        y = anp.transpose(anp.matmul(att, v), (0, 2, 1, 3)).reshape(B, T, C)
        x = x + lin(y, p + ".attn.c_proj")
        h = lin(ln(x, p + ".ln_2"), p + ".mlp.c_fc")
        h = 0.5 * h * (1.0 + anp.tanh(GELU_C * (h + 0.044715 * h * h * h)))
        x = x + lin(h, p + ".mlp.c_proj")
    logits = lin(ln(x, "ln_f"), "lm_head", bias=False).reshape(B * T, -1)
    z = logits - anp.max(logits, axis=-1, keepdims=True)
    logp = z - anp.log(anp.sum(anp.exp(z), axis=-1, keepdims=True))
    t = targets.reshape(-1)
    valid = t != pad_id
    picked = logp[np.arange(B * T), t]
    return -anp.sum(picked * valid) / max(int(valid.sum()), 1)


# --- hand-written NumPy ----------------------------------------------------------------------------------
def _ln_fwd(x, w, b):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + np.float32(1e-5))
    xhat = xc * rstd
    return xhat * w + b, (xhat, rstd, w)


def _ln_bwd(dy, cache):
    xhat, rstd, w = cache
    dw = (dy * xhat).reshape(-1, xhat.shape[-1]).sum(0)
    db = dy.reshape(-1, xhat.shape[-1]).sum(0)
    dxhat = dy * w
    dx = dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    dx *= rstd
    return dx, dw, db


class NumpyGPT:
    """One forward + backward of the GPT by hand in NumPy; step(idx, targets, key_mask) -> (loss, grads)."""

    def __init__(self, state, cfg, pad_id=0):
        self.P = {k: np.asarray(v) for k, v in state.items()}
        self.cfg, self.pad_id = cfg, pad_id
        self.dtype = self.P["wte.weight"].dtype

    def step(self, idx, targets, key_mask):
        P, cfg, f = self.P, self.cfg, self.dtype.type
        B, T = idx.shape
        C, nh, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
        hs, N = C // nh, B * T
        scale = f(1.0 / math.sqrt(hs))
        allowed = np.tril(np.ones((T, T), dtype=bool))[None, None] & key_mask[:, None, None, :]  # (B,1,T,T)
        x = (P["wte.weight"][idx] + P["wpe.weight"][:T]).reshape(N, C)                            # (N, C)
        caches = []
        for li in range(L):
            p = f"h.{li}."
            a, ln1 = _ln_fwd(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"])                         # (N, C)
            qkv = a @ P[p + "attn.c_attn.weight"] + P[p + "attn.c_attn.bias"]                     # (N, 3C)
            qkv = qkv.reshape(B, T, 3, nh, hs).transpose(2, 0, 3, 1, 4)                            # (3,B,nh,T,hs)
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = np.matmul(q, k.swapaxes(-1, -2))                                                 # (B,nh,T,T)
            att *= scale
            np.copyto(att, f(NEG), where=~allowed)
            att -= att.max(-1, keepdims=True)
            np.exp(att, out=att)
            att /= att.sum(-1, keepdims=True)
            y = np.matmul(att, v).transpose(0, 2, 1, 3).reshape(N, C)                              # (N, C)
            x = x + (y @ P[p + "attn.c_proj.weight"] + P[p + "attn.c_proj.bias"])
            m, ln2 = _ln_fwd(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"])
            h = m @ P[p + "mlp.c_fc.weight"] + P[p + "mlp.c_fc.bias"]                              # (N, 4C)
            t = np.tanh(GELU_C * (h + f(0.044715) * h * h * h))
            gelu = f(0.5) * h * (1 + t)
            x = x + (gelu @ P[p + "mlp.c_proj.weight"] + P[p + "mlp.c_proj.bias"])
            caches.append((a, ln1, q, k, v, att, y, m, ln2, h, t, gelu))
        xf, lnf = _ln_fwd(x, P["ln_f.weight"], P["ln_f.bias"])
        logits = xf @ P["lm_head.weight"]                                                          # (N, V)
        tg = targets.reshape(-1)
        valid = tg != self.pad_id
        n_valid = max(int(valid.sum()), 1)
        logits -= logits.max(-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(-1, keepdims=True)                                                    # probs
        rows = np.arange(N)
        loss = -np.log(logits[rows, tg][valid]).sum() / n_valid
        # backward
        G = {}
        dlogits = logits
        dlogits[rows, tg] -= 1
        dlogits *= (valid / f(n_valid)).astype(self.dtype)[:, None]
        G["lm_head.weight"] = xf.T @ dlogits
        dx, G["ln_f.weight"], G["ln_f.bias"] = _ln_bwd(dlogits @ P["lm_head.weight"].T, lnf)
        for li in reversed(range(L)):
            p = f"h.{li}."
            a, ln1, q, k, v, att, y, m, ln2, h, t, gelu = caches[li]
            # MLP
            G[p + "mlp.c_proj.weight"] = gelu.T @ dx
            G[p + "mlp.c_proj.bias"] = dx.sum(0)
            dg = dx @ P[p + "mlp.c_proj.weight"].T                                                 # (N, 4C)
            dh = dg * (f(0.5) * (1 + t) + f(0.5) * h * (1 - t * t) * GELU_C * (1 + f(3 * 0.044715) * h * h))
            G[p + "mlp.c_fc.weight"] = m.T @ dh
            G[p + "mlp.c_fc.bias"] = dh.sum(0)
            dm, G[p + "ln_2.weight"], G[p + "ln_2.bias"] = _ln_bwd(dh @ P[p + "mlp.c_fc.weight"].T, ln2)
            dx = dx + dm
            # attention
            G[p + "attn.c_proj.weight"] = y.T @ dx
            G[p + "attn.c_proj.bias"] = dx.sum(0)
            dy = (dx @ P[p + "attn.c_proj.weight"].T).reshape(B, T, nh, hs).transpose(0, 2, 1, 3)  # (B,nh,T,hs)
            datt = np.matmul(dy, v.swapaxes(-1, -2))                                               # (B,nh,T,T)
            dv = np.matmul(att.swapaxes(-1, -2), dy)
            datt -= (datt * att).sum(-1, keepdims=True)
            datt *= att
            datt *= scale
            dq = np.matmul(datt, k)
            dk = np.matmul(datt.swapaxes(-1, -2), q)
            dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(N, 3 * C)               # (N, 3C)
            G[p + "attn.c_attn.weight"] = a.T @ dqkv
            G[p + "attn.c_attn.bias"] = dqkv.sum(0)
            da, G[p + "ln_1.weight"], G[p + "ln_1.bias"] = _ln_bwd(dqkv @ P[p + "attn.c_attn.weight"].T, ln1)
            dx = dx + da
        dx = dx.reshape(B, T, C)
        G["wpe.weight"] = np.zeros_like(P["wpe.weight"])
        G["wpe.weight"][:T] = dx.sum(0)
        G["wte.weight"] = np.zeros_like(P["wte.weight"])
        np.add.at(G["wte.weight"], idx.reshape(-1), dx.reshape(N, C))
        return float(loss), G
