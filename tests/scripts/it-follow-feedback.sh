#!/usr/bin/env bash
# it-follow-feedback.sh: deploy/follow.sh (the feedback of pipeline.sh
# --follow) prints a line for each event of a dropped file: the file seen,
# its records ingested by a following kiln-ingest (real broker; a fortune
# file split at its "%" lines, as the inbox of the main job does), a model's
# new version, and the version rejected with its reason or promoted. What
# existed before it started is not reported.
source "$(dirname "${BASH_SOURCE[0]}")/../registry/lib.sh"
ingest=$KILN_BINARY_DIR/ingest/kiln-ingest
[ -x "$ingest" ] || { log "SKIP: $ingest not built"; exit 77; }
command -v jq >/dev/null || { log "SKIP: no jq"; exit 77; }
eval "$("$KILN_SOURCE_DIR/deploy/stack" env)"
start_registry
export KILN_REGISTRY_TOKEN=$ADMIN KILN_BUILD_DIR=$KILN_BINARY_DIR KILN_FOLLOW_INTERVAL=0.5
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$TMP/inbox"
printf '[kafka]\ntopic_prefix = follow%s\n' "$$" >"$TMP/k.ini"
"$KILNCTL" create-model m1 >/dev/null
printf 'old' >"$TMP/old.bin"
"$KILNCTL" register m1 --file "$TMP/old.bin" >/dev/null # version 1: before, not news
echo 'already there' >"$TMP/inbox/old.txt"

"$ingest" --config "$TMP/k.ini" --port "$port" --dataset notes --separator % files "$TMP/inbox" --follow \
    2>"$TMP/ingest.log" &
ing_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
# old.txt is "before": follow.sh starts once ingest's first scan has sent it,
# or a slow first scan would be counted as news (as it was on a loaded machine)
acked() { curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null |
    awk '$1 ~ /^kiln_ingest_records_total/ { s += $2 } END { printf "%d", s }'; }
for _ in $(seq 1 200); do [ "$(acked)" -ge 1 ] && break; sleep 0.1; done
[ "$(acked)" -ge 1 ] || fail "ingest did not send the file that was there before within 20 s"
"$KILN_SOURCE_DIR/deploy/follow.sh" "$TMP/inbox" "$port" notes m1 >"$TMP/follow.out" 2>"$TMP/follow.err" &
fol_pid=$!
trap 'kill $fol_pid $ing_pid 2>/dev/null; cleanup' EXIT
# new.txt only after follow.sh has taken what is there as its baseline
for _ in $(seq 1 300); do grep -q 'follow: following ' "$TMP/follow.out" && break; sleep 0.1; done
grep -q 'follow: following ' "$TMP/follow.out" ||
    fail "follow.sh did not say it was following within 30 s: $(cat "$TMP/follow.err")"

# wait_for TEXT: the follow output gets a line holding TEXT within 20 s.
wait_for() {
    for _ in $(seq 1 80); do grep -qF -- "$1" "$TMP/follow.out" && { ok "follow: $1"; return; }; sleep 0.25; done
    fail "no follow line with '$1'; got: $(cat "$TMP/follow.out") $(cat "$TMP/follow.err")"
}
echo 'a new note' >"$TMP/inbox/new.txt"
wait_for "inbox: new.txt (11 bytes)"
wait_for "ingested 1 record(s) into dataset notes"
printf 'one fortune\n%%\nanother one\n' >"$TMP/inbox/fortunes.txt" # split at "%" lines
wait_for "ingested 2 record(s) into dataset notes"
printf '{"text":"a"}\n\n{"text":"b","label":"x"}\n{"text":"c"}\n' >"$TMP/inbox/more.jsonl" # a record per line
wait_for "ingested 3 record(s) into dataset notes"
printf 'v2' >"$TMP/v2.bin"
"$KILNCTL" register m1 --file "$TMP/v2.bin" >/dev/null
wait_for "m1: version 2 trained, being evaluated"
"$KILNCTL" reject m1 2 --reason "loss 6.1 > max 5.9" >/dev/null
wait_for "m1: version 2 rejected: loss 6.1 > max 5.9"
"$KILNCTL" promote m1 1 --reason "test" >/dev/null
wait_for "m1: version 1 promoted"
grep -qF "old.txt" "$TMP/follow.out" && fail "a file that was there before was reported"
grep -qF "version 1 trained" "$TMP/follow.out" && fail "a version that existed before was reported as new"
[ "$FAILS" = 0 ] || exit 1
log "it-follow-feedback: ok"
