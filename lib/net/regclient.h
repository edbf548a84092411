/* regclient.h: the libcurl client of the kiln registry's HTTP API, used by
 * kilnctl, the trainer and the evaluator. One kn_regclient per thread (it
 * owns a curl handle); calls block. JSON answers are handed to the caller as
 * jansson objects (caller decrefs).
 *
 * Errors: KN_ENOTFOUND (404), KN_ECONFLICT (409), KN_EAUTH (401/403),
 * KN_EINVAL (400/422), KN_ETOOBIG (413), KN_ECORRUPT (a download whose bytes
 * do not match their SHA-256), KN_EHTTP (5xx, network), KN_EIO (local file);
 * errbuf then holds the server's message. GETs and idempotent writes are
 * retried on network errors and 503 (3 tries, backoff). */
#ifndef KN_REGCLIENT_H
#define KN_REGCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/sha256.h"

typedef struct kn_regclient kn_regclient;

/* base_url like "http://127.0.0.1:8080"; token may be NULL (anonymous).
 * Both copied. NULL on OOM. */
kn_regclient *kn_regclient_new(const char *base_url, const char *token);
void kn_regclient_destroy(kn_regclient *c);
/* Whole-call timeout for JSON calls (default 30 s; transfers have none but
 * abort when under 1 KiB/s for 60 s). */
void kn_regclient_set_timeout(kn_regclient *c, long seconds);
/* Every later call carries X-Kiln-Lease-Epoch: epoch (0: none); the registry
 * refuses a version created under an epoch that is no longer the model's
 * training lease (409 fenced). */
void kn_regclient_set_lease_epoch(kn_regclient *c, int64_t epoch);
/* The HTTP status of the last answer (0 when none came). */
int kn_regclient_last_status(const kn_regclient *c);

/* Any call: method, path ("/v1/..."), body (may be NULL; borrowed), extra
 * header (may be NULL). On 2xx *out (may be NULL) gets the parsed answer. */
int kn_regclient_call(kn_regclient *c, const char *method, const char *path, json_t *body,
                      const char *header, json_t **out, char *errbuf, size_t errsz);

int kn_regclient_create_model(kn_regclient *c, const char *name, const char *task,
                              const char *description, json_t **out, char *errbuf, size_t errsz);

/* Creates a version. idempotency_key (may be NULL) makes a retry return the
 * first attempt's version; lineage and tags (objects, may be NULL) borrowed.
 * *version gets the number. */
int kn_regclient_create_version(kn_regclient *c, const char *model, const char *idempotency_key,
                                json_t *lineage, json_t *tags, int *version, json_t **out,
                                char *errbuf, size_t errsz);

/* Streams the file as the version's artifact (hashing it first); sha_out
 * (may be NULL) gets its SHA-256. */
int kn_regclient_upload_artifact(kn_regclient *c, const char *model, int version,
                                 const char *path, char sha_out[KN_SHA256_HEX_LEN], char *errbuf,
                                 size_t errsz);

/* Downloads into path (via path.part, renamed only once the SHA-256 matches
 * the registry's). sha_out (may be NULL) gets the digest. */
int kn_regclient_download_artifact(kn_regclient *c, const char *model, int version,
                                   const char *path, char sha_out[KN_SHA256_HEX_LEN],
                                   char *errbuf, size_t errsz);

/* metrics: an array of {name, value, dataset?, step?} (borrowed). */
int kn_regclient_record_metrics(kn_regclient *c, const char *model, int version, json_t *metrics,
                                char *errbuf, size_t errsz);

int kn_regclient_get_version(kn_regclient *c, const char *model, int version, json_t **out,
                             char *errbuf, size_t errsz);
/* query: "status=evaluated&metric=accuracy>=0.9&sort=-version" or NULL. */
int kn_regclient_list_versions(kn_regclient *c, const char *model, const char *query,
                               json_t **out, char *errbuf, size_t errsz);
int kn_regclient_list_models(kn_regclient *c, json_t **out, char *errbuf, size_t errsz);

/* "What do I deploy": version, artifact digest and size, metrics, download URL. */
int kn_regclient_get_alias(kn_regclient *c, const char *model, const char *alias, json_t **out,
                           char *errbuf, size_t errsz);

/* Moves alias to version if it still points at expected (0: must not exist
 * yet; -1: no check). KN_ECONFLICT when another move won. */
int kn_regclient_set_alias(kn_regclient *c, const char *model, const char *alias, int version,
                           int expected, const char *reason, json_t **out, char *errbuf,
                           size_t errsz);
/* Moves the alias back to where it pointed before its last move. */
int kn_regclient_rollback(kn_regclient *c, const char *model, const char *alias,
                          const char *reason, json_t **out, char *errbuf, size_t errsz);

/* Records a rejection with reason and a metrics snapshot (object, may be NULL). */
int kn_regclient_reject(kn_regclient *c, const char *model, int version, const char *reason,
                        json_t *metrics, char *errbuf, size_t errsz);

/* Events after `since` (0: from the start). */
int kn_regclient_events(kn_regclient *c, const char *model, int64_t since, json_t **out,
                        char *errbuf, size_t errsz);

#endif
