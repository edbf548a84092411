#!/usr/bin/env python3
"""score_checkpoint.py: an independent reader of kiln's image-classifier
checkpoints. It shares no code with kiln: it parses the safetensors file
itself (the container rules the `safetensors` Python package enforces, which
Debian does not ship), rebuilds the MLP or CNN of the checkpoint's own
`kiln.spec` in NumPy (float64) from docs/nn.md's description (NCHW, PyTorch
weight layouts and names, flatten in C-H-W order, batchnorm in inference
mode with its running statistics), normalises the raw IDX
images as docs/preprocess.md says ((x / 255 - mean) / std), and prints a JSON
line with the accuracy.

Usage: score_checkpoint.py CHECKPOINT IMAGES.gz LABELS.gz --mean M --std S
Exit 0 with {"accuracy", "correct", "n", "near_ties"}; 1 with a message when
the file breaks a safetensors rule or the spec is not an image classifier.
"near_ties" counts images whose two best logits are within 1e-4 (relative):
there float32 and float64 arithmetic may pick different classes.
"""
import argparse
import gzip
import json
import math
import struct
import sys

import numpy as np

DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U8": 1, "BOOL": 1}


class Bad(Exception):
    pass


def read_safetensors(path):
    """(tensors {name: float64 array}, metadata {str: str}); Bad on any rule broken."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise Bad("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > 100_000_000 or 8 + n > len(buf):
        raise Bad(f"header length {n} does not fit a {len(buf)}-byte file")
    raw = buf[8:8 + n]
    if not raw.startswith(b"{"):
        raise Bad("the header does not start with '{'")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Bad(f"header is not UTF-8 JSON: {e}")
    if not isinstance(header, dict):
        raise Bad("header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise Bad("__metadata__ must map strings to strings")
    data = buf[8 + n:]
    spans = []
    tensors = {}
    for name, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            raise Bad(f"{name}: entry must hold exactly dtype, shape, data_offsets")
        dt, shape, off = t["dtype"], t["shape"], t["data_offsets"]
        if dt not in DTYPES:
            raise Bad(f"{name}: unknown dtype {dt!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise Bad(f"{name}: bad shape {shape!r}")
        if (not isinstance(off, list) or len(off) != 2 or
                not all(isinstance(o, int) for o in off) or not 0 <= off[0] <= off[1]):
            raise Bad(f"{name}: bad data_offsets {off!r}")
        if off[1] - off[0] != math.prod(shape) * DTYPES[dt]:
            raise Bad(f"{name}: {off[1] - off[0]} bytes for shape {shape} of {dt}")
        spans.append((off[0], off[1], name))
        if dt != "F32":
            raise Bad(f"{name}: dtype {dt}; kiln's weights are F32")
        a = np.frombuffer(data, dtype="<f4", count=math.prod(shape), offset=off[0])
        tensors[name] = a.reshape(shape).astype(np.float64)
    spans.sort()
    end = 0
    for b, e, name in spans:  # contiguous from 0, no hole, no overlap
        if b != end:
            raise Bad(f"{name}: starts at {b}, the previous tensor ends at {end}")
        end = e
    if end != len(data):
        raise Bad(f"tensors cover {end} of {len(data)} data bytes")
    return tensors, meta


def act(x, kind):
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if kind == "gelu":  # the tanh approximation (docs/nn.md: GELU-tanh)
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise Bad(f"activation {kind!r}")


def conv2d(x, w, b, stride, pad):
    """x (N, C, H, W), w (OC, C, K, K): cross-correlation like torch.nn.Conv2d."""
    n, c, h, wd = x.shape
    oc, c2, k, _ = w.shape
    if c2 != c:
        raise Bad(f"conv weight {w.shape} for {c} input channels")
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    cols = np.empty((n, oh, ow, c, k, k))  # im2col, one row per output pixel
    for i in range(k):
        for j in range(k):
            cols[:, :, :, :, i, j] = xp[:, :, i:i + stride * oh:stride,
                                        j:j + stride * ow:stride].transpose(0, 2, 3, 1)
    out = cols.reshape(n * oh * ow, c * k * k) @ w.reshape(oc, c * k * k).T + b
    return out.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2)


def pool2d(x, k, kind):
    n, c, h, w = x.shape
    oh, ow = (h - k) // k + 1, (w - k) // k + 1
    x = x[:, :, :oh * k, :ow * k].reshape(n, c, oh, k, ow, k)
    return x.max(axis=(3, 5)) if kind == "max" else x.mean(axis=(3, 5))


def layers_of(spec):
    """The layer sequence of model_seq.c's description, with its indices."""
    seq = []
    a = spec.get("activation", "relu")
    p = float(spec.get("dropout", 0.0))
    bn = bool(spec.get("bn", False))
    if spec["type"] == "mlp":
        sizes = spec["sizes"]
        for i in range(1, len(sizes)):
            seq.append(("linear",))
            if i < len(sizes) - 1:
                if bn:
                    seq.append(("bn",))
                seq.append(("act", a))
                if p > 0:
                    seq.append(("dropout",))
        return seq
    if spec["type"] != "cnn":
        raise Bad(f"model type {spec['type']!r} is not an image classifier")
    for cv in spec["convs"]:
        seq.append(("conv", cv.get("stride", 1), cv.get("pad", 0)))
        if cv.get("bn", bn):
            seq.append(("bn",))
        seq.append(("act", a))
        if cv.get("pool", 2) > 1:
            seq.append(("pool", cv.get("pool", 2), spec.get("pool", "max")))
    for _ in spec.get("fc", []):
        seq.append(("linear",))
        if bn:
            seq.append(("bn",))
        seq.append(("act", a))
        if p > 0:
            seq.append(("dropout",))
    seq.append(("linear",))
    return seq


def forward(tensors, spec, x):
    weights = {k for k in tensors if not k.startswith("optim.")}
    used = set()
    if spec["type"] == "cnn":
        c, h, w = spec["input"]
        x = x.reshape(len(x), c, h, w)
    for i, layer in enumerate(layers_of(spec)):
        kind = layer[0]
        if kind in ("conv", "linear"):
            wn, bn = f"layers.{i}.weight", f"layers.{i}.bias"
            if wn not in tensors or bn not in tensors:
                raise Bad(f"no {wn} / {bn} for layer {i} ({kind})")
            used |= {wn, bn}
            if kind == "conv":
                x = conv2d(x, tensors[wn], tensors[bn], layer[1], layer[2])
            else:
                x = x.reshape(len(x), -1) @ tensors[wn].T + tensors[bn]
        elif kind == "bn":
            # inference: BatchNorm1d/2d with the running statistics, eps 1e-5
            names = [f"layers.{i}.{t}" for t in ("weight", "bias", "running_mean", "running_var")]
            if any(n not in tensors for n in names):
                raise Bad(f"no weight / bias / running_mean / running_var for batchnorm {i}")
            used |= set(names)
            g, b, m, v = (tensors[n] for n in names)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            x = (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + 1e-5) * g.reshape(shape) \
                + b.reshape(shape)
        elif kind == "act":
            x = act(x, layer[1])
        elif kind == "pool":
            x = pool2d(x, layer[1], layer[2])
    if used != weights:
        raise Bad(f"weights the spec does not use: {sorted(weights - used)}")
    return x


def read_idx(path, ndim):
    with gzip.open(path, "rb") as f:
        buf = f.read()
    magic, = struct.unpack(">I", buf[:4])
    if magic != 0x800 | ndim:
        raise Bad(f"{path}: IDX magic {magic:#x}")
    dims = struct.unpack(">" + "I" * ndim, buf[4:4 + 4 * ndim])
    return np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("images")
    ap.add_argument("labels")
    ap.add_argument("--mean", type=float, required=True)
    ap.add_argument("--std", type=float, required=True)
    ap.add_argument("--batch", type=int, default=200)
    o = ap.parse_args()
    try:
        tensors, meta = read_safetensors(o.checkpoint)
        if "kiln.spec" not in meta:
            raise Bad("no kiln.spec in __metadata__")
        spec = json.loads(meta["kiln.spec"])
        images = read_idx(o.images, 3)
        labels = read_idx(o.labels, 1)
        if len(images) != len(labels):
            raise Bad(f"{len(images)} images, {len(labels)} labels")
        # as preprocess: float32 normalisation of the 0..1 values
        x = ((images.astype(np.float32) / np.float32(255.0) - np.float32(o.mean)) /
             np.float32(o.std)).astype(np.float64).reshape(len(images), -1)
        correct = near = 0
        for s in range(0, len(x), o.batch):
            logits = forward(tensors, spec, x[s:s + o.batch])
            pred = logits.argmax(axis=1)
            correct += int((pred == labels[s:s + o.batch]).sum())
            top2 = np.sort(logits, axis=1)[:, -2:]
            near += int((top2[:, 1] - top2[:, 0] <= 1e-4 * np.maximum(1.0, np.abs(top2[:, 1]))).sum())
    except (Bad, KeyError, ValueError, OSError) as e:
        print(f"score_checkpoint: {o.checkpoint}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"accuracy": correct / len(x), "correct": correct, "n": len(x),
                      "near_ties": near, "model": spec["type"],
                      "tensors": len([k for k in tensors if not k.startswith("optim.")])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
