#!/usr/bin/env python3
"""bench_nn_pytorch.py: the PyTorch side of bench_nn_cpu.

The same three cases as tests/bench/bench_nn_cpu.c, built the same way: the
MLP 784-512-256-128-10 and the CNN 32c5p2-pool-64c5p2-pool-1024-10 (ReLU, max
pooling) at B = 64 and 256 on random inputs, and a GPT (L=4, H=4, C=128,
T=64, B=8, V=512, pre-LN, GELU(tanh), tied embeddings). Each case runs full
training steps (zero_grad, forward, backward, AdamW) on one thread for about
--seconds of CPU time after one warm-up step, and prints the rate per
CPU-second in bench_nn_cpu's format. tests/bench/nn/run.sh runs both.

On a GPU, PyTorch runs convolutions in TF32 by default (cudnn.allow_tf32)
and matmuls in TF32 when asked; kiln's CUDA backend is plain fp32 (cuBLAS's
default math mode, no TF32). So TF32 is off here unless asked for, and the
first line printed says which ran. --precision matches kiln's: fp32 (TF32
off), tf32 (matmul and cuDNN TF32 on; --tf32 is the same), bf16 (autocast
to bf16 around forward and loss: bf16 GEMMs and convolutions, fp32 master
weights and AdamW state, as kiln's bf16).
"""
import contextlib
import argparse
import math
import platform
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp():
    sizes, layers = [784, 512, 256, 128, 10], []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cnn():
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


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
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(
            F, "scaled_dot_product_attention") else self.attend(q, k, v, t, c)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    def attend(self, q, k, v, t, c):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.H))
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool, device=q.device))
        return att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


class GPT(nn.Module):
    def __init__(self, L=4, H=4, C=128, T=64, V=512):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.h = nn.ModuleList([Block(C, H) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():  # GPT-2 init, as kiln's
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.h:
            x = blk(x)
        return self.ln_f(x) @ self.wte.weight.t()


def adamw(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                              {"params": rest, "weight_decay": 0.0}], lr=1e-3)


DEVICE = "cpu"
AUTOCAST = False  # --precision bf16 on cuda


def clock():
    """CPU time on the CPU (one thread); wall time after a sync on a GPU."""
    if DEVICE == "cpu":
        return time.process_time()
    torch.cuda.synchronize()
    return time.perf_counter()


def run(model, x, y, seconds):
    """Steps per second (CPU-second on the CPU) after one warm-up step, and the last loss."""
    model, x, y = model.to(DEVICE), x.to(DEVICE), y.to(DEVICE)
    opt = adamw(model)
    steps, t0 = 0, 0.0
    while True:
        opt.zero_grad(set_to_none=True)
        ctx = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if AUTOCAST
               else contextlib.nullcontext())
        with ctx:
            out = model(x)
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1))
        loss.backward()
        opt.step()
        if steps == 0:
            t0 = clock()
        steps += 1
        el = clock() - t0
        if steps > 3 and el >= seconds:
            return (steps - 1) / el, loss.item()


def image_case(name, make, seconds):
    for B in (64, 256):
        torch.manual_seed(2)
        model = make()
        x, y = torch.rand(B, 784), torch.randint(0, 10, (B,))
        sps, loss = run(model, x, y, seconds)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<4} B={B:<4d} params={params:<8d} {sps * B:10.0f} images/s  "
              f"({1e3 / sps:.2f} ms/step, loss {loss:.3f})", flush=True)


def gpt_case(seconds):
    B, T, V = 8, 64, 512
    torch.manual_seed(3)
    model = GPT()
    tok = torch.randint(0, V, (B, T))
    sps, loss = run(model, tok, (tok + 1) % V, seconds)
    params = sum(p.numel() for p in model.parameters())
    print(f"gpt  L=4 H=4 C=128 T={T} B={B} V={V} params={params} {sps * B * T:10.0f} tokens/s  "
          f"({1e3 / sps:.2f} ms/step, loss {loss:.3f})", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--only", choices=["mlp", "cnn", "gpt"])
    ap.add_argument("--device", default="cpu", help="cpu (one thread) or cuda (eager, fp32)")
    ap.add_argument("--tf32", action="store_true",
                    help="on cuda: let matmuls and cuDNN convolutions use TF32 (PyTorch's "
                         "default for convolutions); off by default, as kiln runs fp32")
    ap.add_argument("--precision", default=None,
                    help="on cuda: fp32 (TF32 off), tf32 (= --tf32) or bf16 (autocast), or a "
                         "comma-separated list run one after the other in this process")
    a = ap.parse_args()
    global DEVICE, AUTOCAST
    DEVICE = a.device
    precs = (a.precision or ("tf32" if a.tf32 else "fp32")).split(",")
    for prec in precs:
        if prec not in ("fp32", "tf32", "bf16"):
            ap.error(f"--precision: '{prec}' (use fp32, tf32 or bf16)")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    where = (torch.cuda.get_device_name(0) if DEVICE.startswith("cuda")
             else platform.processor() or platform.machine())
    for prec in precs:
        tf32 = prec == "tf32"
        AUTOCAST = prec == "bf16" and DEVICE.startswith("cuda")
        if DEVICE == "cpu":
            threads = "1 thread"
        else:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            threads = ("eager, precision %s, matmul allow_tf32=%s, cudnn.allow_tf32=%s (%s)"
                       % (prec, torch.backends.cuda.matmul.allow_tf32,
                          torch.backends.cudnn.allow_tf32,
                          "bf16 autocast, fp32 master weights" if AUTOCAST else
                          "TF32 tensor cores" if tf32 else "fp32 throughout, as kiln"))
        print(f"PyTorch {torch.__version__}, {DEVICE} ({where}), {threads}, AdamW, "
              f"full training steps", flush=True)
        if a.only in (None, "mlp"):
            image_case("mlp", mlp, a.seconds)
        if a.only in (None, "cnn"):
            image_case("cnn", cnn, a.seconds)
        if a.only in (None, "gpt"):
            gpt_case(a.seconds)


if __name__ == "__main__":
    main()
