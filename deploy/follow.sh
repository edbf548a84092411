#!/usr/bin/env bash
# deploy/follow.sh: the feedback of `deploy/pipeline.sh --follow`, one line
# per event, so that a file dropped into the inbox can be followed to its
# end: the file seen, the records ingested (or refused into the DLQ), each
# model's new version trained, then promoted or rejected with the reason.
#
# Usage: deploy/follow.sh INBOX INGEST_PORT DATASET MODEL...
# Uses KILN_REGISTRY_URL and KILN_REGISTRY_TOKEN (kilnctl), KILN_BUILD_DIR;
# polls every KILN_FOLLOW_INTERVAL seconds (3) until it is killed. What
# exists when it starts is not news; a "following" line says when that
# baseline is taken.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KILN_BUILD_DIR:-$root/build}
[ $# -ge 3 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
inbox=$1 port=$2 dataset=$3
shift 3
models=("$@")
interval=${KILN_FOLLOW_INTERVAL:-3}

say() { printf '%s follow: %s\n' "$(date +%H:%M:%S)" "$*"; }
metric() { # PORT NAME: the sum of a metric's series, "-" when the service does not answer
    { curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2; f = 1 } END { if (f) printf "%.0f", s; else printf "-" }'
}
versions() { # MODEL: "VERSION STATUS REASON" lines of its newest versions
    "$build/registry/kilnctl" --json versions "$1" --sort -version --limit 10 2>/dev/null |
        jq -r '.versions[]? | "\(.version) \(.status) \(.status_reason // "")"' 2>/dev/null || true
}

declare -A seen status
while IFS= read -r f; do seen[$f]=1; done < <(find "$inbox" -type f 2>/dev/null)
for m in "${models[@]}"; do
    while read -r v st _; do status[$m:$v]=$st; done < <(versions "$m")
done
last_in=$(metric "$port" kiln_ingest_records_total)
last_dlq=$(metric "$port" kiln_ingest_dlq_records_total)
say "following $inbox (${#seen[@]} file(s) there already; models: ${models[*]:-none})"

while :; do
    while IFS= read -r f; do
        [ -n "${seen[$f]:-}" ] && continue
        seen[$f]=1
        say "inbox: ${f#"$inbox"/} ($(stat -c %s "$f" 2>/dev/null || echo ?) bytes)"
    done < <(find "$inbox" -type f 2>/dev/null | sort)
    n=$(metric "$port" kiln_ingest_records_total)
    d=$(metric "$port" kiln_ingest_dlq_records_total)
    if [ "$n" != - ] && [ "$last_in" != - ] && [ "$n" -gt "$last_in" ]; then
        say "ingested $((n - last_in)) record(s) into dataset $dataset"
    fi
    if [ "$d" != - ] && [ "$last_dlq" != - ] && [ "$d" -gt "$last_dlq" ]; then
        say "refused $((d - last_dlq)) record(s) into the DLQ: kiln-ingest dlq lists them with the reason"
    fi
    [ "$n" != - ] && last_in=$n
    [ "$d" != - ] && last_dlq=$d
    for m in "${models[@]}"; do
        while read -r v st reason; do
            prev=${status[$m:$v]:-}
            [ "$prev" = "$st" ] && continue
            status[$m:$v]=$st
            [ -z "$prev" ] && say "$m: version $v trained, being evaluated"
            case $st in
            promoted | rejected) say "$m: version $v $st${reason:+: $reason}" ;;
            esac
        done < <(versions "$m" | sort -n)
    done
    sleep "$interval"
done
