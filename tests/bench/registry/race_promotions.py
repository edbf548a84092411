#!/usr/bin/env python3
"""100 promotions racing, for tests/bench/registry/openloop.sh (PROMOTIONS=N).

    race_promotions.py URL TOKEN MODEL N [THREADS] [DELAY_S]

After DELAY_S (default 2: inside the load that runs meanwhile), THREADS
threads (default 8) move MODEL's production alias N times in all, each to a
version drawn from MODEL's versions (seeded), without expected_version, so
they race each other. Before and after, the model's versions (every field but
status and the alias fields, which a promotion is meant to change) and its
event log are read. Prints one JSON line:
  promotions, answered (2xx), moved (answers with "changed": 1; a move onto
  the version production already names changes nothing), errors, changed
  (version fields that changed
  other than status/aliases), new_events (by kind), other_events (new events
  that are not alias moves), alias (production at the end), last_to (the
  target of the last new alias event), held (true when nothing but the alias
  and the targets' status changed, every new event is an alias move, one
  per answer that moved the alias, no error, and the alias is the last
  event's target).
Exit 1 when held is false."""
import json, random, sys, threading, time, urllib.request

url, token, model, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 8
delay = float(sys.argv[6]) if len(sys.argv) > 6 else 2.0
H = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}


def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, headers=H,
                                 data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def versions():
    vs = call("GET", f"/v1/models/{model}/versions?limit=500&sort=version")["versions"]
    # what a promotion may change: the status (promoted) and alias-derived fields
    skip = {"status", "status_reason", "aliases", "updated_at"}
    return {v["version"]: {k: x for k, x in v.items() if k not in skip} for v in vs}


def events(since):
    out = []
    while True:
        page = call("GET", f"/v1/models/{model}/events?since={since}&limit=500")
        evs = page.get("events", [])
        out += evs
        if not evs:
            return out
        since = evs[-1]["id"]


before = versions()
ev0 = events(0)
since = ev0[-1]["id"] if ev0 else 0
targets = sorted(before)
rng = random.Random(20261201)
plan = [rng.choice(targets) for _ in range(n)]
lock = threading.Lock()
answered, changed_n, errors = [0], [0], [0]


def worker(i):
    for k in range(i, n, threads):
        try:
            r = call("PUT", f"/v1/models/{model}/aliases/production",
                     {"version": plan[k], "reason": "race %d" % k})
            with lock:
                answered[0] += 1
                # a move onto the version the alias already names answers
                # "changed": 0 and records no event
                changed_n[0] += 1 if r.get("changed") else 0
        except Exception:
            with lock:
                errors[0] += 1


time.sleep(delay)
th = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
for t in th:
    t.start()
for t in th:
    t.join()

after = versions()
new = events(since)
kinds = {}
for e in new:
    kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
moves = [e for e in new if e["kind"] in ("alias.moved", "version.promoted")
         and (e.get("data") or {}).get("alias") == "production"]
changed = sorted({f"v{v}.{k}" for v in before for k in before[v]
                  if after.get(v, {}).get(k) != before[v][k]} | {f"v{v} added" for v in after if v not in before})
alias = call("GET", f"/v1/models/{model}/aliases/production")["version"]
last_to = (moves[-1].get("data") or {}).get("to", moves[-1].get("version")) if moves else None
held = (not changed and len(moves) == len(new) and len(moves) == changed_n[0] > 0
        and errors[0] == 0 and alias == last_to)
print(json.dumps({"promotions": n, "answered": answered[0], "moved": changed_n[0], "errors": errors[0], "changed": changed,
                  "new_events": kinds, "other_events": len(new) - len(moves), "alias": alias,
                  "last_to": last_to, "held": held}))
sys.exit(0 if held else 1)
