# The lineage chain of a model's registry versions (`kilnctl --json versions`),
# used by tests/chaos/run and tests/cluster/run: version 1 starts at the
# beginning of each partition, each later version where its parent ended
# (per partition), and the examples of all versions add up to the last one's
# examples_total (every training example trained once per epoch).
# Out: {links, broken: [...], first: [...], sum, total, ends: {partition: end}}
# (ends: the furthest end each partition reached, for a check against the
# shards themselves).
[.versions[]?] | sort_by(.version) as $vs
| ([range(1; $vs | length) as $i
    | ($vs[$i - 1].lineage.partitions // []) as $a | $vs[$i].lineage.partitions[]? | . as $p
    | $a[] | select(.partition == $p.partition) | {v: $vs[$i].version, p: $p.partition, ok: (.end == $p.start)}]) as $links
| ([$vs[0].lineage.partitions[]? | select(.start.offset != 0 or .start.pos != 0) | "v1 p\(.partition) starts at \(.start)"]) as $first
| ([$vs[].lineage.examples] | add) as $sum | ($vs[-1].lineage.examples_total) as $total
| ([$vs[].lineage.partitions[]?] | group_by(.partition)
    | map({key: (.[0].partition | tostring), value: (map(.end) | max_by([.offset, .pos]))}) | from_entries) as $ends
| {links: ($links | length), broken: [$links[] | select(.ok | not) | "v\(.v) p\(.p)"],
   first: $first, sum: $sum, total: $total, ends: $ends}
