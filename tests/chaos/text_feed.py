#!/usr/bin/env python3
"""Debian's fortunes as kiln-ingest jsonl feed files (text records labelled
with their category, dataset fortunes-topics), for tests/chaos/run.

    text_feed.py OUT KEYS [--batch B] [--dir D]

OUT/0000.jsonl, 0001.jsonl, ... hold B records each (default 500; the last
file may hold fewer). KEYS gets the SHA-256 (hex) of each record's UTF-8
bytes, one a line in feed order: the raw record's Kafka key (docs/formats.md;
kiln-ingest sends a JSON line's "text" unchanged). Texts that are not UTF-8
or repeat an earlier text byte for byte are left out, so every key is
unique; near-duplicates and texts too short for the recipe stay in: those go
to the DLQ with a reason, which the run checks as well."""
import argparse, hashlib, json, os

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("keys")
ap.add_argument("--batch", type=int, default=500)
ap.add_argument("--dir", default="/usr/share/games/fortunes")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)

records, seen = [], set()
for name in sorted(os.listdir(a.dir)):
    path = os.path.join(a.dir, name)
    # the category files: no extension (.dat is the index, .u8 a link farm)
    if "." in name or not os.path.isfile(path):
        continue
    parts, cur = [], []
    for line in open(path, "rb").read().split(b"\n"):
        if line == b"%":
            parts.append(b"\n".join(cur))
            cur = []
        else:
            cur.append(line)
    parts.append(b"\n".join(cur))
    for p in parts:
        p = p.strip(b"\n")
        if not p:
            continue
        try:
            t = p.decode("utf-8")
        except UnicodeDecodeError:
            continue
        k = hashlib.sha256(p).hexdigest()
        if k in seen:
            continue
        seen.add(k)
        records.append((t, name, k))

# interleave the categories (a stride through the list) so that every batch
# carries several labels, as a real feed would
stride = 7
order = [records[i] for s in range(stride) for i in range(s, len(records), stride)]
with open(a.keys, "w") as keys:
    for f in range(0, len(order), a.batch):
        with open(f"{a.out}/{f // a.batch:04d}.jsonl", "w") as w:
            for t, label, k in order[f:f + a.batch]:
                w.write(json.dumps({"text": t, "label": label, "dataset": "fortunes-topics"}) + "\n")
                keys.write(k + "\n")
