/* raw_producer.c: the baseline for the ingest benchmark: a plain librdkafka
 * producer loop with the settings kiln's producer uses (idempotence, zstd,
 * linger 5 ms, a delivery-report callback), sending `count` values of `size`
 * bytes (each made unique by a counter, keyed like kiln: 64 hex bytes).
 * With "headers", each record also carries nine headers of a kiln raw
 * record (same names, similar sizes), to separate their cost from kiln's;
 * "image-headers" sends the ten an imported Fashion-MNIST record carries
 * (the nine and split-by, with the same values and sizes as kiln's).
 * With VALUES, record i is bytes [i*SIZE, (i+1)*SIZE) of that file (the very
 * bytes kiln sends, so compression costs the same); otherwise a pattern.
 * Prints one line: records, bytes, seconds, records/s, MB/s, and the CPU
 * seconds of the process (user + system, every thread, start-up included):
 * on a shared machine the fair unit to compare with kiln-ingest's.
 *
 *   raw_producer BROKERS TOPIC COUNT SIZE [headers|image-headers|plain] [VALUES] */
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static long delivered, failed;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        failed++;
    else
        delivered++;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: raw_producer BROKERS TOPIC COUNT SIZE "
                        "[headers|image-headers|plain] [VALUES]\n");
        return 2;
    }
    const char *brokers = argv[1], *topic = argv[2];
    long count = atol(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    int image_headers = argc >= 6 && strcmp(argv[5], "image-headers") == 0;
    int with_headers = image_headers || (argc >= 6 && strcmp(argv[5], "headers") == 0);
    int nh = image_headers ? 10 : 9;
    char *values = NULL;
    if (argc == 7) {
        FILE *f = fopen(argv[6], "rb");
        values = malloc((size_t)count * size);
        if (!f || fread(values, size, (size_t)count, f) != (size_t)count) {
            fprintf(stderr, "%s: cannot read %ld values of %zu bytes\n", argv[6], count, size);
            return 1;
        }
        fclose(f);
    }
    static const char *const hk[] = {"record-version", "kind",    "content-type", "source",
                                     "origin",         "dataset", "label",        "split",
                                     "ingest-time",    "split-by"};
    static const char *const hv[] = {
        "1",
        "image",
        "image/x-portable-graymap",
        "import",
        "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz#12345",
        "fashion-mnist",
        "7",
        "train",
        "1700000000000",
        "import"};
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *kv[] = {"bootstrap.servers",
                        brokers,
                        "enable.idempotence",
                        "true",
                        "linger.ms",
                        "5",
                        "compression.codec",
                        "zstd",
                        "message.max.bytes",
                        "16777216",
                        "queue.buffering.max.kbytes",
                        "262144",
                        "batch.size",
                        "1000000",
                        NULL};
    for (int i = 0; kv[i]; i += 2)
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, sizeof(err)) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    char *value = malloc(size + 32);
    for (size_t i = 0; i < size; i++)
        value[i] = (char)('a' + (i * 7) % 26);
    char key[65];
    double t0 = now();
    for (long i = 0; i < count; i++) {
        const char *v = value;
        if (values) {
            v = values + (size_t)i * size;
        } else {
            int n = snprintf(value, size + 1, "%ld", i); /* unique, like distinct records */
            if ((size_t)n < size) value[n] = ' ';
        }
        snprintf(key, sizeof(key), "%064lx", i);
        for (;;) {
            rd_kafka_headers_t *h = NULL;
            if (with_headers) {
                h = rd_kafka_headers_new((size_t)nh);
                for (int k = 0; k < nh; k++)
                    rd_kafka_header_add(h, hk[k], -1, hv[k], -1);
            }
            rd_kafka_resp_err_t e = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, 64),
                RD_KAFKA_V_VALUE((void *)v, size), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR) break;
            if (h) rd_kafka_headers_destroy(h);
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
                return 1;
            }
            rd_kafka_poll(rk, 10); /* queue full: serve delivery reports, retry */
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 60000);
    double secs = now() - t0;
    int left = rd_kafka_outq_len(rk);
    rd_kafka_destroy(rk);
    free(value);
    free(values);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("%s records=%ld bytes=%ld seconds=%.3f records_per_s=%.0f MB_per_s=%.2f cpu_s=%.3f "
           "records_per_cpu_s=%.0f failed=%ld unflushed=%d\n",
           with_headers ? "raw+headers" : "raw", delivered, (long)(delivered * (long)size), secs,
           delivered / secs, delivered * (double)size / secs / 1e6, cpu, delivered / cpu, failed,
           left);
    return failed || left ? 1 : 0;
}
