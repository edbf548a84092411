/* shardfiles.h: shards exported to files (`kiln-preprocess export`), read
 * back without Kafka by kiln-trainer --from-dir and kiln-evaluator score.
 * A directory holds manifest.json and one file per shard, whose bytes are
 * exactly the Kafka record value; the manifest names the topic, partition
 * and offset of each file, its SHA-256 and size, and the record's headers
 * (docs/formats.md, "Shard files"). */
#ifndef KN_SHARDFILES_H
#define KN_SHARDFILES_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define KN_SHARDFILES_MANIFEST "manifest.json"
#define KN_SHARDFILES_KIND     "kiln.shards.export"

typedef struct {
    const char *path;  /* relative to the directory (borrowed from the manifest) */
    const char *split; /* "train" | "eval" */
    const char *topic;
    int32_t partition;
    int64_t offset; /* the record's offset in topic */
    int64_t bytes;
    const char *sha256;    /* 64 hex digits */
    const json_t *headers; /* {name: string}, borrowed */
} kn_shardfile;

typedef struct {
    char *dir;
    json_t *manifest; /* owned */
    char manifest_sha256[65];
    kn_shardfile *files; /* (nfiles), sorted by split, partition, offset */
    size_t nfiles;
} kn_shardfiles;

/* Reads and checks dir/manifest.json. KN_ENOTFOUND / KN_ECORRUPT / KN_EINVAL
 * with err saying why. Close with kn_shardfiles_close. */
int kn_shardfiles_open(const char *dir, kn_shardfiles *out, char *err, size_t errsz);
void kn_shardfiles_close(kn_shardfiles *sf);

/* Reads file i whole into *buf (malloc'd) and checks its size and SHA-256
 * against the manifest (KN_ECORRUPT when they differ). */
int kn_shardfiles_read(const kn_shardfiles *sf, size_t i, void **buf, size_t *len, char *err,
                       size_t errsz);

/* Header `name` of file i, or NULL. */
const char *kn_shardfiles_header(const kn_shardfiles *sf, size_t i, const char *name);

/* The exported range of split: its topic (borrowed) and partition count, and
 * [start[p], end[p]) per partition (the caller's arrays of nparts entries,
 * or NULL to ask the count). KN_ENOTFOUND when the split was not exported. */
int kn_shardfiles_range(const kn_shardfiles *sf, const char *split, const char **topic, int *nparts,
                        int64_t *start, int64_t *end, int cap);

#endif
