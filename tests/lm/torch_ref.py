"""A PyTorch (float64) re-implementation of graphdiff.lm.GPT used as the test oracle: same weights by name."""
import math

import torch
import torch.nn.functional as TF


def gpt_loss(state, cfg, idx, targets, key_mask):
    """Loss, {name: gradient} and logits for a graphdiff GPT state_dict, computed in torch float64."""
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in state.items()}
    loss, logits = gpt_loss_of(P, cfg, idx, targets, key_mask)
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in P.items()}, logits.detach().numpy()


def gpt_loss_of(P, cfg, idx, targets, key_mask):
    """The loss tensor (and logits) of a GPT with torch parameters P named as graphdiff's state_dict."""
    B, T = idx.shape
    C, nh = cfg["n_embd"], cfg["n_head"]
    hs = C // nh
    idx_t = torch.tensor(idx)
    x = P["wte.weight"][idx_t]
    if cfg["pos"] == "learned":
        x = x + P["wpe.weight"][:T]
    else:
        from graphdiff.lm.gpt import sinusoidal_table
        x = x + torch.tensor(sinusoidal_table(cfg["block_size"], C)[:T])
    km = torch.tensor(key_mask)
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None] & km[:, None, None, :]

    def ln(x, p):
        return TF.layer_norm(x, (C,), P[p + ".weight"], P[p + ".bias"], eps=1e-5)

    def lin(x, p, bias=True):
        y = x @ P[p + ".weight"]
        return y + P[p + ".bias"] if bias else y

    def attn(x, p):
        q, k, v = lin(x, p + ".c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return lin(y, p + ".c_proj")

    def mlp(x, p):
        return lin(TF.gelu(lin(x, p + ".c_fc"), approximate="tanh"), p + ".c_proj")

    for l in range(cfg["n_layer"]):
        p = f"h.{l}"
        if cfg["norm"] == "pre":
            x = x + attn(ln(x, p + ".ln_1"), p + ".attn")
            x = x + mlp(ln(x, p + ".ln_2"), p + ".mlp")
        else:
            x = ln(x + attn(x, p + ".attn"), p + ".ln_1")
            x = ln(x + mlp(x, p + ".mlp"), p + ".ln_2")
    logits = lin(ln(x, "ln_f"), "lm_head", bias=False)
    loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.tensor(targets).reshape(-1),
                            ignore_index=cfg["pad_id"])
    return loss, logits


def rnn_loss(state, idx, targets, pad_id):
    """Loss and grads of graphdiff's RNNLM (state_dict names) in torch float64, step by step."""
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in state.items()}
    B, T = idx.shape
    x = P["wte.weight"][torch.tensor(idx)]
    h = torch.zeros(B, P["cell.weight_hh"].shape[0], dtype=torch.float64)
    hs = []
    for t in range(T):
        h = torch.tanh(x[:, t] @ P["cell.weight_ih"] + h @ P["cell.weight_hh"] + P["cell.bias"])
        hs.append(h)
    logits = torch.stack(hs, 1) @ P["lm_head.weight"] + P["lm_head.bias"]
    loss = TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.tensor(targets).reshape(-1),
                            ignore_index=pad_id)
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in P.items()}
