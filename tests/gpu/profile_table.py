#!/usr/bin/env python3
"""Kernel time table from an ncu CSV (tests/gpu/50-profile.sh): ncu
--csv --page raw --metrics gpu__time_duration.sum writes one row per
kernel launch (a header row, a units row, then launches; its own
"==PROF==" lines mixed in). Sums the durations per kernel name and prints
the top kernels by total time with calls and share, then the total."""
import argparse
import csv
import sys

SCALE = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0,
         "second": 1e3, "s": 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    lines = [l for l in open(a.csv, errors="replace") if l.strip() and not l.startswith("==")]
    rows = list(csv.reader(lines))
    head = next((i for i, r in enumerate(rows) if "Kernel Name" in r and "gpu__time_duration.sum" in r),
                None)
    if head is None:
        print(f"profile: {a.label}: FAIL: no kernel rows in ncu's output ({len(rows)} lines)")
        return 1
    name_col = rows[head].index("Kernel Name")
    t_col = rows[head].index("gpu__time_duration.sum")
    scale = 1e-6  # --print-units base: nanoseconds
    per = {}
    launches = 0
    for r in rows[head + 1:]:
        if len(r) <= max(name_col, t_col):
            continue
        v = r[t_col].replace(",", "").strip()
        try:
            ms = float(v) * scale
        except ValueError:  # the units row
            scale = SCALE.get(v, scale)
            continue
        calls, tot = per.get(r[name_col], (0, 0.0))
        per[r[name_col]] = (calls + 1, tot + ms)
        launches += 1
    total = sum(t for _, t in per.values())
    if not launches or total <= 0:
        print(f"profile: {a.label}: FAIL: ncu timed no kernel (was the profiler range opened?)")
        return 1
    print(f"profile: {a.label}: {launches} kernel launches, {len(per)} kernels, "
          f"{total:.2f} ms of kernel time in the step")
    print(f"profile: {a.label}:   share     ms  calls  kernel")
    for name, (calls, t) in sorted(per.items(), key=lambda kv: -kv[1][1])[:a.top]:
        print(f"profile: {a.label}: {100 * t / total:6.1f}% {t:7.2f} {calls:6d}  {name[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
