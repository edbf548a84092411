/* Unit: the reader of exported shard directories (lib/stream/shardfiles.h):
 * a manifest read back with its files sorted by (split, partition, offset)
 * and its ranges; each file's bytes checked against the manifest's size and
 * SHA-256 (a changed byte, a truncated or missing file refused); manifests
 * that are not an export, malformed entries, and paths outside the
 * directory refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/kn.h"
#include "core/sha256.h"
#include "stream/shardfiles.h"

static char dir[256];

static void write_file(const char *rel, const void *buf, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

/* A directory with three files: train p1@7, train p0@3, eval p0@0. */
static json_t *make_export(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kiln-test-shardfiles-%d", (int)getpid());
    char cmd[1000];
    snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s/train %s/eval", dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    json_t *files = json_array();
    const struct {
        const char *path, *split;
        int p;
        int64_t off;
        const char *body;
    } f[] = {{"train/b", "train", 1, 7, "second partition"},
             {"train/a", "train", 0, 3, "first"},
             {"eval/a", "eval", 0, 0, "held out"}};
    for (int i = 0; i < 3; i++) {
        char hex[KN_SHA256_HEX_LEN];
        write_file(f[i].path, f[i].body, strlen(f[i].body));
        kn_sha256_hex(f[i].body, strlen(f[i].body), hex);
        json_array_append_new(files, json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:s, s:{s:s}}",
                                               "path", f[i].path, "split", f[i].split, "topic", "t",
                                               "partition", f[i].p, "offset", (json_int_t)f[i].off,
                                               "bytes", (json_int_t)strlen(f[i].body), "sha256",
                                               hex, "headers", "recipe-sha256", "r1"));
    }
    return json_pack("{s:s, s:i, s:o, s:{s:{s:s, s:[{s:i, s:i, s:i}, {s:i, s:i, s:i}]}}}", "kind",
                     KN_SHARDFILES_KIND, "schema", 1, "files", files, "splits", "train", "topic",
                     "kiln.train.x", "partitions", "partition", 0, "start", 3, "end", 4,
                     "partition", 1, "start", 5, "end", 8);
}

static void save_manifest(json_t *m)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, KN_SHARDFILES_MANIFEST);
    assert_int_equal(json_dump_file(m, path, 0), 0);
}

static void cleanup_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void reads_back(void **state)
{
    (void)state;
    json_t *m = make_export();
    save_manifest(m);
    kn_shardfiles sf;
    char err[512];
    assert_int_equal(kn_shardfiles_open(dir, &sf, err, sizeof(err)), KN_OK);
    assert_int_equal(sf.nfiles, 3);
    /* sorted: eval before train; train by partition */
    assert_string_equal(sf.files[0].split, "eval");
    assert_int_equal(sf.files[1].partition, 0);
    assert_int_equal(sf.files[1].offset, 3);
    assert_int_equal(sf.files[2].partition, 1);
    assert_int_equal(sf.files[2].offset, 7);
    assert_string_equal(kn_shardfiles_header(&sf, 1, "recipe-sha256"), "r1");
    assert_null(kn_shardfiles_header(&sf, 1, "tokenizer-sha256"));
    void *buf;
    size_t len;
    assert_int_equal(kn_shardfiles_read(&sf, 2, &buf, &len, err, sizeof(err)), KN_OK);
    assert_int_equal(len, strlen("second partition"));
    assert_memory_equal(buf, "second partition", len);
    free(buf);
    const char *topic;
    int n;
    int64_t lo[2], hi[2];
    assert_int_equal(kn_shardfiles_range(&sf, "train", &topic, &n, lo, hi, 2), KN_OK);
    assert_string_equal(topic, "kiln.train.x");
    assert_int_equal(n, 2);
    assert_int_equal(lo[0], 3);
    assert_int_equal(hi[0], 4);
    assert_int_equal(lo[1], 5);
    assert_int_equal(hi[1], 8);
    assert_int_equal(kn_shardfiles_range(&sf, "eval", NULL, &n, NULL, NULL, 0), KN_ENOTFOUND);
    assert_int_equal(strlen(sf.manifest_sha256), 64);

    /* one byte changed, same size: refused by the SHA-256 */
    write_file("train/a", "firsT", 5);
    assert_int_equal(kn_shardfiles_read(&sf, 1, &buf, &len, err, sizeof(err)), KN_ECORRUPT);
    assert_null(buf);
    assert_non_null(strstr(err, "sha256"));
    /* truncated */
    write_file("train/a", "firs", 4);
    assert_int_equal(kn_shardfiles_read(&sf, 1, &buf, &len, err, sizeof(err)), KN_ECORRUPT);
    /* missing */
    char path[512];
    snprintf(path, sizeof(path), "%s/eval/a", dir);
    unlink(path);
    assert_int_not_equal(kn_shardfiles_read(&sf, 0, &buf, &len, err, sizeof(err)), KN_OK);
    kn_shardfiles_close(&sf);
    json_decref(m);
    cleanup_dir();
}

static void refuses_bad_manifests(void **state)
{
    (void)state;
    kn_shardfiles sf;
    char err[512];
    json_t *m = make_export();
    /* no manifest at all */
    assert_int_equal(kn_shardfiles_open(dir, &sf, err, sizeof(err)), KN_ENOTFOUND);
    /* not JSON */
    write_file(KN_SHARDFILES_MANIFEST, "{nope", 5);
    assert_int_equal(kn_shardfiles_open(dir, &sf, err, sizeof(err)), KN_ECORRUPT);
    /* another kind, another schema */
    json_t *k = json_deep_copy(m);
    json_object_set_new(k, "kind", json_string("something.else"));
    save_manifest(k);
    assert_int_equal(kn_shardfiles_open(dir, &sf, err, sizeof(err)), KN_EINVAL);
    json_object_set_new(k, "kind", json_string(KN_SHARDFILES_KIND));
    json_object_set_new(k, "schema", json_integer(2));
    save_manifest(k);
    assert_int_equal(kn_shardfiles_open(dir, &sf, err, sizeof(err)), KN_EINVAL);
    json_decref(k);
    /* malformed entries: paths leaving the directory, a short digest, a
     * negative offset, a missing split */
    const char *keys[] = {"path", "path", "sha256", "offset", "split"};
    json_t *vals[] = {json_string("../outside"), json_string("/etc/passwd"), json_string("ab"),
                      json_integer(-1), json_null()};
    for (int i = 0; i < 5; i++) {
        json_t *bad = json_deep_copy(m);
        json_object_set(json_array_get(json_object_get(bad, "files"), 1), keys[i], vals[i]);
        save_manifest(bad);
        assert_int_equal(kn_shardfiles_open(dir, &sf, err, sizeof(err)), KN_ECORRUPT);
        assert_non_null(strstr(err, "files[1]"));
        json_decref(bad);
        json_decref(vals[i]);
    }
    json_decref(m);
    cleanup_dir();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_back),
        cmocka_unit_test(refuses_bad_manifests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
