#!/usr/bin/env python3
"""serve_client.py: the test client of kiln-serve (tests/scripts/it-serve.sh).

  eval URL MODEL IDX_IMAGES.gz IDX_LABELS.gz
      sends every image of an IDX file as its own binary PGM (P5) request and
      prints {"n", "correct", "accuracy", "versions", "failed"} as JSON.
  load URL MODEL IDX_IMAGES.gz RATE SECONDS OUT
      open loop: one request every 1/RATE s from its intended send time, on
      a pool of threads; writes one line per request to OUT:
      "intended_start end status version" (Unix time, seconds).
  bytes KIND OUT
      writes a hostile body: png-huge (a 100000x100000 IHDR), png-truncated,
      pgm-truncated.
Standard library only."""
import gzip
import http.client
import json
import struct
import sys
import threading
import time
import urllib.parse
import zlib


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def pgm(pixels, w, h):
    return b"P5\n%d %d\n255\n" % (w, h) + pixels


class Conn:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.c = None

    def post(self, path, body, ctype):
        for attempt in range(2):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.c.request("POST", path, body, {"Content-Type": ctype})
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.c = None
                if attempt == 1:
                    return 0, b""


def images(path):
    dims, raw = idx(path)
    n, h, w = dims[0], dims[1], dims[2]
    return [pgm(raw[i * h * w:(i + 1) * h * w], w, h) for i in range(n)]


def cmd_eval(url, model, img_path, lab_path):
    imgs = images(img_path)
    _, labels = idx(lab_path)
    c = Conn(url)
    correct = failed = 0
    versions = {}
    preds = []
    for i, body in enumerate(imgs):
        st, out = c.post("/v1/models/%s/predict?top_k=1" % model, body, "image/x-portable-graymap")
        if st != 200:
            failed += 1
            preds.append(-1)
            continue
        doc = json.loads(out)
        cls = doc["predictions"][0][0]["class"]
        preds.append(cls)
        versions[str(doc["version"])] = versions.get(str(doc["version"]), 0) + 1
        correct += cls == labels[i]
    print(json.dumps({"n": len(imgs), "correct": correct, "accuracy": correct / len(imgs),
                      "versions": versions, "failed": failed}))


def cmd_load(url, model, img_path, rate, seconds, out):
    imgs = images(img_path)[:256]
    rate, seconds = float(rate), float(seconds)
    total = int(rate * seconds)
    t0 = time.time()
    lines = [None] * total
    nxt = [0]
    lock = threading.Lock()

    def worker():
        c = Conn(url)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= total:
                return
            intended = i / rate
            d = t0 + intended - time.time()
            if d > 0:
                time.sleep(d)
            st, body = c.post("/v1/models/%s/predict" % model, imgs[i % len(imgs)],
                              "image/x-portable-graymap")
            v = json.loads(body).get("version", -1) if st == 200 else -1
            lines[i] = "%.6f %.6f %d %d" % (t0 + intended, time.time(), st, v)

    ts = [threading.Thread(target=worker) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


def png_header(w, h):
    """A PNG signature and a valid IHDR chunk declaring w x h, then nothing."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def cmd_bytes(kind, out):
    if kind == "png-huge":
        data = png_header(100000, 100000)
    elif kind == "png-truncated":
        raw = b"\x00" + b"\x80" * 28
        idat = zlib.compress(raw * 28)
        ihdr = struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        full = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
        data = full[:len(full) // 2]
    elif kind == "pgm-truncated":
        data = b"P5\n28 28\n255\n" + b"\x10" * 100
    else:
        raise SystemExit("unknown kind " + kind)
    with open(out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "eval":
        cmd_eval(*a[1:5])
    elif a[0] == "load":
        cmd_load(*a[1:7])
    elif a[0] == "bytes":
        cmd_bytes(a[1], a[2])
    else:
        raise SystemExit(__doc__)
