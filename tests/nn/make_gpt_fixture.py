#!/usr/bin/env python3
"""make_gpt_fixture.py: PyTorch reference for kiln's GPT (lib/nn/model_tfm.c).

Builds a tiny GPT-2 (n_layer=2, n_head=2, n_embd=32, block_size=8,
vocab 64 = padded 64), pre-LN, GELU(tanh) MLP of 4C, tied wte/lm_head,
with fixed seeded weights, and writes two safetensors files next to this
script (float32, little-endian; written by hand so only torch is needed):

  gpt_fixture_model.safetensors     a kiln checkpoint (kiln.spec metadata,
                                    parameters under kiln's names) that
                                    kn_model_load_file() reads directly
  gpt_fixture_expected.safetensors  tokens, targets (B, T) as F32, logits
                                    (B, T, V), loss (1), grad.<name> for
                                    every parameter, losses (10) of ten
                                    AdamW steps on the same batch; the
                                    optimizer config as kiln.optim metadata

Run on any machine with PyTorch (CPU is fine, float32 throughout; the
committed files came from Debian's python3-torch 1.13.1, and regenerating
them with it gives the same bytes):
    /usr/bin/python3 tests/nn/make_gpt_fixture.py
then commit both files; tests/unit/test_nn_gpt_fixture.c compares against
them (and skips, never passes, if they are absent).
"""
import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

L, NH, C, T, B, V, VP = 2, 2, 32, 8, 2, 64, 64
LR, BETAS, EPS, WD, STEPS = 1e-3, (0.9, 0.999), 1e-8, 0.1, 10


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(b, t, NH, c // NH).transpose(1, 2)
        k = k.view(b, t, NH, c // NH).transpose(1, 2)
        v = v.view(b, t, NH, c // NH).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // NH))
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = Attn()
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = Mlp()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VP, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList([Block() for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():  # GPT-2 init, biases random too (harder test)
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
                nn.init.normal_(p, 1.0, 0.1)
            else:
                nn.init.normal_(p, 0.0, 0.02 if p.dim() == 2 else 0.01)
        with torch.no_grad():
            self.wte.weight[V:].zero_()

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied lm_head
        loss = F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1))
        return logits[..., :V], loss


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, float32 tensor) written back to back in order."""
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, t in tensors:
        data = t.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    torch.manual_seed(1234)
    torch.use_deterministic_algorithms(True)
    model = GPT()
    params = list(model.named_parameters())
    data = torch.randint(0, V, (B, T + 1))
    x, y = data[:, :T], data[:, 1:].clone()
    y[1, 3] = -100  # one ignored target (kiln: -1)
    here = os.path.dirname(os.path.abspath(__file__))
    spec = {"type": "gpt", "n_layer": L, "n_head": NH, "n_embd": C, "block_size": T,
            "vocab_size": V, "padded_vocab_size": VP}
    write_safetensors(os.path.join(here, "gpt_fixture_model.safetensors"), params,
                      {"format": "pt", "kiln.format": "kiln-ckpt-1", "kiln.spec": json.dumps(spec),
                       "kiln.seed": "0", "kiln.fwd_count": "0"})

    logits, loss = model(x, y)
    loss.backward()
    grads = [("grad." + n, p.grad.clone()) for n, p in params]

    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS, foreach=False)  # the plain per-tensor loop
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _, l = model(x, y)
        l.backward()
        opt.step()
        losses.append(l.item())
    print("losses:", " ".join(f"{v:.6f}" for v in losses))

    targets = y.clone()
    targets[targets < 0] = -1
    optim = {"type": "adamw", "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WD}
    write_safetensors(os.path.join(here, "gpt_fixture_expected.safetensors"),
                      [("tokens", x.float()), ("targets", targets.float()), ("logits", logits),
                       ("loss", loss.reshape(1)), ("losses", torch.tensor(losses))] + grads,
                      {"kiln.optim": json.dumps(optim), "torch": torch.__version__})


if __name__ == "__main__":
    main()
