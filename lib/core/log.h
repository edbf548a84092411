/* log.h: structured logs, one JSON object per line on stderr:
 *   {"ts":"2026-11-22T21:00:00.123Z","level":"info","service":"kiln-ingest","msg":"...", ...}
 * Thread-safe (one write(2) per line). Never pass secrets as fields. */
#ifndef KN_LOG_H
#define KN_LOG_H

#include <stddef.h>

#include <jansson.h>

typedef enum {
    KN_LOG_DEBUG = 0,
    KN_LOG_INFO = 1,
    KN_LOG_WARN = 2,
    KN_LOG_ERROR = 3,
} kn_log_level;

/* Names the service in every line and sets the minimum level. Call once in
 * main; before it, lines say "service":"kiln" and the level is info. */
void kn_log_init(const char *service, kn_log_level min_level);

/* Now, as the "ts" of a log line: UTC ISO 8601 with milliseconds
 * ("2026-11-22T21:00:00.123Z", 24 characters + NUL). Cannot fail. */
void kn_log_timestamp(char *out, size_t outsz);

/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int kn_log_level_parse(const char *name);

/* A line with a printf-formatted message. */
void kn_log(kn_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A line with a message and extra fields; `fields` (an object, may be NULL)
 * is consumed. */
void kn_log_fields(kn_log_level level, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define kn_log_debug(...) kn_log(KN_LOG_DEBUG, __VA_ARGS__)
#define kn_log_info(...) kn_log(KN_LOG_INFO, __VA_ARGS__)
#define kn_log_warn(...) kn_log(KN_LOG_WARN, __VA_ARGS__)
#define kn_log_error(...) kn_log(KN_LOG_ERROR, __VA_ARGS__)

#endif
