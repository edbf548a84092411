#!/usr/bin/env bash
# A batch source whose records are still queued when its drain timeout
# passes (issue 18, finding 7): the broker of this stack is paused
# (kill -STOP of its Kafka process) while `kiln-ingest jsonl` sends, the
# source gives up after ingest.drain_timeout_ms (2 s) and returns, then the
# broker resumes and the late delivery reports arrive while the process
# drains on its way out. They used to write into the returned function's
# stack tally; under AddressSanitizer (detect_stack_use_after_return) that is
# a crash. Runs the kiln-ingest of this build when it is a sanitizer build,
# else builds one (only kiln-ingest) in $KILN_ASAN_BUILD_DIR
# (default: <build>/sanitize, where tests/scripts/sanitize.sh builds).
set -euo pipefail
src=${KILN_SOURCE_DIR:?run through ctest}
bin=${KILN_BINARY_DIR:?run through ctest}
. "$src/tests/lib/paused_broker.sh" # kpid, broker_pause/resume; skips without it

if grep -q '^KILN_SANITIZE:BOOL=ON' "$bin/CMakeCache.txt" 2>/dev/null; then
    asan=$bin
else
    asan=${KILN_ASAN_BUILD_DIR:-$bin/sanitize}
    if ! { cmake -S "$src" -B "$asan" -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON -DKILN_CUDA=OFF &&
        cmake --build "$asan" -j"$(nproc)" --target kiln-ingest; } >"$asan.ingest-build.log" 2>&1; then
        tail -n 40 "$asan.ingest-build.log"
        echo "the sanitizer build of kiln-ingest failed"
        exit 1
    fi
fi
ingest=$asan/ingest/kiln-ingest

tmp=$(mktemp -d)
cleanup() {
    broker_resume_if_paused # whatever happened
    [ -n "${ipid:-}" ] && kill -KILL "$ipid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

export KILN_KAFKA_TOPIC_PREFIX=kiln-test-paused-$$-$(date +%s)
export KILN_INGEST_DRAIN_TIMEOUT_MS=2000 KILN_LOG_LEVEL=info
export ASAN_OPTIONS=detect_stack_use_after_return=1:detect_leaks=1:abort_on_error=0
mkfifo "$tmp/in"
"$ingest" jsonl - <"$tmp/in" 2>"$tmp/err" &
ipid=$!
exec 3>"$tmp/in" # ingest starts (topics, metadata) with the broker up
for _ in $(seq 1 100); do
    grep -q '"level":"error"' "$tmp/err" && { cat "$tmp/err"; exit 1; }
    [ -s "$tmp/err" ] && break
    sleep 0.1
done
sleep 2
broker_pause
for i in $(seq 1 50); do printf '{"text": "a record sent to a paused broker, number %d"}\n' "$i" >&3; done
exec 3>&-
# The source drains for 2 s and returns with the records unreported.
for _ in $(seq 1 100); do
    grep -q 'jsonl: finished' "$tmp/err" && break
    sleep 0.1
done
grep -q 'jsonl: finished' "$tmp/err" || { broker_resume; cat "$tmp/err"; echo "the source did not give up after its drain timeout"; exit 1; }
grep 'jsonl: finished' "$tmp/err" | grep -q '"unreported":[1-9]' ||
    { broker_resume; cat "$tmp/err"; echo "nothing was left unreported: the broker was not paused in time"; exit 1; }
sleep 1
broker_resume
rc=0
wait "$ipid" || rc=$?
ipid=
if grep -q 'AddressSanitizer' "$tmp/err"; then
    grep -A30 'ERROR: AddressSanitizer' "$tmp/err" | head -40
    echo "late delivery reports hit freed or returned memory"
    exit 1
fi
# 1: the source's run reported records it could not confirm in time (expected)
[ "$rc" -le 1 ] || { tail -n 20 "$tmp/err"; echo "kiln-ingest exited $rc"; exit 1; }
echo "late delivery reports after the drain timeout: no memory error (exit $rc)"
