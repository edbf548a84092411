#!/usr/bin/env bash
# ratios.sh LOG: the one table of kiln ÷ PyTorch that tests/gpu/run prints at
# the end, read from the output of its steps (20-bench.sh's lines: kiln's
# CUDA backend, then PyTorch eager on the same GPU, PyTorch's GPT-2 124M,
# kiln's GPT-2 124M and both peak-memory lines). A figure missing from the
# log shows as "-": the table never invents one.
set -euo pipefail
log=$1
awk '
function before(word,    i) { for (i = 2; i <= NF; i++) if ($i == word) return $(i - 1); return "" }
function field(prefix,    i) {
    for (i = 1; i <= NF; i++) if (index($i, prefix) == 1) return substr($i, length(prefix) + 1)
    return ""
}
/^kiln .* backend/ { who = "kiln"; next }
/^PyTorch .*GPT-2 124M.*tokens\/s/ {
    s = $0; sub(/ tokens\/s.*/, "", s); sub(/.*: /, "", s); gsub(/,/, "", s); tg2 = s
    tg2b = field("B="); s = $0
    if (sub(/.* peak /, "", s)) { sub(/ MiB allocated.*/, "", s); tmem = s }
    next
}
/^PyTorch .*cuda/ { who = "torch"; next }
/^(mlp|cnn) +B=/ {
    key = $1 " B=" field("B="); v[who, key] = before("images/s")
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    next
}
/^gpt +L=4/ { v[who, "small GPT"] = before("tokens/s"); next }
/^gpt2 124M/ { kg2 = before("tokens/s"); kg2b = field("B="); next }
/^peak-memory kiln-gpt2: [0-9]/ { kmem = $3 }
/^peak-memory torch-gpt2: [0-9]/ { tsmi = $3 }
function row(name, k, t, unit,    r) {
    r = (k != "" && t != "" && t + 0 > 0) ? sprintf("%.3g", k / t) : "-"
    printf "%-26s %18s %24s %10s\n", name " (" unit ")", k == "" ? "-" : k, t == "" ? "-" : t, r
}
END {
    printf "%-26s %18s %24s %10s\n", "case", "kiln", "PyTorch", "kiln÷PyT"
    for (i = 1; i <= n; i++) row(order[i], v["kiln", order[i]], v["torch", order[i]], "img/s")
    row("small GPT", v["kiln", "small GPT"], v["torch", "small GPT"], "tok/s")
    printf "%-26s %18s %24s %10s\n", "GPT-2 124M (tok/s)",
        kg2 == "" ? "-" : kg2 " fp32 B=" kg2b, tg2 == "" ? "-" : tg2 " bf16 B=" tg2b,
        (kg2 != "" && tg2 + 0 > 0) ? sprintf("%.3g", kg2 / tg2) : "-"
    printf "%-26s %18s %24s %10s\n", "GPT-2 peak memory (MiB)",
        kmem == "" ? "-" : kmem " B=" kg2b, tmem == "" ? "-" : tmem " B=" tg2b,
        (kmem != "" && tmem + 0 > 0) ? sprintf("%.3g", kmem / tmem) : "-"
    if (tsmi != "") printf "  (kiln: nvidia-smi, context included; PyTorch: max_memory_allocated, %s MiB by nvidia-smi)\n", tsmi
}' "$log"
