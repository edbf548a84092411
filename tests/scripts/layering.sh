#!/usr/bin/env bash
# layering: lib/ folders include only what their layer allows
# (docs/architecture.md): core nothing of ours; stream, text, image, net and
# nn only core and themselves; service core, net and itself; recipe core,
# text, image and itself; nn/cuda only nn
# and core. No file in lib/
# includes a service's header, and every include of a lib header names its
# folder ("core/kn.h", never "kn.h"). Fails with each offending line.
set -euo pipefail
src=${KILN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$src/lib"
allowed() { # folder of the including file -> allowed include folders
    case $1 in
    core) echo "core" ;;
    stream | text | image | net) echo "core $1" ;;
    service) echo "core net service" ;;
    recipe) echo "core text image recipe" ;;
    nn) echo "core nn" ;;
    nn/cuda) echo "core nn" ;;
    *) echo "" ;;
    esac
}
bad=0 n=0
while IFS= read -r f; do
    dir=$(dirname "$f")
    ok=$(allowed "$dir")
    if [ -z "$ok" ]; then echo "layering: $f: file in a folder with no layer (add it to docs/architecture.md and this script)"; bad=1; continue; fi
    while IFS= read -r line; do
        inc=${line#*\"}; inc=${inc%%\"*}
        n=$((n + 1))
        top=${inc%%/*}
        if [ "$top" = "$inc" ]; then
            echo "layering: $f: #include \"$inc\" does not name its folder"; bad=1; continue
        fi
        if ! [[ " $ok " == *" $top "* ]]; then
            echo "layering: $f: #include \"$inc\": $dir may include only: $ok"; bad=1
        fi
    done < <(grep -E '^#include "' "$f" || true)
done < <(find core stream text image net service recipe nn -name '*.[ch]' -o -name '*.cu' | sort)
# the services and tests must name the folder too
while IFS= read -r hit; do
    # a service's own header of the same name (preprocess/service.h) is fine
    f=${hit%%:*} inc=${hit#*\"}; inc=${inc%%\"*}
    [ -f "$src/$(dirname "$f")/$inc" ] && continue
    echo "layering: $hit: a lib header included without its folder"; bad=1
done < <(cd "$src" && for h in lib/*/*.h lib/nn/cuda/*.h; do b=$(basename "$h"); grep -rnE "^#include \"$b\"" ingest preprocess trainer evaluator registry serve tests --include='*.c' --include='*.h' --include='*.cu' 2>/dev/null | grep -v "^$(dirname "$h" | sed 's#^lib/##')/" ; done || true)
[ "$n" -gt 50 ] || { echo "layering: only $n includes found under lib/: is this the right tree?"; exit 1; }
[ $bad -eq 0 ] && echo "layering: $n includes under lib/ checked: every one within its layer"
exit $bad
