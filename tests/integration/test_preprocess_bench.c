/* Benchmark (real Kafka): tokens/s and images/s through kiln-preprocess,
 * measured from the service's start to the moment its group has committed
 * every input offset (so it includes start-up, state rebuild, transactions).
 * Text: every fortune (about 2.6 MB; the few real repeats are dropped by
 * dedup) into an LM dataset (r50k_base when .cache/tokenizer has it,
 * near-dup dedup on). Images: 28x28 gray PNGs of Fashion-MNIST's first
 * 20,000 training images (a synthetic pattern when the dataset is not
 * installed), crop+flip augmentation; the test also times decoding those
 * very PNGs alone (kn_image_decode, this thread's CPU), the bound the
 * service is compared with.
 * KILN_BENCH_PP_INSTANCES="1,2,3" repeats both with that many instances in
 * one group (6 raw partitions; default "1"), and counts the near-duplicate
 * refusals of 300 planted pairs produced side by side (so the two texts of
 * a pair are processed at about the same moment, on two instances when the
 * keys fall in partitions of different instances): the single-instance run
 * refuses all; what more instances keep beyond that is the measured gap of
 * docs/preprocess.md "Scaling out". tests/bench/preprocess-scale.sh runs it.
 * KILN_BENCH_PP_IMAGES=0 skips the image runs (text only);
 * KILN_BENCH_PP_BIN=/path/kiln-preprocess runs another build of the service
 * (to alternate an old and a new binary on the same input);
 * KILN_BENCH_PP_IMAGE_COMPRESSION sets the image instance's
 * preprocess.compression (zstd when unset).
 * Prints the figures; fails only when the service does not finish. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#ifdef KILN_HAVE_SPNG
#include <spng.h>
#endif

#include "../unit/skip.h"

#include "stream/kafka.h"
#include "core/kn.h"
#include "image/idx.h"
#include "image/image.h"
#include "core/metrics.h"
#include "stream/record.h"
#include "stream/shard.h"

#include "test_preprocess_util.h"

#define N_IMAGES 20000

/* Copies of the fortunes (KILN_BENCH_PP_TEXT_COPIES, default 1): a larger
 * input makes the steady-state rate, not the instance's fixed start-up
 * cost, what is compared with the tokenizer alone. */
static int text_copies(void)
{
    const char *e = getenv("KILN_BENCH_PP_TEXT_COPIES");
    int n = e ? atoi(e) : 1;
    return n < 1 ? 1 : n > 64 ? 64 : n;
}

/* Copy c > 0 of a fortune: its words shuffled (seeded by c), so the copy
 * is neither an exact nor (mostly) a near duplicate of the original: the
 * shingles that span two words change. Its words, hence its tokens and the
 * tokenizer's work, stay those of the original. Whitespace becomes single
 * spaces. */
static size_t reorder_words(const char *in, size_t n, int c, char *out)
{
    const char *w[4096];
    size_t wl[4096], nw = 0;
    for (size_t i = 0; i < n && nw < 4096;) {
        while (i < n && (in[i] == ' ' || in[i] == '\n' || in[i] == '\t'))
            i++;
        size_t s = i;
        while (i < n && in[i] != ' ' && in[i] != '\n' && in[i] != '\t')
            i++;
        if (i > s) {
            w[nw] = in + s;
            wl[nw++] = i - s;
        }
    }
    uint64_t r = 0x9e3779b97f4a7c15ull * (uint64_t)c + n;
    for (size_t k = nw; k > 1; k--) { /* Fisher-Yates */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t)(r >> 33) % k;
        const char *tw = w[k - 1];
        size_t tl = wl[k - 1];
        w[k - 1] = w[j];
        wl[k - 1] = wl[j];
        w[j] = tw;
        wl[j] = tl;
    }
    size_t len = 0;
    for (size_t k = 0; k < nw; k++) {
        if (len) out[len++] = ' ';
        memcpy(out + len, w[k], wl[k]);
        len += wl[k];
    }
    return len;
}

static void produce(kn_kafka_producer *p, const char *topic, const char *kind, const void *v,
                    size_t len, const char *dataset, const char *label)
{
    char key[65];
    kn_record_key(v, len, key);
    kn_record_meta meta = {.kind = kind,
                           .content_type = "application/octet-stream",
                           .source = "bench",
                           .origin = "bench",
                           .dataset = dataset,
                           .label = label};
    kn_record_headers h;
    kn_record_headers_build(&h, &meta);
    assert_int_equal(kn_kafka_produce(p, topic, -1, key, 64, v, len, h.h, h.n, NULL), KN_OK);
}

/* Every fortune of every category file; returns bytes produced. */
static size_t produce_fortunes(kn_kafka_producer *p, const char *topic, int copies, long *nrec)
{
    DIR *d = opendir("/usr/share/games/fortunes");
    if (!d) return 0;
    struct dirent *de;
    size_t bytes = 0;
    char *doc = malloc(1 << 16), *copy = malloc(1 << 16), line[4096];
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strchr(de->d_name, '.')) continue;
        char path[512];
        snprintf(path, sizeof(path), "/usr/share/games/fortunes/%s", de->d_name);
        for (int c = 0; c < copies; c++) {
            FILE *f = fopen(path, "r");
            if (!f) break;
            size_t len = 0;
            while (fgets(line, sizeof(line), f)) {
                if (strcmp(line, "%\n") == 0) {
                    if (len > 4) {
                        const char *v = doc;
                        size_t vl = len;
                        if (c > 0) {
                            vl = reorder_words(doc, len, c, copy);
                            v = copy;
                        }
                        produce(p, topic, "text", v, vl, "benchlm", NULL);
                        bytes += vl;
                        (*nrec)++;
                    }
                    len = 0;
                    continue;
                }
                size_t l = strlen(line);
                if (len + l < (1 << 16)) {
                    memcpy(doc + len, line, l);
                    len += l;
                }
            }
            fclose(f);
        }
    }
    closedir(d);
    free(doc);
    free(copy);
    return bytes;
}

static int64_t committed_total(const char *group, const char *topic, int64_t *high)
{
    char err[512];
    kn_kafka_consumer_options co = {
        .brokers = tp_brokers(), .group_id = group, .read_committed = 1};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    rd_kafka_t *rk = kn_kafka_consumer_handle(c);
    int np = kn_kafka_partition_count(rk, topic, 5000);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np > 0 ? np : 1);
    int64_t sum = 0;
    *high = 0;
    for (int p = 0; p < np; p++) {
        rd_kafka_topic_partition_list_add(l, topic, p);
        int64_t lo, hi;
        if (kn_kafka_watermarks(rk, topic, p, &lo, &hi, 5000) == KN_OK) *high += hi;
    }
    if (rd_kafka_committed(rk, l, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < l->cnt; i++)
            if (l->elems[i].offset > 0) sum += l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    kn_kafka_consumer_destroy(c);
    return sum;
}

/* Examples in every committed shard of a topic. */
static long count_examples(const char *topic)
{
    char err[512], group[300];
    snprintf(group, sizeof(group), "bench-reader-%d", getpid());
    const char *extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {
        .brokers = tp_brokers(), .group_id = group, .read_committed = 1, .extra = extra};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    int np = kn_kafka_partition_count(kn_kafka_consumer_handle(c), topic, 5000);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    for (int p = 0; p < np; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    kn_kafka_consumer_assign(c, l, err, sizeof(err));
    rd_kafka_topic_partition_list_destroy(l);
    long n = 0;
    int eof = 0;
    double t0 = tp_now();
    while (eof < np && tp_now() - t0 < 60) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        if (!m) continue;
        kn_shard_view v;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            eof++;
        else if (!m->err && kn_shard_parse(m->payload, m->len, &v, err, sizeof(err)) == KN_OK)
            n += v.info.count;
        rd_kafka_message_destroy(m);
    }
    kn_kafka_consumer_destroy(c);
    return n;
}

#define NEAR_PAIRS 300

/* Pairs of texts differing by one character, side by side in the stream. */
static void produce_pairs(kn_kafka_producer *p, const char *topic)
{
    uint64_t r = 777;
    char t[256];
    for (int i = 0; i < NEAR_PAIRS; i++) {
        size_t n = (size_t)snprintf(t, sizeof(t), "planted pair %d:", i);
        for (int w = 0; w < 20; w++) {
            t[n++] = ' ';
            for (int c = 0; c < 5; c++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                t[n++] = (char)('a' + (r >> 33) % 26);
            }
        }
        produce(p, topic, "text", t, n, "benchlm", NULL);
        t[n - 1] = t[n - 1] == 'z' ? 'y' : 'z';
        produce(p, topic, "text", t, n, "benchlm", NULL);
    }
}

static long g_near;

/* DLQ records whose reason is duplicate_near. */
static long count_near(const char *topic)
{
    char err[512], group[300];
    snprintf(group, sizeof(group), "bench-dlq-%d", getpid());
    const char *extra[] = {"enable.partition.eof", "true", NULL};
    kn_kafka_consumer_options co = {
        .brokers = tp_brokers(), .group_id = group, .read_committed = 1, .extra = extra};
    kn_kafka_consumer *c = kn_kafka_consumer_new(&co, err, sizeof(err));
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    kn_kafka_consumer_assign(c, l, err, sizeof(err));
    rd_kafka_topic_partition_list_destroy(l);
    long n = 0;
    double t0 = tp_now();
    while (tp_now() - t0 < 60) {
        rd_kafka_message_t *m = kn_kafka_consumer_poll(c, 200);
        if (!m) continue;
        int eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        kn_record_info info;
        if (!m->err && kn_record_info_read(m, &info) == KN_OK &&
            strcmp(info.reason, "duplicate_near") == 0)
            n++;
        rd_kafka_message_destroy(m);
        if (eof) break;
    }
    kn_kafka_consumer_destroy(c);
    return n;
}

/* The service binary: this build's, or KILN_BENCH_PP_BIN. */
static void service_bin(char *bin, size_t sz)
{
    const char *e = getenv("KILN_BENCH_PP_BIN");
    if (e && *e)
        snprintf(bin, sz, "%s", e);
    else
        snprintf(bin, sz, "%s/preprocess/kiln-preprocess", KILN_BINARY_DIR);
}

/* Runs the service until the group has consumed `topic`; returns seconds. */
static double g_cpu; /* CPU seconds (user + system, all threads) of the last run's instances */

static double run_until_done(const char *cfgp, const char *inst, int ninst, const char *group,
                             const char *topic)
{
    char bin[1024], log[300], id[300];
    service_bin(bin, sizeof(bin));
    snprintf(log, sizeof(log), "%s.log", cfgp);
    double t0 = tp_now();
    pid_t pids[8];
    for (int k = 0; k < ninst; k++) {
        snprintf(id, sizeof(id), "%s%d", inst, k);
        pids[k] = fork();
        if (pids[k] == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) dup2(fd, 2);
            execl(bin, bin, "--config", cfgp, "--instance", id, (char *)NULL);
            _exit(127);
        }
    }
    int64_t high = 1, done = 0;
    while (tp_now() - t0 < 240) {
        done = committed_total(group, topic, &high);
        if (done == high) break;
        usleep(200000);
    }
    double dt = tp_now() - t0;
    for (int k = 0; k < ninst; k++)
        kill(pids[k], SIGTERM);
    g_cpu = 0;
    for (int k = 0; k < ninst; k++) {
        int st;
        struct rusage ru;
        if (wait4(pids[k], &st, 0, &ru) == pids[k])
            g_cpu += (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    }
    assert_int_equal(done, high);
    if (!getenv("KILN_BENCH_KEEP_LOG")) unlink(log);
    return dt;
}

#define FMNIST_TRAIN "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"

/* Image i's 784 pixels: Fashion-MNIST's when fm is open, else a pattern. */
static void bench_pixels(kn_idx *fm, int i, unsigned char *px)
{
    char e[256];
    if (fm && kn_idx_next(fm, px, e, sizeof(e)) == KN_OK) return;
    for (int k = 0; k < 28 * 28; k++)
        px[k] = (unsigned char)((k * 3 + i * 13 + (i >> 8)) & 255);
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* PNG decode alone of the n images the service gets: images per CPU-second,
 * the better of two passes. */
static double decode_alone(void *const *png, const size_t *len, int n)
{
    double best = 0;
    char e[256];
    for (int pass = 0; pass < 2; pass++) {
        double c0 = thread_cpu();
        for (int i = 0; i < n; i++) {
            kn_image img = {0};
            assert_int_equal(kn_image_decode(png[i], len[i], 0, &img, e, sizeof(e)), KN_OK);
            kn_image_free(&img);
        }
        double rate = n / (thread_cpu() - c0);
        if (rate > best) best = rate;
    }
    return best;
}

static void run_one(int ninst)
{
    char prefix[128], prefix_i[140], cfgp[256], err[512], tok[1024];
    snprintf(prefix, sizeof(prefix), "kiln-bench-pp-%ld-%d-n%d", (long)time(NULL), getpid(), ninst);
    snprintf(prefix_i, sizeof(prefix_i), "%s-i", prefix);
    snprintf(cfgp, sizeof(cfgp), "/tmp/%s.ini", prefix);
    snprintf(tok, sizeof(tok), "%s/.cache/tokenizer/r50k_base.tiktoken", KILN_SOURCE_DIR);
    if (access(tok, R_OK) != 0 || access("/usr/share/games/fortunes/computers", R_OK) != 0) {
        skip_because("needs %s (the tokenizer_cache test makes it) and the fortunes package", tok);
    }
    char t_text[200], t_img[200];
    kn_record_topic(t_text, sizeof(t_text), prefix, KN_RECORD_TOPIC_TEXT);
    kn_record_topic(t_img, sizeof(t_img), prefix_i, KN_RECORD_TOPIC_IMAGE);
    kn_kafka_topic_spec specs[2] = {{t_text, 6, 0, 0}, {t_img, 6, 0, 0}};
    assert_int_equal(kn_kafka_create_topics(tp_brokers(), specs, 2, 10000, err, sizeof(err)),
                     KN_OK);
    kn_kafka_producer_options po = {.brokers = tp_brokers(), .linger_ms = 20};
    kn_kafka_producer *p = kn_kafka_producer_new(&po, err, sizeof(err));
    assert_non_null(p);
    long nrec = 0;
    size_t bytes = produce_fortunes(p, t_text, text_copies(), &nrec);
    produce_pairs(p, t_text);
    const char *eimg = getenv("KILN_BENCH_PP_IMAGES");
    int images = !eimg || atoi(eimg) != 0;
    unsigned char pgm[28 * 28 + 32];
    char e[256];
    kn_idx *fm = kn_idx_open(FMNIST_TRAIN, e, sizeof(e));
    if (fm && (kn_idx_hdr(fm)->item_size != 28 * 28 || kn_idx_hdr(fm)->dims[0] < N_IMAGES)) {
        kn_idx_close(fm);
        fm = NULL;
    }
    static void *pngs[N_IMAGES];
    static size_t plens[N_IMAGES];
    for (int i = 0; images && i < N_IMAGES; i++) {
        int hl = snprintf((char *)pgm, 32, "P5\n28 28\n255\n");
        bench_pixels(fm, i, pgm + hl);
        char lab[4];
        snprintf(lab, sizeof(lab), "%d", i % 10);
#ifdef KILN_HAVE_SPNG
        /* PNG, as Fashion-MNIST's images arrive */
        spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
        spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
        struct spng_ihdr ih = {28, 28, 8, SPNG_COLOR_TYPE_GRAYSCALE, 0, 0, 0};
        spng_set_ihdr(ctx, &ih);
        assert_int_equal(
            spng_encode_image(ctx, pgm + hl, 28 * 28, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
        int pe = 0;
        pngs[i] = spng_get_png_buffer(ctx, &plens[i], &pe);
        spng_ctx_free(ctx);
        assert_non_null(pngs[i]);
#else
        pngs[i] = malloc((size_t)hl + 28 * 28);
        assert_non_null(pngs[i]);
        memcpy(pngs[i], pgm, (size_t)hl + 28 * 28);
        plens[i] = (size_t)hl + 28 * 28;
#endif
        produce(p, t_img, "image", pngs[i], plens[i], "benchimg", lab);
    }
    int real = fm != NULL;
    kn_idx_close(fm);
    assert_int_equal(kn_kafka_producer_flush(p, 60000), 0);
    kn_kafka_producer_destroy(p, 1000);
    if (images)
        print_message("preprocess images: decode alone of the same %d %s: %.0f per CPU-second\n",
                      N_IMAGES, real ? "Fashion-MNIST images" : "pattern images",
                      decode_alone(pngs, plens, N_IMAGES));
    for (int i = 0; images && i < N_IMAGES; i++)
        free(pngs[i]);

    FILE *f = fopen(cfgp, "w");
    assert_non_null(f);
    fprintf(f,
            "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
            "[preprocess]\nport = 0\nflush_ms = 2000\ntxn_max_records = 20000\n"
            "group = %s-text\ndlq_duplicates = true\n"
            "[dataset.benchlm]\nkind = lm\ntokenizer = %s\nblock_size = 1024\n"
            "shard_examples = 256\ndedup = near\neval_fraction = 0.05\n",
            tp_brokers(), prefix, prefix, tok);
    fclose(f);
    char group[200], inst[200];
    snprintf(group, sizeof(group), "%s-text", prefix);
    snprintf(inst, sizeof(inst), "%s-t", prefix);
    double dt_text = run_until_done(cfgp, inst, ninst, group, t_text);
    char out[300];
    long blocks = 0;
    snprintf(out, sizeof(out), "%s.train.benchlm", prefix);
    blocks += count_examples(out);
    snprintf(out, sizeof(out), "%s.eval.benchlm", prefix);
    blocks += count_examples(out);
    double tokens = (double)blocks * 1024.0; /* + tails under one block per split */
    snprintf(out, sizeof(out), "%s.dlq", prefix);
    long near = count_near(out);
    if (ninst == 1) g_near = near;
    print_message("preprocess text, %d instance(s): %ld records, %.2f MB, %ld blocks of 1025 "
                  "tokens in %.1f s (incl. start-up and state rebuild): %.2f MB/s, %.0f tokens/s; "
                  "near duplicates refused %ld (%d planted pairs side by side",
                  ninst, nrec, (double)bytes / 1e6, blocks, dt_text, (double)bytes / 1e6 / dt_text,
                  tokens / dt_text, near, NEAR_PAIRS);
    if (ninst > 1 && g_near > 0)
        print_message("; %ld fewer than 1 instance: pairs both kept)\n", g_near - near);
    else
        print_message(")\n");
    print_message("  CPU of the instance(s): %.2f s (user + system, every thread, start-up "
                  "included): %.2f MB and %.0f tokens per CPU-second\n",
                  g_cpu, (double)bytes / 1e6 / g_cpu, tokens / g_cpu);
    if (!images) {
        unlink(cfgp);
        return;
    }

    /* KILN_BENCH_PP_IMAGE_COMPRESSION: the image instance's preprocess.compression */
    const char *img_codec = getenv("KILN_BENCH_PP_IMAGE_COMPRESSION");
    if (img_codec && !*img_codec) img_codec = NULL;
    f = fopen(cfgp, "w");
    fprintf(f,
            "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
            "[preprocess]\nport = 0\nflush_ms = 2000\ntxn_max_records = 20000\n"
            "group = %s-img\n%s%s%s"
            "[dataset.benchimg]\nkind = image\nwidth = 28\nheight = 28\nchannels = 1\n"
            "labels = 0,1,2,3,4,5,6,7,8,9\nmean = 0.2860\nstd = 0.3530\ncrop_pad = 2\n"
            "hflip = true\nshard_examples = 512\neval_fraction = 0.1\n",
            tp_brokers(), prefix_i, prefix, img_codec ? "compression = " : "",
            img_codec ? img_codec : "", img_codec ? "\n" : "");
    fclose(f);
    snprintf(group, sizeof(group), "%s-img", prefix);
    snprintf(inst, sizeof(inst), "%s-i", prefix);
    double dt_img = run_until_done(cfgp, inst, ninst, group, t_img);
    print_message("preprocess images, %d instance(s): %d 28x28 %s (decode+convert+augment+"
                  "normalize+shard+Kafka txn) in %.1f s (incl. start-up): %.0f images/s\n",
                  ninst, N_IMAGES,
#ifdef KILN_HAVE_SPNG
                  "PNGs",
#else
                  "PGMs",
#endif
                  dt_img, N_IMAGES / dt_img);
    print_message("  CPU of the instance(s): %.2f s: %.0f images per CPU-second\n", g_cpu,
                  N_IMAGES / g_cpu);
    unlink(cfgp);
}

/* The fixed cost: CPU seconds of one instance started on empty topics (the
 * text recipe: rank file, topic checks, state rebuild, group join) and
 * stopped 3 s later, to be set against the runs' CPU. */
static void fixed_cost(void)
{
    char prefix[128], cfgp[256], tok[1024], group[200], inst[200], err[512], t_text[200];
    snprintf(prefix, sizeof(prefix), "kiln-bench-pp-%ld-%d-idle", (long)time(NULL), getpid());
    snprintf(cfgp, sizeof(cfgp), "/tmp/%s.ini", prefix);
    snprintf(tok, sizeof(tok), "%s/.cache/tokenizer/r50k_base.tiktoken", KILN_SOURCE_DIR);
    kn_record_topic(t_text, sizeof(t_text), prefix, KN_RECORD_TOPIC_TEXT);
    kn_kafka_topic_spec spec = {t_text, 6, 0, 0};
    assert_int_equal(kn_kafka_create_topics(tp_brokers(), &spec, 1, 10000, err, sizeof(err)),
                     KN_OK);
    FILE *f = fopen(cfgp, "w");
    assert_non_null(f);
    fprintf(f,
            "[kafka]\nbrokers = %s\ntopic_prefix = %s\n"
            "[preprocess]\nport = 0\ngroup = %s-text\n"
            "[dataset.benchlm]\nkind = lm\ntokenizer = %s\nblock_size = 1024\n",
            tp_brokers(), prefix, prefix, tok);
    fclose(f);
    snprintf(group, sizeof(group), "%s-text", prefix);
    snprintf(inst, sizeof(inst), "%s-t", prefix);
    run_until_done(cfgp, inst, 1, group, t_text); /* nothing to do: returns at once */
    char bin[1024];
    service_bin(bin, sizeof(bin));
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, 2);
        execl(bin, bin, "--config", cfgp, "--instance", inst, (char *)NULL);
        _exit(127);
    }
    sleep(3);
    kill(pid, SIGTERM);
    int st;
    struct rusage ru;
    double cpu = 0;
    if (wait4(pid, &st, 0, &ru) == pid)
        cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              ru.ru_stime.tv_usec / 1e6;
    print_message("preprocess fixed cost: one text instance started on empty topics and stopped "
                  "after 3 s: %.2f CPU s (start-up, state rebuild, group join, idle polls)\n",
                  cpu);
    unlink(cfgp);
}

static void bench(void **state)
{
    (void)state;
    fixed_cost();
    const char *list = getenv("KILN_BENCH_PP_INSTANCES");
    for (const char *q = list && *list ? list : "1"; *q;) {
        int n = atoi(q);
        if (n >= 1 && n <= 8) run_one(n);
        while (*q && *q != ',')
            q++;
        if (*q == ',') q++;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(bench)};
    return skip_run_group_tests(tests, NULL, NULL);
}
