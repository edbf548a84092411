#!/usr/bin/env bash
# it-kafka-disk-full.sh: the broker's log directory fills up under kiln-ingest
# (issue 14, hostile neighbours). A Kafka node of its own (deploy/stack up
# --kafka-only, its own stack dir and ports) keeps its data on a 64 MiB tmpfs
# the test mounts (needs root or CAP_SYS_ADMIN; without it the test is
# skipped, saying so). Then:
#   1. batch A (300 text records) through `kiln-ingest jsonl`: all acknowledged;
#   2. the tmpfs filled to the last byte (a filler file), batch B started: the
#      broker's next append fails with ENOSPC, Kafka takes its only log
#      directory offline and stops the node, saying why in its log ("No space
#      left on device"); kiln-ingest keeps B queued (no record acknowledged
#      that the broker did not write) and waits within its drain timeout;
#   3. space returns (the filler removed) and the node is started again:
#      kiln-ingest delivers B and exits 0;
#   4. <prefix>.raw.text holds every key of A and B exactly once: nothing
#      acknowledged was lost, nothing written twice.
# About 40-60 s (two broker starts).
set -euo pipefail
src=${KILN_SOURCE_DIR:?run through ctest}
bin=${KILN_BINARY_DIR:?run through ctest}
DUMP=$bin/tests/chaos_topic_dump
INGEST=$bin/ingest/kiln-ingest
for x in "$DUMP" "$INGEST"; do [ -x "$x" ] || { echo "FAIL: $x not built"; exit 1; }; done
say() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
TMP=$(mktemp -d /tmp/kiln-kafka-full-XXXXXX)
S=$TMP/stack
DATA=$S/kafka/data
mkdir -p "$DATA"
MOUNTED=
INGEST_PID=
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kp=$(free_port) cp=$(free_port)
kstack() {
    KILN_STACK_DIR=$S KILN_KAFKA_BROKERS_N= KILN_KAFKA_PORT=$kp KILN_KAFKA_CONTROLLER_PORT=$cp \
        KILN_KAFKA_HEAP=256m "$src/deploy/stack" "$@"
}
cleanup() {
    [ -n "$INGEST_PID" ] && kill "$INGEST_PID" 2>/dev/null
    rm -f "$DATA/filler"
    kstack down >/dev/null 2>&1 || true
    [ -n "$MOUNTED" ] && umount "$DATA" 2>/dev/null
    if [ -n "${KEEP_TMP:-}" ]; then say "files kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
if ! mount -t tmpfs -o size=64m tmpfs "$DATA" 2>/dev/null; then
    echo "SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): no small disk to fill"
    exit 77
fi
MOUNTED=1
kstack up --kafka-only >"$TMP/stack.log" 2>&1 || { tail -n 5 "$TMP/stack.log"; echo "FAIL: the test's broker did not start"; exit 1; }
kpid=$(cat "$S/kafka.pid")
export KILN_KAFKA_BROKERS=127.0.0.1:$kp KILN_KAFKA_TOPIC_PREFIX=dfull_$$ KILN_INGEST_PORT=0
# a drain long enough for the node's restart on a busy machine
export KILN_INGEST_DRAIN_TIMEOUT_MS=120000
say "broker on :$kp, its data on a 64 MiB tmpfs ($(df -k --output=avail "$DATA" | tail -n 1 | tr -d ' ') KiB free)"

# two batches of unique text records and their keys (SHA-256 of the text)
python3 - "$TMP" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
for b in "AB":
    with open(f"{d}/{b}.jsonl", "w") as f, open(f"{d}/{b}.keys", "w") as k:
        for i in range(300):
            t = f"disk full test {os.getpid()} batch {b} record {i}: " + "some text to fill a record. " * 8
            f.write(json.dumps({"text": t}) + "\n")
            k.write(hashlib.sha256(t.encode()).hexdigest() + "\n")
PY
ingest() { "$INGEST" jsonl "$1" >"$2" 2>&1; }
delivered() { jq -rR 'fromjson? | .delivered // empty' "$1" | tail -n 1; }
fails=0
check() { if [ "$2" = 0 ]; then say "ok: $1"; else say "FAIL: $1"; fails=$((fails + 1)); fi; }

ingest "$TMP/A.jsonl" "$TMP/A.out" || true
check "batch A: $(delivered "$TMP/A.out") of 300 acknowledged" "$([ "$(delivered "$TMP/A.out")" = 300 ] && echo 0 || echo 1)"

# fill the broker's disk to the last byte
dd if=/dev/zero of="$DATA/filler" bs=64k status=none 2>/dev/null || true
say "disk filled: $(df -k --output=avail "$DATA" | tail -n 1 | tr -d ' ') KiB free"
ingest "$TMP/B.jsonl" "$TMP/B.out" &
INGEST_PID=$!
t0=$SECONDS
while kill -0 "$kpid" 2>/dev/null && [ $((SECONDS - t0)) -lt 60 ]; do sleep 0.2; done
stopped=$(kill -0 "$kpid" 2>/dev/null && echo 1 || echo 0)
check "the broker stopped on the full disk after $((SECONDS - t0)) s" "$stopped"
why=$(grep -m 1 -o 'No space left on device' "$S/kafka/server.log" || true)
check "the broker's log says why: ${why:-nothing about the disk}" "$([ -n "$why" ] && echo 0 || echo 1)"
sleep 2 # a moment with the broker gone: ingest must keep waiting, not give up
kill -0 "$INGEST_PID" 2>/dev/null && waiting=0 || waiting=1
check "kiln-ingest still waits for batch B with the broker down ($(grep -c . "$TMP/B.out") log lines so far)" "$waiting"

rm -f "$DATA/filler"
t1=$SECONDS
kstack up --kafka-only >>"$TMP/stack.log" 2>&1 || { tail -n 5 "$TMP/stack.log"; echo "FAIL: the broker did not come back"; exit 1; }
say "space returned, the broker back after $((SECONDS - t1)) s"
rc=0
wait "$INGEST_PID" || rc=$?
INGEST_PID=
check "batch B: kiln-ingest exited $rc, $(delivered "$TMP/B.out") of 300 acknowledged, $((SECONDS - t1)) s after space returned" \
    "$([ "$rc" = 0 ] && [ "$(delivered "$TMP/B.out")" = 300 ] && echo 0 || echo 1)"
grep -h '"level":"warn"\|"level":"error"' "$TMP/B.out" | head -n 3 | cut -c 1-300 >&2 || true

# every acknowledged key once on the raw topic
"$DUMP" --keys "$KILN_KAFKA_BROKERS" "$KILN_KAFKA_TOPIC_PREFIX.raw.text" | awk '{ print $3 }' | sort >"$TMP/raw.keys"
sort "$TMP/A.keys" "$TMP/B.keys" >"$TMP/fed.keys"
twice=$(uniq -d "$TMP/raw.keys" | wc -l)
lost=$(sort -u "$TMP/raw.keys" | comm -23 "$TMP/fed.keys" - | wc -l)
extra=$(sort -u "$TMP/raw.keys" | comm -13 "$TMP/fed.keys" - | wc -l)
check "raw.text: $(wc -l <"$TMP/raw.keys") records for 600 keys: $lost lost, $twice twice, $extra unknown" \
    "$([ "$lost" = 0 ] && [ "$twice" = 0 ] && [ "$extra" = 0 ] && echo 0 || echo 1)"
[ "$fails" = 0 ] || { say "$fails check(s) failed (KEEP_TMP=1 keeps $TMP)"; exit 1; }
say "all checks passed"
