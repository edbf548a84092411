/* lib/core/ (the bottom layer; includes nothing of ours): status codes and
 * errors (kn.h), the stack's config file with KILN_* overrides (config.h),
 * JSON-lines logging (log.h), the shutdown flag (shutdown.h), Prometheus
 * metrics (metrics.h), SHA-256 and CRC32C (sha256.h, crc32c.h) and the
 * closed list of rejection reasons (reason.h). Every other folder may use it.
 *
 * kn.h: status codes shared by every libkiln module, and kn_strerror().
 * Library functions return KN_OK (0) or a negative KN_E* code; detail goes in
 * an errbuf out-parameter where the caller needs it. */
#ifndef KN_H
#define KN_H

#include <stddef.h>

#define KN_VERSION "0.1.0"

enum {
    KN_OK = 0,
    KN_ERR = -1,          /* unspecified failure */
    KN_ENOMEM = -2,       /* allocation failed */
    KN_EINVAL = -3,       /* bad argument or bad input */
    KN_EIO = -4,          /* read/write/system call failed */
    KN_ENOTFOUND = -5,    /* no such thing */
    KN_ETIMEDOUT = -6,    /* gave up waiting */
    KN_EKAFKA = -7,       /* Kafka client error */
    KN_ECORRUPT = -8,     /* checksum, magic or structure is wrong */
    KN_EEXIST = -9,       /* already exists */
    KN_ECONFLICT = -10,   /* compare-and-set lost */
    KN_EUNSUPPORTED = -11,/* unknown version or feature */
    KN_EHTTP = -12,       /* HTTP transfer failed or non-2xx answer */
    KN_ETOOBIG = -13,     /* over a size limit */
    KN_EDB = -14,         /* database error */
    KN_EAUTH = -15,       /* missing or insufficient credentials */
};

/* Static string for a KN_* code; never NULL. */
const char *kn_strerror(int rc);

/* Formats into errbuf (when errbuf is not NULL and errsz > 0) and returns rc,
 * so a failure path reads `return kn_seterr(err, errsz, KN_EINVAL, "...")`. */
int kn_seterr(char *errbuf, size_t errsz, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define KN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
