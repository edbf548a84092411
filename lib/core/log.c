/* log.c: JSON-lines logger. Builds each line with jansson and writes it with
 * one write(2) so concurrent threads never interleave inside a line. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static char log_service[64] = "kiln";
static kn_log_level log_min = KN_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void kn_log_init(const char *service, kn_log_level min_level)
{
    snprintf(log_service, sizeof(log_service), "%s", service ? service : "kiln");
    log_min = min_level;
}

int kn_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcasecmp(name, level_names[i]) == 0) return i;
    return -1;
}

void kn_log_timestamp(char *out, size_t outsz)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char ts[80]; /* room for any int the compiler imagines: no truncation warning */
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(now.tv_nsec / 1000000) % 1000);
    snprintf(out, outsz, "%s", ts);
}

static void log_emit(kn_log_level level, json_t *fields, const char *fmt, va_list ap)
{
    if (level < log_min) {
        json_decref(fields);
        return;
    }
    char msg[4096];
    vsnprintf(msg, sizeof(msg), fmt, ap);

    char ts[40];
    kn_log_timestamp(ts, sizeof(ts));

    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level_names[level]));
    json_object_set_new(line, "service", json_string(log_service));
    /* json_stringn_nocheck would keep invalid UTF-8 out of the line unescaped;
     * a message that is not UTF-8 is replaced rather than dropped. */
    json_t *m = json_string(msg);
    json_object_set_new(line, "msg", m ? m : json_string("(message is not valid UTF-8)"));
    if (fields) {
        json_object_update_missing(line, fields);
        json_decref(fields);
    }
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text) return;
    size_t n = strlen(text);
    text[n] = '\n'; /* overwrite the NUL: we write exactly n + 1 bytes */
    ssize_t w = write(STDERR_FILENO, text, n + 1);
    (void)w;
    free(text);
}

void kn_log(kn_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, NULL, fmt, ap);
    va_end(ap);
}

void kn_log_fields(kn_log_level level, json_t *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, fields, fmt, ap);
    va_end(ap);
}
