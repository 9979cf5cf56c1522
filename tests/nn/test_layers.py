"""Layers, attention and the RNN cell against PyTorch in float64: values and every gradient."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import graphdiff as gd
from graphdiff import nn


def run(module, feeds, build):
    """Build loss = sum(build(module, inputs) * W) with a fixed random W, return (loss, {name: grad})."""
    g = gd.Graph(dtype="float64")
    ins = {k: g.input(k, v.shape, dtype=("int64" if v.dtype.kind == "i" else "bool" if v.dtype == bool
                                          else None)) for k, v in feeds.items()}
    y = build(module, ins)
    W = np.random.default_rng(5).standard_normal(y.shape)
    loss = gd.sum(y * g.constant(W))
    prog = nn.Program(module, g, ins, {"loss": loss})
    (val,) = prog.run(feeds, ("loss",), backward="loss")
    return float(val), {n: gd.to_numpy(p.grad) for n, p in module.named_parameters()}, W


def torch_params(module):
    return {n: torch.tensor(v, requires_grad=True) for n, v in module.state_dict().items()}


def check(loss, grads, tloss, tp):
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12, abs=1e-12)
    for n, t in tp.items():
        np.testing.assert_allclose(grads[n], t.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=n)


def test_linear_layernorm_mlp_match_torch():
    x = np.random.default_rng(0).standard_normal((2, 3, 6))
    m = nn.Module(dtype="float64")
    m.fc = nn.Linear(6, 5, rng=1, dtype="float64")
    m.ln = nn.LayerNorm(5, dtype="float64")
    m.mlp = nn.MLP(5, 20, std=0.3, rng=2, dtype="float64")
    m.ln.weight.data = m.ln.weight.data + 0.3
    loss, grads, W = run(m, {"x": x}, lambda mod, i: mod.mlp(mod.ln(mod.fc(i["x"]))))
    tp = torch_params(m)
    h = torch.tensor(x) @ tp["fc.weight"] + tp["fc.bias"]
    h = TF.layer_norm(h, (5,), tp["ln.weight"], tp["ln.bias"])
    h = TF.gelu(h @ tp["mlp.c_fc.weight"] + tp["mlp.c_fc.bias"], approximate="tanh")
    h = h @ tp["mlp.c_proj.weight"] + tp["mlp.c_proj.bias"]
    check(loss, grads, (h * torch.tensor(W)).sum(), tp)


def test_embedding_matches_torch_with_repeated_ids():
    ids = np.array([[1, 3, 1], [0, 3, 3]])
    m = nn.Embedding(4, 3, rng=0, dtype="float64")
    loss, grads, W = run(m, {"ids": ids}, lambda mod, i: mod(i["ids"]))
    tp = torch_params(m)
    check(loss, grads, (tp["weight"][torch.tensor(ids)] * torch.tensor(W)).sum(), tp)


@pytest.mark.parametrize("padded", [False, True])
def test_causal_attention_with_padding_mask_matches_torch(padded):
    B, T, C, nh = 2, 5, 8, 2
    x = np.random.default_rng(0).standard_normal((B, T, C))
    mask = np.ones((B, T), dtype=bool)
    if padded:
        mask[1, 3:] = False
    att = nn.CausalSelfAttention(C, nh, std=0.5, rng=3, dtype="float64")
    loss, grads, W = run(att, {"x": x, "mask": mask}, lambda mod, i: mod(i["x"], i["mask"]))
    tp = torch_params(att)
    xt = torch.tensor(x)
    q, k, v = (xt @ tp["c_attn.weight"] + tp["c_attn.bias"]).split(C, dim=2)
    q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool)) & torch.tensor(mask)[:, None, None, :]
    y = TF.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    y = y.transpose(1, 2).reshape(B, T, C) @ tp["c_proj.weight"] + tp["c_proj.bias"]
    check(loss, grads, (y * torch.tensor(W)).sum(), tp)


def test_rnn_cell_unrolled_matches_torch_rnncell():
    B, T, I, H = 3, 4, 2, 5
    x = np.random.default_rng(0).standard_normal((B, T, I))
    cell = nn.RNNCell(I, H, rng=4, dtype="float64")

    def build(mod, i):
        h = i["x"].graph.constant(np.zeros((B, H)))
        hs = []
        for t in range(T):
            h = mod(i["x"][:, t], h)
            hs.append(h)
        return gd.stack(hs, axis=1)
    loss, grads, W = run(cell, {"x": x}, build)
    tc = torch.nn.RNNCell(I, H, dtype=torch.float64)
    with torch.no_grad():
        tc.weight_ih.copy_(torch.tensor(cell.weight_ih.numpy().T))
        tc.weight_hh.copy_(torch.tensor(cell.weight_hh.numpy().T))
        tc.bias_ih.copy_(torch.tensor(cell.bias.numpy()))
        tc.bias_hh.zero_()
    h = torch.zeros(B, H, dtype=torch.float64)
    hs = []
    for t in range(T):
        h = tc(torch.tensor(x[:, t]), h)
        hs.append(h)
    tl = (torch.stack(hs, 1) * torch.tensor(W)).sum()
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(grads["weight_ih"], tc.weight_ih.grad.numpy().T, rtol=1e-10)
    np.testing.assert_allclose(grads["weight_hh"], tc.weight_hh.grad.numpy().T, rtol=1e-10)
    np.testing.assert_allclose(grads["bias"], tc.bias_ih.grad.numpy(), rtol=1e-10)


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="divisible"):
        nn.CausalSelfAttention(10, 3)
    with pytest.raises(ValueError, match="Pre-LN"):
        nn.Block(8, 2, norm="middle")
