/* lib/service/ (uses core and net): the skeleton every kiln binary runs in.
 * It owns what all services share, so that a service's main.c holds only its
 * own story: the command line (--config, --help, --version and the service's
 * options), --help generated from the service's table of configuration keys,
 * the configuration file with KILN_* overrides, JSON logging, SIGTERM/SIGINT,
 * the /healthz /readyz /metrics server, orderly shutdown and the exit codes.
 *
 * service.h: kn_service_main() and what a service's run() may ask of it.
 *
 * The life of a process, as kn_service_main runs it:
 *   1. argv[1] naming one of spec->commands hands the process to that
 *      command's main (preprocess's `tokenizer train`); nothing else runs.
 *   2. Options (getopt_long: --opt VALUE, --opt=VALUE, permuted positionals).
 *      --help prints the help on stdout, --version "NAME VERSION", both exit
 *      0. An unknown option, a missing value, a value the service's option()
 *      or check() refuses or an unexpected argument prints the problem and
 *      the help on stderr and exits 2.
 *   3. The configuration: spec->keys' literal defaults, then the file
 *      (--config, else $KILN_CONFIG, else none), then KILN_* variables.
 *      A file that does not load exits 1, as does a log level that is not
 *      debug, info, warn or error (--log-level via kn_service_log_level, else
 *      log.level), and a configuration kn_keys_check (service/keys.h) refuses:
 *      a key no table of the stack knows, a name without its section; the
 *      problems go to stderr, each with file:line and "did you mean".
 *      --check-config stops here (0: accepted); --help-config prints every
 *      key of the stack as Markdown and exits 0.
 *   4. Logging as spec->name, the SIGTERM/SIGINT flag, a metrics registry.
 *   5. run(): the service's start-up and loop; it returns the exit code
 *      (0 done or drained after SIGTERM, 1 failure; a service may return 2
 *      for a usage error it finds late, such as ingest's unknown command).
 *   6. After SIGTERM/SIGINT, "shutting down" is logged. Readiness turns
 *      false, the HTTP server stops (answers in flight finish), then
 *      cleanup(app) frees what run() built: run() may
 *      return at any point and leave the rest to cleanup. On exit code 0 the
 *      last log line is "stopped".
 *   A process still draining drain_s seconds (KN_SERVICE_DRAIN_DEFAULT_S when
 *   spec->drain_s is 0) after SIGTERM/SIGINT logs that it exits with work
 *   undone and exits 1: a hung drain (a broker or database that does not
 *   answer) never outlives the deadline. What a service must save it saves
 *   before the deadline or in a form that survives a kill (transactions,
 *   the registry), as it must for kill -9 anyway. */
#ifndef KN_SERVICE_H
#define KN_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"
#include "net/http.h"

typedef struct kn_service kn_service;

/* The shutdown deadline of a service that names none: long enough for a
 * trainer's final checkpoint on a healthy stack, short enough that a process
 * waiting on an unreachable broker ends by its own hand (issue 14: > 60 s). */
#define KN_SERVICE_DRAIN_DEFAULT_S 15
/* How long kn_service_listen waits for its port to be free (a predecessor
 * still exiting) before giving up. */
#define KN_SERVICE_BIND_RETRY_S 10

/* A command-line option of the service. `id` is what option() receives; an
 * id that is a letter is also the short option (-m). */
typedef struct {
    const char *name; /* long name without "--"; NULL ends the table */
    int id;
    const char *arg;  /* the value's name in --help ("FILE"), NULL for a flag */
    const char *help; /* one line, or several separated by '\n' */
} kn_service_option;

/* A configuration key the service reads. `def` is a literal value that
 * becomes the key's default (kn_service_get returns it when neither the file
 * nor the environment sets the key); NULL when the default is computed or
 * there is none: `help` then says what happens. Sections named by the user
 * ([dataset.NAME]) are described in keys_note. */
typedef struct {
    const char *key; /* "registry.port"; NULL ends the table */
    const char *def;
    const char *help;
} kn_service_key;

/* kafka.brokers when the configuration does not set it: the broker that
 * deploy/stack starts (KILN_KAFKA_PORT's default). Subcommands that read the
 * configuration without the service skeleton (kiln-preprocess export and lag,
 * the evaluator's evalset tool, the trainer's settings) use it too. */
#define KN_SERVICE_DEFAULT_BROKERS "127.0.0.1:19092"

/* The stack-wide [kafka] keys, for the tables of the services that use Kafka. */
/* clang-format off */
#define KN_SERVICE_KEYS_KAFKA                                                                      \
    {"kafka.brokers", KN_SERVICE_DEFAULT_BROKERS, "Kafka bootstrap servers"},                      \
    {"kafka.topic_prefix", "kiln", "topic name prefix (<prefix>.raw.text, ...)"}
/* clang-format on */

/* argv[1] == name runs main(argc - 1, argv + 1) instead of the service. */
typedef struct {
    const char *name;
    int (*main)(int argc, char **argv);
} kn_service_command;

typedef struct {
    const char *name;                 /* "kiln-registry": logs, --version, messages */
    const char *version;              /* --version after the name; NULL: KN_VERSION */
    const char *usage;                /* the usage lines of --help, each ending in '\n'; NULL:
                                       * "usage: NAME [--config FILE] [--OPTION ARG]... [ARGS]
                                       * [--help] [--version]" from the tables */
    const char *about;                /* what the service does, for --help (may be NULL) */
    const char *args_help;            /* positional arguments accepted; NULL: none */
    const kn_service_option *options; /* beyond --config/--help/--version; may be NULL */
    /* Called for each of `options` given; arg is NULL for a flag. Non-zero:
     * a usage error (message on stderr from the callback, exit 2). */
    int (*option)(kn_service *svc, void *app, int id, const char *arg);
    /* Called once the options are read (positionals in kn_service_args):
     * non-zero is a usage error, as for option(). May be NULL. */
    int (*check)(kn_service *svc, void *app);
    /* Every key the service reads, log.level excepted (the skeleton's own,
     * listed last in --help); may be NULL. */
    const kn_service_key *keys;
    const char *keys_note;              /* --help text after the key table (may be NULL) */
    const kn_service_command *commands; /* may be NULL */
    int drain_s; /* shutdown deadline in seconds; 0: KN_SERVICE_DRAIN_DEFAULT_S */
    int (*run)(kn_service *svc, void *app);
    void (*cleanup)(void *app); /* may be NULL */
} kn_service_spec;

/* Runs the service; returns the process exit code (see the top of this file).
 * `app` is the service's state, handed to option(), run() and cleanup(). */
int kn_service_main(const kn_service_spec *spec, void *app, int argc, char **argv);

/* --- for option() --- */
/* The log level to use instead of log.level (checked after the file loads). */
void kn_service_log_level(kn_service *svc, const char *level);
/* Prints "NAME: message" on stderr, for an option() about to return non-zero. */
void kn_service_usage_error(const kn_service *svc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* --- for run() --- */
kn_config *kn_service_config(kn_service *svc);
const char *kn_service_config_path(const kn_service *svc); /* NULL: none */
kn_metrics *kn_service_metrics(kn_service *svc);
/* The positional arguments (after the options); *argc set to their count. */
char **kn_service_args(kn_service *svc, int *argc);

/* A key of spec->keys: environment, file, then the table's default. Asking
 * for a key missing from the table is a bug: it aborts, naming the key. The
 * typed forms set *ok to 0 (when ok is not NULL) if the value does not
 * parse, and return 0. */
const char *kn_service_get(const kn_service *svc, const char *key);
int64_t kn_service_get_int(const kn_service *svc, const char *key, int *ok);
double kn_service_get_double(const kn_service *svc, const char *key, int *ok);
int kn_service_get_bool(const kn_service *svc, const char *key, int *ok);

/* Sets every thread of the process (those to come inherit it) to the nice
 * value of the int key (0..19; 0 leaves it as it is): batch services
 * (trainer, preprocess) yield the CPU to the latency-bound ones (registry,
 * serve) on a shared machine. Logs the value; a failure is a warning. A
 * value outside 0..19 of trainer.nice or preprocess.nice never gets here:
 * kn_keys_check refuses it at start (service/keys.h). */
void kn_service_set_nice(const kn_service *svc, const char *key);

/* Starts the HTTP server with /healthz, /readyz and /metrics. opts gives
 * bind_addr, port and the limits; service and metrics are the skeleton's.
 * When opts->ready is NULL, readiness is what kn_service_ready last said
 * (not ready, "starting", until then). routes (may be NULL) adds the
 * service's own routes before the server listens. The server stops when
 * run() has returned, before cleanup(). A port another socket still listens
 * on is retried for KN_SERVICE_BIND_RETRY_S seconds (a restart racing its
 * predecessor's exit) before this fails. */
int kn_service_listen(kn_service *svc, const kn_http_options *opts,
                      void (*routes)(kn_http_server *srv, void *ctx), void *routes_ctx,
                      char *errbuf, size_t errsz);
/* The port the server listens on (0 before kn_service_listen). */
uint16_t kn_service_port(const kn_service *svc);

/* Sets readiness for /readyz; `why` (printf format) says what is missing
 * when ready is 0 and is ignored otherwise. Safe from any thread. */
void kn_service_ready(kn_service *svc, int ready, const char *why, ...)
    __attribute__((format(printf, 3, 4)));

/* Sleeps up to seconds, waking early on shutdown. */
void kn_service_nap(double seconds);
/* Blocks until SIGTERM/SIGINT: the loop of a service that only serves HTTP. */
void kn_service_wait(void);

#endif
