#!/usr/bin/env python3
"""make_bn_fixture.py: the reference values of kiln's batch normalisation and
label smoothing, computed independently with numpy in float64 (PyTorch is
not installed here; the formulas are torch.nn.BatchNorm2d's and
torch.nn.CrossEntropyLoss(label_smoothing=s)'s, written out below).
Writes tests/nn/bn_fixture.json, read by tests/unit/test_nn_batchnorm.c.
Inputs are drawn from a fixed seed, so re-running gives the same file.
Usage: python3 tests/nn/make_bn_fixture.py [OUT]"""
import json
import os
import sys

import numpy as np

rng = np.random.default_rng(20261130)


def r(*shape, scale=1.0):
    # float32 inputs (what the C side holds), computed on in float64
    return (rng.uniform(-1, 1, size=shape) * scale).astype(np.float32).astype(np.float64)


B, C, HW = 4, 3, 5
momentum, eps = 0.1, 1e-5
x = r(B, C, HW, scale=2.0) + np.array([0.5, -1.0, 2.0])[None, :, None]
w = r(C) + 1.0
b = r(C)
run_mean0 = r(C, scale=0.5)
run_var0 = np.abs(r(C)) + 0.5
dout = r(B, C, HW)

# training mode: batch statistics over (B, HW) per channel, biased variance
mean = x.mean(axis=(0, 2))
var = x.var(axis=(0, 2))
rstd = 1.0 / np.sqrt(var + eps)
xhat = (x - mean[None, :, None]) * rstd[None, :, None]
out_train = xhat * w[None, :, None] + b[None, :, None]
n = B * HW
run_mean1 = (1 - momentum) * run_mean0 + momentum * mean
run_var1 = (1 - momentum) * run_var0 + momentum * var * n / (n - 1)  # unbiased
dw = (dout * xhat).sum(axis=(0, 2))
db = dout.sum(axis=(0, 2))
dxhat = dout * w[None, :, None]
dx_train = (rstd[None, :, None] / n) * (
    n * dxhat - dxhat.sum(axis=(0, 2))[None, :, None]
    - xhat * (dxhat * xhat).sum(axis=(0, 2))[None, :, None])

# eval mode: the running statistics, a fixed affine map
rstd_e = 1.0 / np.sqrt(run_var0 + eps)
out_eval = (x - run_mean0[None, :, None]) * rstd_e[None, :, None] * w[None, :, None] + b[None, :, None]
dx_eval = dout * (rstd_e * w)[None, :, None]

# label smoothing s: target distribution (1 - s) onehot + s / V; the loss of
# a row is -sum_k q_k log softmax_k; mean over rows whose target is not -1
N, V, s = 5, 6, 0.1
logits = r(N, V, scale=3.0)
targets = [2, 0, -1, 5, 3]
lse = np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)) + logits.max(axis=1)
logp = logits - lse[:, None]
losses = np.zeros(N)
dlogits = np.zeros((N, V))
valid = [i for i in range(N) if targets[i] >= 0]
for i in valid:
    q = np.full(V, s / V)
    q[targets[i]] += 1 - s
    losses[i] = -(q * logp[i]).sum()
    dlogits[i] = (np.exp(logp[i]) - q) / len(valid)
mean_loss = losses[valid].mean()


def f(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


fixture = {
    "bn": {"B": B, "C": C, "HW": HW, "momentum": momentum, "eps": eps,
           "x": f(x), "w": f(w), "b": f(b), "run_mean": f(run_mean0), "run_var": f(run_var0),
           "dout": f(dout),
           "train": {"out": f(out_train), "mean": f(mean), "rstd": f(rstd),
                     "run_mean": f(run_mean1), "run_var": f(run_var1),
                     "dx": f(dx_train), "dw": f(dw), "db": f(db)},
           "eval": {"out": f(out_eval), "dx": f(dx_eval)}},
    "smoothing": {"N": N, "V": V, "s": s, "logits": f(logits), "targets": targets,
                  "losses": f(losses), "mean_loss": float(mean_loss), "dlogits": f(dlogits)},
}
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "bn_fixture.json")
with open(out, "w") as fh:
    json.dump(fixture, fh, indent=1)
    fh.write("\n")
print("wrote", out)
