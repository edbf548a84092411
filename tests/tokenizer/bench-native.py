#!/usr/bin/env python3
"""bench-native.py: single-thread encode speed of native tiktoken (Rust core,
Python bindings) on the multilingual benchmark corpus, one encode_ordinary
call per document, the yardstick of issue 16 for kiln's tokenizer. Builds the
Encoding from kiln's cached rank file (no network) with tiktoken's own
constructor (pattern, special tokens), and with the expected-ids file checks every document's ids first.

Usage: bench-native.py <r50k|cl100k> <rank-file> <corpus> <seconds> [<expected-ids>]
Prints: "native <encoding> <MB/s of thread CPU> <MB/s wall> <ids> <bytes> <tiktoken version>"
   or: bench-native.py --write-ids <out> <r50k|cl100k> <rank-file> <corpus>
writes tiktoken's ids of each document, a line each (the expected-ids format
kiln's bpe_tool checks against), where no other reference is at hand.
(MB = 1e6 bytes). The CPU time is this thread's (time.thread_time), as kiln's
bench counts its encoding thread's.
"""
import base64
import sys
import time

import tiktoken



def encoding(kind, ranks):
    """tiktoken's own constructor for the encoding (its pattern and special
    tokens), fed our ranks instead of a download."""
    import tiktoken_ext.openai_public as op
    op.load_tiktoken_bpe = lambda *args, **kwargs: ranks
    return tiktoken.Encoding(**getattr(op, f"{kind}_base")())


def load_ranks(rank_file):
    ranks = {}
    with open(rank_file, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def write_ids(out, kind, rank_file, corpus):
    enc = encoding(kind, load_ranks(rank_file))
    docs = open(corpus, "rb").read().decode("utf-8").split("\0")
    with open(out, "w") as f:
        for d in docs:
            f.write(" ".join(map(str, enc.encode_ordinary(d))) + "\n")
    print(f"ids of {len(docs)} documents by tiktoken {tiktoken.__version__} ({kind}_base) -> {out}")


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--write-ids" and sys.argv[3] in ("r50k", "cl100k"):
        return write_ids(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    if len(sys.argv) not in (5, 6) or sys.argv[1] not in ("r50k", "cl100k"):
        sys.exit(__doc__)
    kind, rank_file, corpus, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    enc = encoding(kind, load_ranks(rank_file))
    raw = open(corpus, "rb").read()
    docs = raw.decode("utf-8").split("\0")
    nids = 0
    expected = open(sys.argv[5]) if len(sys.argv) == 6 else None
    bad = 0
    for i, d in enumerate(docs):
        ids = enc.encode_ordinary(d)
        nids += len(ids)
        if expected is not None:
            want = [int(x) for x in expected.readline().split()]
            if ids != want:
                bad += 1
                if bad <= 3:
                    print(f"MISMATCH document {i}: {len(ids)} ids, reference {len(want)}")
    if bad:
        sys.exit(f"{bad} of {len(docs)} documents differ from {sys.argv[5]}")
    passes, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while True:
        for d in docs:
            enc.encode_ordinary(d)
        passes += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    cpu = time.thread_time() - c0
    mb = len(raw) * passes / 1e6
    print(f"native {kind}_base {mb / cpu:.2f} {mb / elapsed:.2f} {nids} {len(raw)} "
          f"{tiktoken.__version__}")


if __name__ == "__main__":
    main()
