#!/usr/bin/env bash
# The whole kiln pipeline on the native stack (called by deploy/run, which has
# installed, built and started Kafka + PostgreSQL):
#   1. starts kiln-registry, kiln-preprocess and kiln-evaluator;
#   2. imports Fashion-MNIST and fortunes from their Debian packages;
#   3. once preprocess has made the shards of every record in the raw topics
#      (`kiln-preprocess lag` 0: this run's imports and earlier ingests),
#      trains every model of deploy/kiln.ini's `pipeline.models` until each
#      has a promoted `production` version, showing live progress;
#   4. prints each model's production version, its metrics and how to query it,
#      and kiln-serve (port 8085) answers with those versions: a working curl
#      against it is printed and run.
# With --follow it keeps running: files dropped into the inbox folder are
# ingested, trained on, evaluated, and promoted or rejected with the reason.
# Every service runs under deploy/supervise: one that crashes (kill -9, OOM,
# an error) is restarted with backoff, each restart logged with its exit
# status and counted in the progress line; after repeated crashes in a short
# time the supervisor gives up and this job stops, saying so.
#
# Usage: deploy/pipeline.sh [--config FILE] [--follow] [--timeout MINUTES] | --stop | --status
# (--config: default $KILN_CONFIG, else deploy/kiln.ini)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KILN_BUILD_DIR:-$root/build}
stackdir=${KILN_STACK_DIR:-$root/.stack}
state=${KILN_PIPELINE_DIR:-$stackdir/pipeline} # this pipeline's files:
run=$state/run                                 #   PID files and logs of the services
config=${KILN_CONFIG:-$root/deploy/kiln.ini}
inbox=${KILN_INBOX:-$state/inbox}
follow=0
timeout_min=${KILN_PIPELINE_TIMEOUT_MIN:-120}

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# cfg KEY DEFAULT: a value of deploy/kiln.ini (KILN_* environment first).
cfg() {
    local key=$1 def=${2-} env section k v
    env=KILN_$(tr 'a-z.-' 'A-Z__' <<<"$key")
    if [ -n "${!env:-}" ]; then echo "${!env}"; return; fi
    section=${key%.*} k=${key##*.}
    v=$(awk -v s="[$section]" -v k="$k" '
        /^[ \t]*\[/ { gsub(/[ \t]/, ""); in_s = ($0 == s); next }
        in_s && $0 ~ "^[ \t]*" k "[ \t]*=" { sub(/^[^=]*=[ \t]*/, ""); sub(/[ \t]+$/, ""); print; exit }
    ' "$config")
    echo "${v:-$def}"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# running NAME: its supervisor is there (the service itself may be between restarts)
running() { pid_alive "$run/$1.sup"; }

# start NAME PORT COMMAND...: runs a service under deploy/supervise in the
# background, logs in $run; waits for /healthz unless PORT is "-".
start() {
    local name=$1 port=$2; shift 2
    if running "$name"; then return 0; fi
    rm -f "$run/$name.pid"
    setsid "$root/deploy/supervise" --name "$name" --dir "$run" -- "$@" </dev/null &
    echo $! >"$run/$name.sup"
    if [ "$port" != "-" ]; then
        local i
        for ((i = 0; i < 150; i++)); do
            curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && return 0
            running "$name" || die "$name exited at start: see $run/$name.log"
            sleep 0.2
        done
        die "$name does not answer on port $port: see $run/$name.log"
    fi
}

# stop NAME...: SIGTERM to their supervisors, which stop the services (each
# within its shutdown deadline) and do not restart them; then waits.
stop() {
    local n f pid
    for n in "$@"; do
        f=$run/$n.sup
        [ -e "$f" ] || continue
        kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for n in "$@"; do
        f=$run/$n.sup
        [ -e "$f" ] || continue
        for _ in $(seq 1 200); do pid_alive "$f" || break; sleep 0.2; done
        if pid_alive "$f"; then kill -KILL "$(cat "$f")" 2>/dev/null || true; fi
        if pid_alive "$run/$n.pid"; then
            pid=$(cat "$run/$n.pid")
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$f" "$run/$n.pid"
        say "stopped $n"
    done
}

# names GLOB: the services of $run matching GLOB (by supervisor file)
names() { local f; for f in "$run"/$1.sup; do [ -e "$f" ] && basename "$f" .sup; done; }

# Stops the services, producers of work first and the registry last, so the
# trainers' final checkpoints still reach it.
stop_all() {
    # shellcheck disable=SC2046
    stop $(names 'trainer-*') $(names 'ingest-*')
    stop preprocess evaluator serve
    stop registry
    local f pid # services a run before the supervisor started (a .pid, no .sup)
    for f in "$run"/*.pid; do
        [ -e "$f" ] || continue
        pid=$(cat "$f")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$f"
        say "stopped $(basename "$f" .pid)"
    done
}

# restarts: the supervisors' restart counts, summed; gaveup: a service whose
# supervisor gave up (its reason), else nothing.
restarts() { cat "$run"/*.restarts 2>/dev/null | awk '{ s += $1 } END { printf "%d", s }'; }
gaveup() { local f; for f in "$run"/*.gaveup; do [ -e "$f" ] && { echo "$(basename "$f" .gaveup): $(cat "$f")"; return 0; }; done; return 1; }

# metric PORT NAME: the sum of a Prometheus metric's series on a service.
metric() { # "-" when the service does not answer (stopped, or not yet up)
    { curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null || true; } |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2; f = 1 } END { if (f) printf "%g", s; else printf "-" }'
}

case ${1:-} in
--stop) stop_all; exit 0 ;;
--status)
    for f in "$run"/*.sup; do
        [ -e "$f" ] || continue
        n=$(basename "$f" .sup)
        if pid_alive "$run/$n.pid"; then s=running; elif pid_alive "$f"; then s=restarting; else s=dead; fi
        echo "$n: $s, restarts $(cat "$run/$n.restarts" 2>/dev/null || echo 0)"
    done
    exit 0 ;;
-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
while [ $# -gt 0 ]; do
    case $1 in
    --follow) follow=1 ;;
    --config) config=$2; shift ;;
    --timeout) timeout_min=$2; shift ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done

# Debian's OpenBLAS 0.3.21 picks its AVX2 kernels on AVX-512 CPUs it does not
# know; its SKYLAKEX kernels are ~35% faster for our convolutions there
# (docs/nn.md). Only where every AVX-512 subset they use is present.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
    have=1
    for f in avx512f avx512cd avx512bw avx512dq avx512vl; do [[ " $flags " == *" $f "* ]] || have=0; done
    ((have)) && export OPENBLAS_CORETYPE=SKYLAKEX
fi

# Every key and name of the configuration, before anything starts.
"$build/registry/kiln-registry" --config "$config" --check-config >/dev/null ||
    die "$config has mistakes (listed above); nothing was started"
mkdir -p "$run" "$inbox"
eval "$("$root/deploy/stack" env)"
export KILN_KAFKA_BROKERS KILN_PG_CONNINFO KILN_CONFIG=$config

# The registry's first admin token: made once, kept private in the stack dir,
# given to the registry and to deploy/compose-tokens.sh only (docs/security.md).
tokfile=$state/registry-admin-token
[ -s "$tokfile" ] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tokfile")
unset KILN_REGISTRY_TOKEN # the services get their own below; reads need none
reg_port=$(cfg registry.port 8080)
export KILN_REGISTRY_URL=http://127.0.0.1:$reg_port

cd "$root" # relative paths of the config (tokenizer files) are from here
t0=$SECONDS
say "starting the services (logs in $run)"
KILN_REGISTRY_ADMIN_TOKEN=$(cat "$tokfile") start registry "$reg_port" "$build/registry/kiln-registry" --config "$config"

# Each service its own registry token with the fewest roles it needs, made
# as the compose stack makes them (trainer: write; evaluator: write +
# promote; tokenizer: write), kept in $state/tokens (0400).
KILN_REGISTRY_TOKEN=$(cat "$tokfile") PATH=$build/registry:$PATH KILN_TOKEN_OWNER=$(id -u):$(id -g) \
    sh "$root/deploy/compose-tokens.sh" "$state/tokens" >>"$run/tokens.log" 2>&1 ||
    die "making the services' tokens failed: see $run/tokens.log"
token() { cat "$state/tokens/$1/token"; }

# The fortunes' own BPE vocabulary: trained once, registered in the registry
# (model fortunes-bpe) so its hash is in the lineage of every model using it.
# It is written where the configuration's [dataset.fortunes] tokenizer says
# (relative to the repository root, as the services read it), so a copied
# config needs no environment override.
# (Only when the configuration has [dataset.fortunes]: one written by
# deploy/init-dataset brings its own.)
tok=$(cfg dataset.fortunes.tokenizer)
[ -n "$(cfg dataset.fortunes.kind)" ] && [ -z "$tok" ] &&
    die "$config: [dataset.fortunes] has no tokenizer = FILE (where the job writes the fortunes' vocabulary)"
[ -z "$tok" ] || [[ $tok == /* ]] || tok=$root/$tok
if [ -n "$tok" ] && [ ! -s "$tok" ]; then
    mkdir -p "$(dirname "$tok")"
    say "training the fortunes BPE vocabulary ($(cfg pipeline.tokenizer_vocab 4096) ids)"
    KILN_REGISTRY_TOKEN=$(token tokenizer) "$build/preprocess/kiln-preprocess" tokenizer train --out "$tok" \
        --vocab "$(cfg pipeline.tokenizer_vocab 4096)" --separator % \
        --register fortunes-bpe /usr/share/games/fortunes >"$run/tokenizer.json" 2>>"$run/tokenizer.log" ||
        { rm -f "$tok"; die "tokenizer training failed: see $run/tokenizer.log"; }
fi

start preprocess "$(cfg preprocess.port 8082)" "$build/preprocess/kiln-preprocess" --config "$config"
KILN_REGISTRY_TOKEN=$(token evaluator) start evaluator "$(cfg evaluator.port 8084)" \
    "$build/evaluator/kiln-evaluator" --config "$config"
export KILN_SERVE_MODELS=${KILN_SERVE_MODELS:-$(cfg pipeline.models "cnn-fmnist gpt-fortunes")}
serve_port=$(cfg serve.port 8085)
if [ -x "$build/serve/kiln-serve" ]; then # it follows the aliases: it may start before any exists
    start serve "$serve_port" "$build/serve/kiln-serve" --config "$config"
else
    say "warning: $build/serve/kiln-serve not built: nothing will serve the models"
fi

models=$(cfg pipeline.models "cnn-fmnist gpt-fortunes")
# Each dataset is imported once per stack (a marker records it), so running
# the main job again resumes training instead of feeding the data twice.
: >"$run/import.log"
for ds in fashion-mnist fortunes; do
    [ -n "$(cfg "dataset.$ds.kind")" ] || continue # not a dataset of this configuration
    [ -e "$state/imported.$ds" ] && continue
    say "importing $ds (Debian package)"
    "$build/ingest/kiln-ingest" --config "$config" import "$ds" 2> >(tee -a "$run/import.log" >&2)
    touch "$state/imported.$ds"
done
sleep 0.5 # let the tee processes flush
# What this run delivered, from the importers' closing log lines.
imported=$(jq -s '[.[] | select(.delivered != null) | .delivered] | add // 0' "$run/import.log" 2>/dev/null || echo 0)

# Train only once preprocess has caught up with everything in the raw topics
# (this run's imports and whatever was ingested before, as deploy/init-dataset
# does): a trainer started earlier may reach its idle exit before the first
# shard, and the evaluator freezes each eval set at its first evaluation, so
# it must hold the whole held-out split. `kiln-preprocess lag` asks Kafka for
# the group's committed offsets, which commit with the shards made of them.
pp_port=$(cfg preprocess.port 8082)
deadline=$((SECONDS + timeout_min * 60)) # --timeout for the wait, then again for the training
say "waiting for preprocess to catch up with the raw topics ($imported record(s) imported by this run)"
next_say=$((SECONDS + 15))
while :; do
    lag=$("$build/preprocess/kiln-preprocess" lag --config "$config" 2>>"$run/lag.log" | jq -r '.lag // empty' 2>/dev/null || true)
    [ "$lag" = 0 ] && break
    running preprocess || die "preprocess died: $(gaveup || echo "see $run/preprocess.log")"
    if ((SECONDS >= deadline)); then
        [ -n "$lag" ] || die "kiln-preprocess lag got no answer from Kafka for $timeout_min minutes: see $run/lag.log"
        die "preprocess has not caught up after $timeout_min minutes: $lag raw record(s) to go (see $run/preprocess.log)"
    fi
    if ((SECONDS >= next_say)); then
        say "preprocess: ${lag:-?} raw record(s) to go (in $(metric "$pp_port" kiln_preprocess_records_in_total), shards $(metric "$pp_port" kiln_preprocess_shards_out_total))"
        next_say=$((SECONDS + 15))
    fi
    sleep 1
done
say "preprocess has caught up; starting the trainers"

port=$(cfg trainer.port 8083)
declare -A trainer_port
# Without --follow each trainer finishes its pass over the stream (it
# checkpoints and exits once no data came for a while; a model with epochs
# exits at the end of its first epoch); with it, it goes on (the remaining
# epochs, then replay cycles as new records arrive).
idle=()
((follow)) || idle=(--idle-exit "$(cfg pipeline.idle_exit_seconds 20)" --exit-at-epoch-end)
for m in $models; do
    trainer_port[$m]=$port
    KILN_REGISTRY_TOKEN=$(token trainer) start "trainer-$m" "$port" "$build/trainer/kiln-trainer" \
        --config "$config" --model "$m" \
        --port "$port" "${idle[@]}"
    port=$((port + 10))
done

if ((follow)); then
    start ingest-follow "$(cfg ingest.port 8081)" "$build/ingest/kiln-ingest" --config "$config" \
        --port "$(cfg ingest.port 8081)" --dataset "$(cfg pipeline.inbox_dataset fortunes)" \
        --separator "$(sep=$(cfg pipeline.inbox_separator %); [ "$sep" = none ] || echo "$sep")" \
        files "$inbox" --follow --state "$state/inbox.state"
    say "watching $inbox: files dropped there are ingested into dataset $(cfg pipeline.inbox_dataset fortunes)"
fi

# prod_version MODEL: the version behind its production alias, or "".
prod_version() {
    "$build/registry/kilnctl" --json deploy "$1" 2>/dev/null | jq -r '.version // empty' 2>/dev/null || true
}

# trainers_done: every trainer has exited (0: clean); a failure stops the job.
trainers_done() {
    local m f rc=0
    for m in $models; do
        running "trainer-$m" && rc=1
    done
    return $rc
}

# evaluations_done: each model's newest version has been decided.
evaluations_done() {
    local m st
    for m in $models; do
        st=$("$build/registry/kilnctl" --json versions "$m" --sort -version --limit 1 2>/dev/null |
            jq -r '.versions[0].status // "none"')
        case $st in promoted | rejected | archived) ;; *) return 1 ;; esac
    done
}

# evaluated: versions of our models the evaluator decided or scored, from the
# registry (an evaluator's own counter restarts at 0 with the process).
evaluated() {
    local m n=0 k
    for m in $models; do
        k=$("$build/registry/kilnctl" --json versions "$m" --limit 500 2>/dev/null |
            jq '[.versions[]? | select(.status == "evaluated" or .status == "promoted" or .status == "rejected")] | length' 2>/dev/null || echo 0)
        n=$((n + ${k:-0}))
    done
    echo "$n"
}

# Live progress until every model has a production version (and, without
# --follow, until the trainers finished their pass and it was evaluated).
deadline=$((SECONDS + timeout_min * 60))
ev_port=$(cfg evaluator.port 8084)
while :; do
    line=""
    done_all=1
    for m in $models; do
        p=${trainer_port[$m]}
        prod=$(prod_version "$m")
        [ -n "$prod" ] || done_all=0
        line+=" | $m step $(metric "$p" kiln_trainer_step) loss $(metric "$p" kiln_trainer_loss)"
        line+=" $(metric "$p" kiln_trainer_examples_per_second) ex/s v$(metric "$p" kiln_trainer_version) prod ${prod:-none}"
    done
    say "preprocess in $(metric "$pp_port" kiln_preprocess_records_in_total) shards $(metric "$pp_port" kiln_preprocess_shards_out_total)$line | evaluated $(evaluated) | restarts $(restarts)"
    if ((done_all)) && ((follow)); then break; fi
    if ((done_all)) && ((!follow)) && trainers_done && evaluations_done; then break; fi
    ((SECONDS < deadline)) || die "no production version for every model after $timeout_min minutes (logs in $run)"
    if why=$(gaveup); then die "$why"; fi
    for f in "$run"/*.sup; do
        [[ $f == */trainer-*.sup ]] && ((!follow)) && continue # they exit at the end of their pass
        pid_alive "$f" || die "$(basename "$f" .sup) stopped: see ${f%.sup}.log"
    done
    sleep 5
done
elapsed=$((SECONDS - t0))

if ((!follow)); then
    # Trainers checkpoint on SIGTERM; that last version is evaluated on the
    # next run (its event stays in Kafka). The registry keeps running.
    # shellcheck disable=SC2046
    stop $(names 'trainer-*') preprocess evaluator
fi

echo
echo "== kiln: every model has a production version (${elapsed} s from the first service start) =="
for m in $models; do
    v=$(prod_version "$m")
    echo
    "$build/registry/kilnctl" deploy "$m"
    "$build/registry/kilnctl" --json show "$m" "$v" |
        jq -r '"  metrics: " + ([.metrics // {} | to_entries[] | select(.key | test("^(accuracy|macro_f1|loss|perplexity|unigram_loss|eval_examples)$")) | "\(.key)=\(.value)"] | join(" "))' || true
    echo "  query it: kilnctl --registry $KILN_REGISTRY_URL deploy $m"
done
echo
# kiln-serve answers with the production versions (it follows the aliases).
if pid_alive "$run/serve.pid"; then
    sv=http://127.0.0.1:$serve_port
    for m in $models; do
        v=$(prod_version "$m")
        for _ in $(seq 1 60); do
            [ "$(curl -fsS "$sv/v1/models/$m" 2>/dev/null | jq -r '.version // empty' || true)" = "$v" ] && break
            sleep 0.5
        done
        type=$(curl -fsS "$sv/v1/models/$m" 2>/dev/null | jq -r '.type // empty' || true) # set -e: an unserved model is a warning
        if [ "$type" = gpt ]; then
            echo "  curl -sS -H 'Content-Type: application/json' -d '{\"prompt\":\"A wise man\",\"max_tokens\":24}' $sv/v1/models/$m/generate"
            curl -sS -H 'Content-Type: application/json' -d '{"prompt":"A wise man","max_tokens":24}' \
                "$sv/v1/models/$m/generate" | jq -c '{model, version, text}' || true
        elif [ "$type" = txtcls ]; then
            echo "  curl -sS -H 'Content-Type: application/json' -d '{\"text\":\"The computer crashed again\"}' $sv/v1/models/$m/predict?top_k=3"
            curl -sS -H 'Content-Type: application/json' -d '{"text":"The computer crashed again"}' \
                "$sv/v1/models/$m/predict?top_k=3" | jq -c '{model, version, predictions}' || true
        elif [ -n "$type" ]; then
            img=$state/t10k-0.pgm # the first Fashion-MNIST test image (an ankle boot, class 9)
            [ -s "$img" ] || { printf 'P5\n28 28\n255\n'; zcat /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz | tail -c +17 | head -c 784; } >"$img" 2>/dev/null || true
            echo "  curl -sS --data-binary @$img $sv/v1/models/$m/predict?top_k=3"
            curl -sS --data-binary @"$img" "$sv/v1/models/$m/predict?top_k=3" | jq -c '{model, version, predictions}' || true
        else
            say "warning: kiln-serve does not serve $m (see $run/serve.log, $sv/readyz)"
        fi
    done
    echo
fi

if ((follow)); then
    say "following: files dropped into $inbox are ingested, trained on, evaluated and promoted or rejected; Ctrl-C stops the services"
    # a line per dropped file, its records, each new version and its decision
    KILN_BUILD_DIR=$build "$root/deploy/follow.sh" "$inbox" "$(cfg ingest.port 8081)" \
        "$(cfg pipeline.inbox_dataset fortunes)" $models &
    follow_pid=$!
    trap 'kill "$follow_pid" 2>/dev/null; stop_all; exit 0' INT TERM
    while :; do
        if why=$(gaveup); then stop_all; die "$why"; fi
        for f in "$run"/*.sup; do pid_alive "$f" || say "warning: $(basename "$f" .sup) is not running (see ${f%.sup}.log)"; done
        say "restarts so far: $(restarts)"
        sleep 30
    done
fi
say "the registry and kiln-serve keep running for queries; 'deploy/pipeline.sh --stop' stops them, 'deploy/stack down' the stack"
