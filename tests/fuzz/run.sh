#!/usr/bin/env bash
# run.sh: builds the libFuzzer targets (clang, -DKILN_FUZZ=ON, a build tree
# of their own) and fuzzes each for a while over its seed corpus, its saved
# regressions and the inputs earlier runs found. See tests/fuzz/README.md.
#
# Usage: tests/fuzz/run.sh [--short] [--build DIR] [--work DIR] [SECONDS] [TARGET...]
#   SECONDS  per target (default 300); TARGET: image, media, ... (default all)
#   --build  the fuzz build tree (default build/fuzz)
#   --work   where new inputs, crashes and logs go (default BUILD/work)
#   --short  the test suite's run (tests/scripts/fuzz-short.sh): a crash is
#            reported and fails the run but is not copied into the source tree
# By hand (no --short), each crash is also copied to regressions/<target>/,
# to be fixed and committed. Exit status 1 when any target failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$src/build/fuzz work= short=0
while (($#)); do
    case $1 in
    --short) short=1 ;;
    --build) build=$2 && shift ;;
    --work) work=$2 && shift ;;
    -h | --help) sed -n '2,14p' "$0" && exit 0 ;;
    *) break ;;
    esac
    shift
done
secs=300
if (($#)) && [[ $1 =~ ^[0-9]+$ ]]; then secs=$1 && shift; fi
targets=("$@")
if ! ((${#targets[@]})); then # every fuzz_<target>.c
    for f in "$here"/fuzz_*.c; do
        f=${f##*/fuzz_} && targets+=("${f%.c}")
    done
fi
work=${work:-$build/work}

if ! command -v clang >/dev/null; then
    echo "fuzz: clang is missing: run deploy/install-deps.sh (Debian: clang libclang-rt-14-dev)" >&2
    exit 1
fi
mkdir -p "$build" "$work"
t0=$(date +%s)
if ! CC=clang cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_FUZZ=ON \
    -DKILN_CUDA=OFF >"$build.configure.log" 2>&1; then
    cat "$build.configure.log" >&2
    echo "fuzz: configuring the fuzz build failed (log: $build.configure.log)" >&2
    exit 1
fi
names=()
for t in "${targets[@]}"; do names+=("fuzz_$t"); done
if ! cmake --build "$build" -j"$(nproc)" --target "${names[@]}" >"$build.build.log" 2>&1; then
    grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)' "$build.build.log" >&2
    echo "fuzz: the fuzz build failed (log: $build.build.log)" >&2
    exit 1
fi
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - t0)) s; ${secs} s each"

# halt_on_error: the first report ends the run (libFuzzer saves the input)
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=()
for t in "${targets[@]}"; do
    bin=$build/tests/fuzz/fuzz_$t
    seeds=$here/corpus/$t regs=$here/regressions/$t
    out=$work/$t
    mkdir -p "$out/corpus" "$out/crashes"
    dirs=("$out/corpus" "$seeds") # new inputs go to the first folder
    [ -d "$regs" ] && dirs+=("$regs")
    rc=0
    # every saved regression once on its own, so a failure names its file
    if [ -d "$regs" ] && [ -n "$(ls -A "$regs")" ]; then
        "$bin" "$regs"/* >"$out/regressions.log" 2>&1 || rc=$?
        if ((rc)); then
            tail -n 40 "$out/regressions.log"
            echo "fuzz: $t: a saved regression fails again (log: $out/regressions.log)"
            failed+=("$t")
            continue
        fi
    fi
    # libFuzzer's own exit codes (77 on a crash) must not read as a skip
    "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/crashes/" "${dirs[@]}" >"$out/log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log")
    cov=$(grep -oE 'cov: [0-9]+' "$out/log" | tail -n 1 || true)
    if ((rc == 0)); then
        echo "fuzz: $t: ok, ${execs:-?} runs, ${cov:-cov: ?}, corpus $(ls "$out/corpus" | wc -l) new"
        continue
    fi
    failed+=("$t")
    grep -E -m 1 -A 30 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|contract broken' \
        "$out/log" || tail -n 40 "$out/log"
    for f in "$out"/crashes/*; do
        [ -e "$f" ] || continue
        if ((short)); then
            echo "fuzz: $t: crash input $f"
        else
            mkdir -p "$regs"
            cp "$f" "$regs/"
            echo "fuzz: $t: crash input copied to ${regs#"$src"/}/$(basename "$f")"
        fi
    done
    echo "fuzz: $t: FAILED (log: $out/log); reproduce: $bin FILE"
done
if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}"
    ((short)) || echo "fuzz: fix each, keep its input in tests/fuzz/regressions/<target>/, commit both"
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets clean in $(($(date +%s) - t0)) s"
