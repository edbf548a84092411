#!/usr/bin/env python3
"""gpt2_pytorch.py: the PyTorch reference for kiln's GPT-2 124M benchmark (GPU).

GPT-2 small as kiln builds it (12 layers, 12 heads, 768 wide, T=1024, vocab
50257 padded to 50304, pre-LN, GELU(tanh), tied embeddings, no dropout),
trained the way a fast PyTorch user would: bf16 autocast, torch.compile,
scaled_dot_product_attention (flash), fused AdamW. Prints tokens/s and MFU
(6 N T flops per token plus attention, against the GPU's dense bf16 peak,
989 TFLOP/s for an H100 SXM unless --peak-tflops says otherwise) over
--steps steps after --warmup. Run by tests/gpu/run next to kiln's figures.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.H, c // self.H).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L=12, H=12, C=768, T=1024, Vp=50304):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(Vp, C), nn.Embedding(T, C)
        self.h = nn.ModuleList([Block(C, H) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets, V):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.h:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits[..., :V].float().reshape(-1, V), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpt2_pytorch: SKIPPED: no CUDA device for PyTorch")
        raise SystemExit(77)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev, V, B, T = "cuda", 50257, a.batch, a.seq
    model = GPT(T=T).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_model = model if a.no_compile else torch.compile(model)
    x = torch.randint(0, V, (B, T), device=dev)
    y = torch.roll(x, -1, dims=1)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            loss = step_model(x, y, V)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    tok_s = B * T / dt
    L, C = 12, 768
    flops_per_token = 6 * nparams + 12 * L * C * T  # weights, then attention (fwd+bwd)
    mfu = tok_s * flops_per_token / (a.peak_tflops * 1e12)
    print(f"PyTorch {torch.__version__} GPT-2 124M ({nparams / 1e6:.1f}M params) B={B} T={T} bf16 "
          f"{'eager' if a.no_compile else 'compiled'}: {tok_s:,.0f} tokens/s, "
          f"{dt * 1e3:.1f} ms/step, MFU {100 * mfu:.1f}%, loss {loss.item():.3f}, "
          f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated")


if __name__ == "__main__":
    main()
