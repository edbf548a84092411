/* kafka.c: librdkafka wrapper. The producer owns a poll thread that serves
 * delivery reports continuously, also when idle, as librdkafka requires;
 * a bulk producer (poll_on_produce) serves them itself at each produce. */
#include "stream/kafka.h"
#include "core/kn.h"
#include "core/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct kn_kafka_producer {
    rd_kafka_t *rk;
    kn_kafka_dr_cb dr_cb;
    void *dr_opaque;
    int transactional;
    pthread_t poller;
    atomic_int stop;
    int poller_started;
    int poll_on_produce;
    rd_kafka_conf_t *conf; /* transactional only: a copy, to re-create rk */
    unsigned recreated;    /* times rk was re-created after a fatal error */
    atomic_int last_err;   /* rd_kafka_resp_err_t of the last refused produce */
};

struct kn_kafka_consumer {
    rd_kafka_t *rk;
    void (*rebalance_cb)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque);
    void *opaque;
    rd_kafka_conf_t *conf; /* a copy of the configuration, to re-create rk */
    rd_kafka_topic_partition_list_t *subscription; /* NULL: manual assignment */
    unsigned recreated; /* times rk was re-created after a fatal error */
};

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errbuf,
                    size_t errsz)
{
    char e[256];
    if (rd_kafka_conf_set(conf, k, v, e, sizeof(e)) != RD_KAFKA_CONF_OK)
        return kn_seterr(errbuf, errsz, KN_EINVAL, "kafka config %s=%s: %s", k, v, e);
    return KN_OK;
}

static int conf_set_extra(rd_kafka_conf_t *conf, const char *const *extra, char *errbuf,
                          size_t errsz)
{
    for (; extra && extra[0] && extra[1]; extra += 2)
        if (conf_set(conf, extra[0], extra[1], errbuf, errsz) != KN_OK) return KN_EINVAL;
    return KN_OK;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    kn_log(level <= 3 ? KN_LOG_ERROR : level <= 4 ? KN_LOG_WARN : KN_LOG_DEBUG,
           "librdkafka %s: %s", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    /* Most errors are transient and librdkafka recovers by itself; fatal ones
     * (idempotence violated) are raised by the calls that follow. */
    kn_log_warn("kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    kn_kafka_producer *p = opaque;
    if (p->dr_cb) p->dr_cb(p->dr_opaque, m->_private, m->err, m->partition, m->offset);
}

static void *poll_loop(void *arg)
{
    kn_kafka_producer *p = arg;
    while (!atomic_load(&p->stop)) rd_kafka_poll(p->rk, 100);
    return NULL;
}

kn_kafka_producer *kn_kafka_producer_new(const kn_kafka_producer_options *opts, char *errbuf,
                                         size_t errsz)
{
    kn_kafka_producer *p = calloc(1, sizeof(*p));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char linger[32], e[512];
    if (!p || !conf) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "kafka producer: out of memory");
        goto fail;
    }
    p->dr_cb = opts->dr_cb;
    p->dr_opaque = opts->dr_opaque;
    p->transactional = opts->transactional_id != NULL;
    snprintf(linger, sizeof(linger), "%d", opts->linger_ms > 0 ? opts->linger_ms : 5);
    if (conf_set(conf, "bootstrap.servers", opts->brokers, errbuf, errsz) ||
        conf_set(conf, "client.id", opts->client_id ? opts->client_id : "kiln", errbuf, errsz) ||
        conf_set(conf, "enable.idempotence", "true", errbuf, errsz) ||
        conf_set(conf, "linger.ms", linger, errbuf, errsz) ||
        conf_set(conf, "compression.codec", opts->compression ? opts->compression : "zstd",
                 errbuf, errsz) ||
        conf_set(conf, "message.max.bytes", KN_KAFKA_MAX_MESSAGE_BYTES_STR, errbuf, errsz) ||
        (opts->transactional_id &&
         conf_set(conf, "transactional.id", opts->transactional_id, errbuf, errsz)) ||
        conf_set_extra(conf, opts->extra, errbuf, errsz))
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    if (p->transactional && !(p->conf = rd_kafka_conf_dup(conf))) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "kafka producer: out of memory");
        goto fail;
    }
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!p->rk) {
        kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka producer: %s", e);
        goto fail;
    }
    conf = NULL; /* now owned by rk */
    if (p->transactional) {
        rd_kafka_error_t *err = rd_kafka_init_transactions(p->rk, 60000);
        if (err) {
            kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka init_transactions: %s",
                      rd_kafka_error_string(err));
            rd_kafka_error_destroy(err);
            goto fail;
        }
    }
    p->poll_on_produce = opts->poll_on_produce;
    if (p->poll_on_produce) return p;
    if (pthread_create(&p->poller, NULL, poll_loop, p) != 0) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "kafka producer: cannot start the poll thread");
        goto fail;
    }
    p->poller_started = 1;
    return p;
fail:
    if (conf) rd_kafka_conf_destroy(conf);
    if (p && p->rk) rd_kafka_destroy(p->rk);
    if (p && p->conf) rd_kafka_conf_destroy(p->conf);
    free(p);
    return NULL;
}

/* A fatal error leaves a transactional producer dead for good. The one a
 * service meets without a second instance is a fence by the broker itself:
 * a transaction left open longer than transaction.timeout.ms (the broker
 * paused or restarting while it was open, its clock running on) is aborted
 * by the coordinator, which bumps the producer's epoch, and the next
 * request of the old epoch (produce, AddOffsetsToTxn, EndTxn) comes back
 * INVALID_PRODUCER_EPOCH / PRODUCER_FENCED: librdkafka's _FENCED, fatal.
 * What librdkafka asks for then is a new producer; init_transactions under
 * the same transactional.id takes the next epoch (and aborts whatever was
 * still open). The poll thread is stopped around the swap. */
int kn_kafka_producer_recreate(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz)
{
    char e[512], why[512] = "";
    if (!p->transactional || !p->conf)
        return kn_seterr(errbuf, errsz, KN_EINVAL,
                         "kafka producer: only a transactional producer is re-created");
    rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(p->rk, why, sizeof(why));
    kn_log_warn("kafka producer: fatal error %s (%s): re-creating the transactional producer",
                ferr ? rd_kafka_err2name(ferr) : "(none)", why);
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(p->conf);
    if (!conf) return kn_seterr(errbuf, errsz, KN_ENOMEM, "kafka producer: out of memory");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka producer: cannot re-create: %s", e);
    }
    if (p->poller_started) {
        atomic_store(&p->stop, 1);
        pthread_join(p->poller, NULL);
        p->poller_started = 0;
        atomic_store(&p->stop, 0);
    }
    /* what the dead handle still holds belonged to the fenced transaction:
     * aborted by the broker, dropped here (reported to dr_cb as purged) */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(p->rk, 0);
    rd_kafka_destroy(p->rk);
    p->rk = rk;
    int rc = KN_OK;
    rd_kafka_error_t *err = rd_kafka_init_transactions(p->rk, timeout_ms);
    if (err) {
        rc = kn_seterr(errbuf, errsz, rd_kafka_error_is_retriable(err) ? KN_ETIMEDOUT : KN_EKAFKA,
                       "kafka init_transactions (re-created producer): %s",
                       rd_kafka_error_string(err));
        rd_kafka_error_destroy(err);
    }
    if (!p->poll_on_produce && pthread_create(&p->poller, NULL, poll_loop, p) == 0)
        p->poller_started = 1;
    else if (!p->poll_on_produce && rc == KN_OK)
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "kafka producer: cannot start the poll thread");
    p->recreated++;
    return rc;
}

/* Retries an init_transactions that timed out on a re-created producer. */
int kn_kafka_producer_init_txn(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz)
{
    rd_kafka_error_t *err = rd_kafka_init_transactions(p->rk, timeout_ms);
    if (!err) return KN_OK;
    int rc = kn_seterr(errbuf, errsz, rd_kafka_error_is_retriable(err) ? KN_ETIMEDOUT : KN_EKAFKA,
                       "kafka init_transactions: %s", rd_kafka_error_string(err));
    rd_kafka_error_destroy(err);
    return rc;
}

int kn_kafka_producer_txn_refused(kn_kafka_producer *p)
{
    rd_kafka_resp_err_t err = (rd_kafka_resp_err_t)atomic_exchange(&p->last_err, 0);
    return p->transactional &&
           (err == RD_KAFKA_RESP_ERR__STATE || err == RD_KAFKA_RESP_ERR__FATAL ||
            rd_kafka_fatal_error(p->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR);
}

unsigned kn_kafka_producer_recreated(const kn_kafka_producer *p)
{
    return p->recreated;
}

int kn_kafka_producer_fatal(kn_kafka_producer *p, char *errbuf, size_t errsz)
{
    char why[512];
    rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(p->rk, why, sizeof(why));
    if (!ferr) return 0;
    kn_seterr(errbuf, errsz, KN_EKAFKA, "%s: %s", rd_kafka_err2name(ferr), why);
    return 1;
}

int kn_kafka_produce(kn_kafka_producer *p, const char *topic, int32_t partition, const void *key,
                     size_t key_len, const void *value, size_t value_len,
                     const kn_kafka_header *headers, size_t nheaders, void *msg_opaque)
{
    struct timespec t0 = {0, 0}, now;
    for (;;) {
        rd_kafka_headers_t *hdrs = NULL;
        if (nheaders) {
            hdrs = rd_kafka_headers_new(nheaders);
            for (size_t i = 0; i < nheaders; i++)
                rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                    (ssize_t)headers[i].len);
        }
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) { /* headers now owned by rk */
            if (p->poll_on_produce) rd_kafka_poll(p->rk, 0);
            return KN_OK;
        }
        if (hdrs) rd_kafka_headers_destroy(hdrs);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            atomic_store(&p->last_err, (int)err);
            kn_log_error("kafka produce to %s: %s", topic, rd_kafka_err2str(err));
            return KN_EKAFKA;
        }
        /* the clock is read only once the queue is full: not per record */
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (t0.tv_sec == 0 && t0.tv_nsec == 0) t0 = now;
        if (now.tv_sec - t0.tv_sec > 30) return KN_ETIMEDOUT;
        rd_kafka_poll(p->rk, 50); /* let delivery reports drain the queue */
    }
}

int kn_kafka_producer_flush(kn_kafka_producer *p, int timeout_ms)
{
    rd_kafka_flush(p->rk, timeout_ms);
    return rd_kafka_outq_len(p->rk);
}

void kn_kafka_producer_poll(kn_kafka_producer *p, int timeout_ms)
{
    rd_kafka_poll(p->rk, timeout_ms);
}

int kn_kafka_producer_outlen(kn_kafka_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

rd_kafka_t *kn_kafka_producer_handle(kn_kafka_producer *p)
{
    return p->rk;
}

void kn_kafka_producer_destroy(kn_kafka_producer *p, int timeout_ms)
{
    if (!p) return;
    int left = kn_kafka_producer_flush(p, timeout_ms);
    if (left > 0)
        kn_log_error("kafka producer: %d message(s) still queued after %d ms; they are lost "
                     "unless the caller re-sends them",
                     left, timeout_ms);
    if (p->poller_started) {
        atomic_store(&p->stop, 1);
        pthread_join(p->poller, NULL);
    }
    rd_kafka_destroy(p->rk);
    if (p->conf) rd_kafka_conf_destroy(p->conf);
    free(p);
}

static int txn_result(rd_kafka_error_t *err, const char *what, char *errbuf, size_t errsz)
{
    if (!err) return KN_OK;
    int rc = rd_kafka_error_is_retriable(err)       ? KN_ETIMEDOUT
             : rd_kafka_error_txn_requires_abort(err) ? KN_ECONFLICT
                                                      : KN_EKAFKA;
    kn_seterr(errbuf, errsz, rc, "kafka %s: %s", what, rd_kafka_error_string(err));
    rd_kafka_error_destroy(err);
    return rc;
}

int kn_kafka_txn_begin(kn_kafka_producer *p, char *errbuf, size_t errsz)
{
    return txn_result(rd_kafka_begin_transaction(p->rk), "begin_transaction", errbuf, errsz);
}

int kn_kafka_txn_send_offsets(kn_kafka_producer *p, kn_kafka_consumer *c,
                              const rd_kafka_topic_partition_list_t *offsets, char *errbuf,
                              size_t errsz)
{
    rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(c->rk);
    rd_kafka_error_t *err = rd_kafka_send_offsets_to_transaction(p->rk, offsets, md, 30000);
    rd_kafka_consumer_group_metadata_destroy(md);
    return txn_result(err, "send_offsets_to_transaction", errbuf, errsz);
}

int kn_kafka_txn_commit(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz)
{
    return txn_result(rd_kafka_commit_transaction(p->rk, timeout_ms), "commit_transaction",
                      errbuf, errsz);
}

int kn_kafka_txn_abort(kn_kafka_producer *p, int timeout_ms, char *errbuf, size_t errsz)
{
    return txn_result(rd_kafka_abort_transaction(p->rk, timeout_ms), "abort_transaction",
                      errbuf, errsz);
}

/* --- consumer --- */

kn_kafka_consumer *kn_kafka_consumer_new(const kn_kafka_consumer_options *opts, char *errbuf,
                                         size_t errsz)
{
    kn_kafka_consumer *c = calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[512], session[16], heartbeat[16];
    snprintf(session, sizeof(session), "%d", KN_KAFKA_SESSION_MS);
    snprintf(heartbeat, sizeof(heartbeat), "%d", KN_KAFKA_HEARTBEAT_MS);
    if (!c || !conf) {
        kn_seterr(errbuf, errsz, KN_ENOMEM, "kafka consumer: out of memory");
        goto fail;
    }
    if (!opts->group_id) {
        kn_seterr(errbuf, errsz, KN_EINVAL, "kafka consumer: a group id is required");
        goto fail;
    }
    if (conf_set(conf, "bootstrap.servers", opts->brokers, errbuf, errsz) ||
        conf_set(conf, "group.id", opts->group_id, errbuf, errsz) ||
        conf_set(conf, "client.id", opts->client_id ? opts->client_id : "kiln", errbuf, errsz) ||
        conf_set(conf, "enable.auto.commit", "false", errbuf, errsz) ||
        conf_set(conf, "enable.auto.offset.store", "false", errbuf, errsz) ||
        conf_set(conf, "isolation.level", opts->read_committed ? "read_committed" : "read_uncommitted",
                 errbuf, errsz) ||
        conf_set(conf, "auto.offset.reset",
                 opts->auto_offset_reset ? opts->auto_offset_reset : "earliest", errbuf, errsz) ||
        conf_set(conf, "fetch.message.max.bytes", "16777216", errbuf, errsz) ||
        conf_set(conf, "session.timeout.ms", session, errbuf, errsz) ||
        conf_set(conf, "heartbeat.interval.ms", heartbeat, errbuf, errsz) ||
        (opts->instance_id && opts->instance_id[0] &&
         conf_set(conf, "group.instance.id", opts->instance_id, errbuf, errsz)) ||
        conf_set_extra(conf, opts->extra, errbuf, errsz))
        goto fail;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    if (opts->rebalance_cb) {
        rd_kafka_conf_set_rebalance_cb(conf, opts->rebalance_cb);
        rd_kafka_conf_set_opaque(conf, opts->opaque);
        c->rebalance_cb = opts->rebalance_cb;
        c->opaque = opts->opaque;
    }
    c->conf = rd_kafka_conf_dup(conf);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e));
    if (!c->rk) {
        kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka consumer: %s", e);
        goto fail;
    }
    conf = NULL;
    rd_kafka_poll_set_consumer(c->rk);
    return c;
fail:
    if (conf) rd_kafka_conf_destroy(conf);
    if (c && c->conf) rd_kafka_conf_destroy(c->conf);
    free(c);
    return NULL;
}

int kn_kafka_consumer_subscribe(kn_kafka_consumer *c, const char *const *topics, size_t n,
                                char *errbuf, size_t errsz)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
    if (err) {
        rd_kafka_topic_partition_list_destroy(l);
        return kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka subscribe: %s", rd_kafka_err2str(err));
    }
    if (c->subscription) rd_kafka_topic_partition_list_destroy(c->subscription);
    c->subscription = l; /* kept to subscribe again after a re-creation */
    return KN_OK;
}

int kn_kafka_consumer_assign(kn_kafka_consumer *c, const rd_kafka_topic_partition_list_t *parts,
                             char *errbuf, size_t errsz)
{
    rd_kafka_resp_err_t err = rd_kafka_assign(c->rk, parts);
    if (err) return kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka assign: %s", rd_kafka_err2str(err));
    return KN_OK;
}

/* A fatal consumer error leaves rk dead for good: it fetches nothing and
 * rejoins nothing. The one kiln meets is a static member fenced by itself
 * (FENCED_INSTANCE_ID): the broker stalls (paused, overloaded) for longer
 * than the session, librdkafka times the session out locally and rejoins
 * under the same group.instance.id, and a request still in flight under the
 * old member id is then refused as fenced. librdkafka's answer is a new
 * consumer; a group member does that here, in place: the service's
 * rebalance callback sees its partitions revoked (lost) now and assigned
 * again after the new member joins, from the committed offsets, as after
 * any rebalance. Manually assigned consumers have no group and keep the
 * error for their caller. */
static int consumer_recreate(kn_kafka_consumer *c)
{
    char why[512], e[512];
    rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(c->rk, why, sizeof(why));
    kn_log_warn("kafka consumer: fatal error %s (%s): re-creating the consumer and rejoining "
                "the group",
                rd_kafka_err2name(ferr), why);
    /* the new handle first: should it fail, the old one (and its error)
     * stays for the caller */
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(c->conf);
    rd_kafka_t *rk = conf ? rd_kafka_new(RD_KAFKA_CONSUMER, conf, e, sizeof(e)) : NULL;
    if (!rk) {
        if (conf) rd_kafka_conf_destroy(conf);
        kn_log_error("kafka consumer: cannot re-create: %s", conf ? e : "out of memory");
        return KN_EKAFKA;
    }
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(c->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a && a->cnt > 0) {
        if (c->rebalance_cb)
            c->rebalance_cb(c->rk, RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, a, c->opaque);
        else
            rd_kafka_assign(c->rk, NULL);
    }
    if (a) rd_kafka_topic_partition_list_destroy(a);
    rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    c->rk = rk;
    rd_kafka_poll_set_consumer(c->rk);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, c->subscription);
    if (err) /* only on bad arguments, which the first subscribe would have had */
        kn_log_error("kafka consumer: re-created, but subscribe failed: %s",
                     rd_kafka_err2str(err));
    c->recreated++;
    return KN_OK;
}

rd_kafka_message_t *kn_kafka_consumer_poll(kn_kafka_consumer *c, int timeout_ms)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (m && m->err == RD_KAFKA_RESP_ERR__FATAL && c->subscription && c->conf) {
        /* the message refers to the handle: gone before the handle goes */
        rd_kafka_message_destroy(m);
        m = NULL;
        if (consumer_recreate(c) != KN_OK) {
            /* the old handle is kept: tell the caller as librdkafka would */
            return rd_kafka_consumer_poll(c->rk, 0);
        }
    }
    return m;
}

unsigned kn_kafka_consumer_recreated(const kn_kafka_consumer *c)
{
    return c->recreated;
}

int kn_kafka_consumer_commit(kn_kafka_consumer *c, const rd_kafka_topic_partition_list_t *offsets,
                             char *errbuf, size_t errsz)
{
    rd_kafka_resp_err_t err = rd_kafka_commit(c->rk, offsets, 0);
    if (err) return kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka commit: %s", rd_kafka_err2str(err));
    return KN_OK;
}

rd_kafka_t *kn_kafka_consumer_handle(kn_kafka_consumer *c)
{
    return c->rk;
}

void kn_kafka_consumer_destroy(kn_kafka_consumer *c)
{
    if (!c) return;
    if (c->conf) rd_kafka_conf_destroy(c->conf);
    if (c->subscription) rd_kafka_topic_partition_list_destroy(c->subscription);
    /* Close through a queue so the wait is ours to bound: rd_kafka_consumer_close
     * waits for the group coordinator, forever when the broker is gone. */
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_error_t *err = q ? rd_kafka_consumer_close_queue(c->rk, q) : NULL;
    int closed = 0;
    if (q && !err) {
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            /* the final revoke comes as an event here: handed to the
             * service's rebalance callback as rd_kafka_consumer_close would,
             * else unassigned as librdkafka's default handler does */
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                rd_kafka_resp_err_t rerr = rd_kafka_event_error(ev);
                rd_kafka_topic_partition_list_t *parts = rd_kafka_event_topic_partition_list(ev);
                if (c->rebalance_cb)
                    c->rebalance_cb(c->rk, rerr, parts, c->opaque);
                else if (rerr == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                    rd_kafka_assign(c->rk, parts);
                else
                    rd_kafka_assign(c->rk, NULL);
            }
            if (ev) rd_kafka_event_destroy(ev);
            if (rd_kafka_consumer_closed(c->rk)) {
                closed = 1;
                break;
            }
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 >
                KN_KAFKA_CLOSE_MS)
                break;
        }
    }
    if (err) rd_kafka_error_destroy(err);
    if (q) rd_kafka_queue_destroy(q);
    if (!closed)
        kn_log_warn("kafka consumer: not closed within %d ms (broker unreachable?): leaving "
                    "without saying goodbye; the group notices at session timeout",
                    KN_KAFKA_CLOSE_MS);
    rd_kafka_destroy_flags(c->rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    free(c);
}

static int transient_offsets_error(rd_kafka_resp_err_t err);

int kn_kafka_partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms)
{
    /* A topic created a moment ago may not be in the broker's metadata yet
     * (or have no leader): asked again until timeout_ms is spent. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        const struct rd_kafka_metadata *md = NULL;
        if (!rkt) return KN_EKAFKA;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
        rd_kafka_topic_destroy(rkt);
        if (err) return KN_EKAFKA;
        int n = KN_ENOTFOUND;
        rd_kafka_resp_err_t terr = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_NO_ERROR;
        if (md->topic_cnt == 1 && terr == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
        if (n > 0 || !transient_offsets_error(terr)) return n;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double spent_ms = (double)(now.tv_sec - t0.tv_sec) * 1e3 +
                          (double)(now.tv_nsec - t0.tv_nsec) / 1e6;
        if (spent_ms + 200 > timeout_ms) return n;
        struct timespec nap = {0, 200 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}

/* Errors a fresh client or a just-created topic can see for a moment: the
 * partition's leader is not known yet, or the broker's metadata lags. */
static int transient_offsets_error(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__WAIT_COORD:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
        return 1;
    default:
        return 0;
    }
}

int kn_kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t *low,
                        int64_t *high, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, end = now + timeout_ms;
    for (;;) {
        int64_t lo = -1, hi = -1;
        int left = (int)(end - now);
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi,
                                                                   left > 100 ? left : 100);
        if (!err && lo >= 0 && hi >= lo) {
            *low = lo;
            *high = hi;
            return KN_OK;
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if ((err && !transient_offsets_error(err)) || now + 100 >= end) {
            kn_log_debug("watermarks %s[%d]: %s", topic, (int)partition,
                         err ? rd_kafka_err2str(err) : "no offsets in the answer");
            return KN_EKAFKA;
        }
        struct timespec pause = {0, 100 * 1000000L};
        nanosleep(&pause, NULL);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
}

int kn_kafka_header_get(const rd_kafka_message_t *m, const char *name, const void **value,
                        size_t *len)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) return KN_ENOTFOUND;
    return rd_kafka_header_get_last(hdrs, name, value, len) == RD_KAFKA_RESP_ERR_NO_ERROR
               ? KN_OK
               : KN_ENOTFOUND;
}

/* --- admin --- */

int kn_kafka_probe(const char *brokers, int timeout_ms, char *errbuf, size_t errsz)
{
    char e[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    int rc = conf_set(conf, "bootstrap.servers", brokers, errbuf, errsz);
    if (rc == KN_OK) rc = conf_set(conf, "log_level", "0", errbuf, errsz);
    if (rc != KN_OK) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka: %s", e);
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0) rc = KN_OK;
    else
        rc = kn_seterr(errbuf, errsz, KN_EKAFKA, "no broker answers at %s (%s)", brokers,
                       err ? rd_kafka_err2str(err) : "no brokers in the metadata");
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}

int kn_kafka_wait_broker(const char *brokers, void (*waiting)(void *ctx, const char *why),
                         void *ctx, int (*give_up)(void))
{
    char e[512];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int n = 0;; n++) {
        if (kn_kafka_probe(brokers, 2000, e, sizeof(e)) == KN_OK) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (n) kn_log_info("Kafka at %s answers, after %ld s: going on", brokers,
                               (long)(t1.tv_sec - t0.tv_sec));
            return KN_OK;
        }
        if (n == 0)
            kn_log_warn("waiting for Kafka: %s; not ready until it answers (trying every second)",
                        e);
        if (waiting) waiting(ctx, e);
        for (int i = 0; i < 10; i++) {
            if (give_up && give_up()) return KN_ETIMEDOUT;
            nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
    }
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Marks in missing[] the specs whose topic the cluster does not list (all of
 * them when the metadata cannot be read); returns how many. */
static size_t missing_topics(rd_kafka_t *rk, const kn_kafka_topic_spec *specs, size_t n,
                             int timeout_ms, unsigned char *missing)
{
    const struct rd_kafka_metadata *md = NULL;
    size_t left = n;
    memset(missing, 1, n);
    if (rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) return n;
    for (size_t i = 0; i < n; i++)
        for (int t = 0; t < md->topic_cnt; t++)
            if (!md->topics[t].err && md->topics[t].partition_cnt > 0 &&
                strcmp(md->topics[t].topic, specs[i].name) == 0) {
                missing[i] = 0;
                left--;
                break;
            }
    rd_kafka_metadata_destroy(md);
    return left;
}

/* One CreateTopics request for the specs marked in missing[]: KN_OK,
 * KN_ETIMEDOUT (no answer in wait_ms) or another error. */
static int create_missing(rd_kafka_t *rk, const kn_kafka_topic_spec *specs, size_t n,
                          const unsigned char *missing, int wait_ms, char *errbuf, size_t errsz)
{
    int rc = KN_OK;
    char e[512];
    size_t k = 0;
    rd_kafka_NewTopic_t **topics = calloc(n ? n : 1, sizeof(*topics));
    rd_kafka_AdminOptions_t *aopts = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    if (!topics) return kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!missing[i]) continue;
        /* replication factor -1: the broker's default.replication.factor, so
         * the same code makes 1 copy on one node and 3 on a cluster (with its
         * min.insync.replicas; deploy/stack, docs/cluster.md) */
        topics[k] = rd_kafka_NewTopic_new(specs[i].name, specs[i].partitions, -1, e, sizeof(e));
        if (!topics[k]) {
            rc = kn_seterr(errbuf, errsz, KN_EINVAL, "topic %s: %s", specs[i].name, e);
            goto out;
        }
        if (specs[i].compacted)
            rd_kafka_NewTopic_set_config(topics[k], "cleanup.policy", "compact");
        if (specs[i].retention_ms) {
            char v[32];
            snprintf(v, sizeof(v), "%lld", (long long)specs[i].retention_ms);
            rd_kafka_NewTopic_set_config(topics[k], "retention.ms", v);
        }
        k++;
    }
    aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(aopts, wait_ms, e, sizeof(e));
    rd_kafka_AdminOptions_set_operation_timeout(aopts, wait_ms, e, sizeof(e));
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, topics, k, aopts, q);
    ev = rd_kafka_queue_poll(q, wait_ms + 2000);
    if (!ev) {
        rc = kn_seterr(errbuf, errsz, KN_ETIMEDOUT, "kafka create topics: no answer in %d ms",
                       wait_ms);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        rc = kn_seterr(errbuf, errsz,
                       rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TIMED_OUT ? KN_ETIMEDOUT
                                                                                 : KN_EKAFKA,
                       "kafka create topics: %s", rd_kafka_event_error_string(ev));
        goto out;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
        if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            rc = kn_seterr(errbuf, errsz,
                           err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT ? KN_ETIMEDOUT : KN_EKAFKA,
                           "create topic %s: %s", rd_kafka_topic_result_name(res[i]),
                           rd_kafka_topic_result_error_string(res[i]));
            goto out;
        }
    }
out:
    if (ev) rd_kafka_event_destroy(ev);
    if (q) rd_kafka_queue_destroy(q);
    if (aopts) rd_kafka_AdminOptions_destroy(aopts);
    for (size_t i = 0; i < k; i++)
        rd_kafka_NewTopic_destroy(topics[i]);
    free(topics);
    return rc;
}

/* Topics that exist are not asked for again: on a cluster that just lost a
 * node, the admin request may wait on a controller that is gone while the
 * metadata (any live broker answers it) already lists every topic. A request
 * without an answer is retried, with what is missing then, until timeout_ms. */
int kn_kafka_create_topics(const char *brokers, const kn_kafka_topic_spec *specs, size_t n,
                           int timeout_ms, char *errbuf, size_t errsz)
{
    int rc = KN_OK;
    char e[512];
    rd_kafka_t *rk = NULL;
    unsigned char *missing = calloc(n ? n : 1, 1);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (!missing || !conf) {
        rc = kn_seterr(errbuf, errsz, KN_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = conf_set(conf, "bootstrap.servers", brokers, errbuf, errsz)) != KN_OK) goto out;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!rk) {
        rc = kn_seterr(errbuf, errsz, KN_EKAFKA, "kafka admin: %s", e);
        goto out;
    }
    conf = NULL;
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - mono_ms();
        if (missing_topics(rk, specs, n, (int)(left > 5000 ? 5000 : left > 100 ? left : 100),
                           missing) == 0) {
            rc = KN_OK;
            break;
        }
        left = end - mono_ms();
        rc = create_missing(rk, specs, n, missing, (int)(left > 5000 ? 5000 : left > 500 ? left : 500),
                            errbuf, errsz);
        if (rc == KN_OK || rc != KN_ETIMEDOUT || mono_ms() >= end) break;
        kn_log_warn("%s: asking again", errbuf);
    }
out:
    free(missing);
    if (conf) rd_kafka_conf_destroy(conf);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}
