#!/usr/bin/env python3
"""Fashion-MNIST as kiln-ingest jsonl feed files (PNG records, base64), for
the pipeline runs of tests/chaos/run and tests/cluster/run.

    fmnist_feed.py OUT [--count N] [--batch B] [--keys FILE] [--mirror]

OUT/0000.jsonl, 0001.jsonl, ... hold B records each (default 500), the first
N images of the training set (default all 60,000, whole batches only).
--keys FILE: also write the SHA-256 (hex) of each record's PNG bytes, one a
line in feed order: the raw record's Kafka key (docs/formats.md). Images
whose PNG bytes repeat an earlier one are left out, so every key is unique.
--mirror: after the 60,000 images, the same images mirrored left to right
(new PNG bytes, so new keys; a symmetric image repeats its original and is
left out with --keys), for feeds of more than 60,000 records."""
import argparse, base64, gzip, hashlib, json, os, struct, zlib

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--count", type=int, default=0)
ap.add_argument("--batch", type=int, default=500)
ap.add_argument("--keys")
ap.add_argument("--mirror", action="store_true")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
d = "/usr/share/datasets/fashion-mnist/"
img = gzip.open(d + "train-images-idx3-ubyte.gz").read()[16:]
lab = gzip.open(d + "train-labels-idx1-ubyte.gz").read()[8:]


def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)


def png(i):
    px = img[(i % len(lab)) * 784:(i % len(lab) + 1) * 784]
    if i >= len(lab):  # the mirrored pass
        px = b"".join(px[y * 28:(y + 1) * 28][::-1] for y in range(28))
    rows = b"".join(b"\0" + px[y * 28:(y + 1) * 28] for y in range(28))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


total = len(lab) * (2 if a.mirror else 1)
n = min(a.count or total, total)
seen, batch, files = set(), [], 0
keys = open(a.keys, "w") if a.keys else None
for i in range(total):
    if files * a.batch >= n:
        break
    b = png(i)
    if keys:
        k = hashlib.sha256(b).hexdigest()
        if k in seen:
            continue
        seen.add(k)
    batch.append((b, lab[i % len(lab)]))
    if len(batch) == a.batch:
        with open(f"{a.out}/{files:04d}.jsonl", "w") as w:
            for b, l in batch:
                w.write(json.dumps({"image_base64": base64.b64encode(b).decode(), "label": l,
                                    "dataset": "fashion-mnist"}) + "\n")
                if keys:
                    keys.write(hashlib.sha256(b).hexdigest() + "\n")
        files += 1
        batch = []
