#!/usr/bin/env bash
# ratios.sh LOG: the one table of kiln ÷ PyTorch that tests/gpu/run prints at
# the end, read from the output of its steps (20-bench.sh's lines: per
# precision kiln's CUDA backend, then PyTorch eager on the same GPU; then
# PyTorch's GPT-2 124M, kiln's GPT-2 124M per precision with its "memory"
# line (the backend's own count, beside PyTorch's max_memory_allocated) and
# the nvidia-smi peak-memory lines; and 35-tiktoken.sh's tokenizer medians
# beside Python tiktoken's). Each header line ("kiln ... backend, precision P", "PyTorch ...,
# precision P") sets the precision of the figures under it; a PyTorch header
# without one is fp32 (or tf32 when it says "TF32 tensor cores"). A figure
# missing from the log shows as "-": the table never invents one.
set -euo pipefail
log=$1
awk '
function before(word,    i) { for (i = 2; i <= NF; i++) if ($i == word) return $(i - 1); return "" }
function after(word,    i) { for (i = 1; i < NF; i++) if ($i == word) return $(i + 1); return "" }
function field(prefix,    i) {
    for (i = 1; i <= NF; i++) if (index($i, prefix) == 1) return substr($i, length(prefix) + 1)
    return ""
}
function prec_of(dflt,    p) { p = after("precision"); sub(/[,(].*/, "", p); return p == "" ? dflt : p }
/^kiln .* backend/ { who = "kiln"; prec = prec_of("fp32"); next }
/^PyTorch .*GPT-2 124M.*tokens\/s/ {
    s = $0; sub(/ tokens\/s.*/, "", s); sub(/.*: /, "", s); gsub(/,/, "", s); tg2 = s
    tg2b = field("B="); s = $0
    if (sub(/.* peak /, "", s)) { sub(/ MiB allocated.*/, "", s); tmem = s }
    next
}
/^PyTorch .*cuda/ { who = "torch"; prec = prec_of(index($0, "TF32 tensor cores") ? "tf32" : "fp32"); next }
/^(mlp|cnn(-[a-z0-9]+)?) +B=/ { # cnn-PATH: a conv path of kiln (KILN_CUDA_CONV), PyTorch has cnn
    key = $1 " B=" field("B="); v[who, key, prec] = before("images/s")
    if (!(key in cseen)) { cseen[key] = 1; corder[++n] = key }
    if (!(prec in pseen)) { pseen[prec] = 1; porder[++pn] = prec }
    next
}
/^gpt +L=4/ {
    v[who, "small GPT", prec] = before("tokens/s")
    if (!(("small GPT", prec) in seen)) { seen["small GPT", prec] = 1; gorder[++gn] = prec }
    next
}
/^gpt2 124M/ { kg2[prec] = before("tokens/s"); kg2b[prec] = field("B="); if (!(prec in g2seen)) { g2seen[prec] = 1; g2order[++g2n] = prec } next }
/^memory gpt2 B=[0-9]+: peak [0-9]/ { s = $0; sub(/.*: peak /, "", s); sub(/ MiB.*/, "", s); kself[prec] = s; next }
/^peak-memory kiln-gpt2(-[a-z0-9]+)?: [0-9]/ { p = $2; sub(/:$/, "", p); sub(/^kiln-gpt2-?/, "", p); kmem[p == "" ? "fp32" : p] = $3 }
/^peak-memory torch-gpt2: [0-9]/ { tsmi = $3 }
/^(r50k|cl100k): [0-9]+ rounds, MB\/s/ { enc = $1; sub(/:$/, "", enc); next }
/^  kiln +[0-9.]+-/ && enc != "" { tk[enc] = $NF; next }
/^  native tiktoken \(Python\) +[0-9.]+-/ && enc != "" { tt[enc] = $NF; if (!(enc in eseen)) { eseen[enc] = 1; eorder[++en] = enc } next }
function tkey(k) { sub(/^cnn-[a-z0-9]+/, "cnn", k); return k }
function ratio(k, t) { return (k != "" && t != "" && t + 0 > 0) ? sprintf("%.3g", k / t) : "-" }
function row(name, p, k, t, unit) {
    printf "%-28s %-5s %18s %20s %10s\n", name " (" unit ")", p, k == "" ? "-" : k, t == "" ? "-" : t, ratio(k, t)
}
END {
    printf "%-28s %-5s %18s %20s %10s\n", "case", "prec", "kiln", "PyTorch", "kiln÷PyT"
    for (i = 1; i <= n; i++)
        for (j = 1; j <= pn; j++)
            row(corder[i], porder[j], v["kiln", corder[i], porder[j]], v["torch", tkey(corder[i]), porder[j]], "img/s")
    for (i = 1; i <= gn; i++)
        row("small GPT", gorder[i], v["kiln", "small GPT", gorder[i]], v["torch", "small GPT", gorder[i]], "tok/s")
    if (!g2n) { g2order[++g2n] = "fp32" }
    for (i = 1; i <= g2n; i++) {
        p = g2order[i]
        printf "%-28s %-5s %18s %20s %10s\n", "GPT-2 124M (tok/s)", p,
            kg2[p] == "" ? "-" : kg2[p] " B=" kg2b[p], tg2 == "" ? "-" : tg2 " bf16 B=" tg2b,
            ratio(kg2[p], tg2)
    }
    for (i = 1; i <= g2n; i++) {
        p = g2order[i]
        k = kself[p] != "" ? kself[p] : kmem[p]
        printf "%-28s %-5s %18s %20s %10s\n", "GPT-2 peak memory (MiB)", p,
            k == "" ? "-" : k " B=" kg2b[p], tmem == "" ? "-" : tmem " B=" tg2b,
            ratio(k, tmem)
    }
    for (i = 1; i <= g2n; i++)
        if (kself[g2order[i]] != "" && kmem[g2order[i]] != "")
            printf "  (kiln %s: %s MiB by nvidia-smi, CUDA context included)\n", g2order[i], kmem[g2order[i]]
    printf "  (kiln: its own count of what it allocated, bench_nn_cpu'"'"'s \"memory\" line, else nvidia-smi less what was in use before)\n"
    if (tsmi != "") printf "  (PyTorch: max_memory_allocated, %s MiB by nvidia-smi)\n", tsmi
    print "  (GPT-2: PyTorch is always bf16 + torch.compile; the prec column is kiln'"'"'s)"
    for (i = 1; i <= en; i++)
        row("tokenizer " eorder[i], "-", tk[eorder[i]], tt[eorder[i]], "MB/s")
    if (en) print "  (tokenizer: median MB/s per CPU-second of one thread; the PyTorch column is native tiktoken, Python)"
}' "$log"
