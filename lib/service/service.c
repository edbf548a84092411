/* service.c: the service skeleton (service.h has the life of a process).
 * Limits: at most 48 options per service; help text is printed as given, no
 * wrapping beyond the key column. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/kn.h"
#include "core/log.h"
#include "core/shutdown.h"
#include "service/keys.h"
#include "service/service.h"

#define MAX_OPTIONS 48

struct kn_service {
    const kn_service_spec *spec;
    const char *config_path;
    const char *log_level; /* from an option, else NULL */
    int check_only;        /* --check-config */
    char **args;
    int nargs;
    kn_config *cfg;
    kn_metrics *metrics;
    kn_http_server *http;
    pthread_mutex_t ready_lock;
    int ready;
    char why[1024];
    pthread_t watchdog;
    int watchdog_started;
    volatile int done; /* run() and cleanup() finished: the watchdog stands down */
};

/* The built-in options; their ids stay clear of letters and services' enums. */
enum { OPT_CONFIG = 0x10000, OPT_HELP, OPT_VERSION, OPT_CHECK_CONFIG, OPT_HELP_CONFIG };

static void print_lines(FILE *f, int indent, const char *text)
{
    /* Continuation lines of a multi-line help align under the first. */
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "%.*s\n", (int)n, p);
        if (!nl) break;
        p = nl + 1;
        if (*p) fprintf(f, "%*s", indent, "");
    }
}

/* The skeleton reads log.level itself (step 3), so every service has it. */
static const kn_service_key log_level_key = {"log.level", "info", "debug, info, warn, error"};

static void print_key(FILE *f, const kn_service_key *k, int w)
{
    fprintf(f, "  %-*s  ", w, k->key);
    if (k->def) {
        char line[512];
        snprintf(line, sizeof(line), "%s (%s)", k->help, k->def[0] ? k->def : "\"\"");
        print_lines(f, w + 4, line);
    } else {
        print_lines(f, w + 4, k->help);
    }
}

static void help(const kn_service_spec *spec, FILE *f)
{
    if (spec->usage) {
        fputs(spec->usage, f);
    } else {
        fprintf(f, "usage: %s [--config FILE]", spec->name);
        for (const kn_service_option *o = spec->options; o && o->name; o++)
            fprintf(f, " [--%s%s%s]", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        if (spec->args_help) fprintf(f, " %s", spec->args_help);
        fputs(" [--help] [--version]\n", f);
    }
    if (spec->about) fprintf(f, "\n%s", spec->about);
    fputs("\noptions:\n", f);
    fprintf(f, "  %-24s%s\n", "--config FILE",
            "configuration file (default $KILN_CONFIG); KILN_* variables override it");
    for (const kn_service_option *o = spec->options; o && o->name; o++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        if (strlen(left) >= 24) {
            fprintf(f, "  %s\n%26s", left, "");
        } else {
            fprintf(f, "  %-24s", left);
        }
        print_lines(f, 26, o->help);
    }
    fprintf(f, "  %-24s%s\n", "--check-config",
            "check the configuration (every key, every name) and exit: 0 accepted");
    fprintf(f, "  %-24s%s\n", "--help-config",
            "every key of every section of the stack, as Markdown");
    fprintf(f, "  %-24s%s\n", "--help, --version", "this text; the version");
    size_t w = strlen(log_level_key.key);
    for (const kn_service_key *k = spec->keys; k && k->key; k++)
        if (strlen(k->key) > w) w = strlen(k->key);
    fputs("\nconfiguration keys (key = section.name in the file, or KILN_SECTION_NAME):\n", f);
    for (const kn_service_key *k = spec->keys; k && k->key; k++)
        print_key(f, k, (int)w);
    print_key(f, &log_level_key, (int)w);
    if (spec->keys_note) fprintf(f, "%s", spec->keys_note);
}

void kn_service_usage_error(const kn_service *svc, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", svc->spec->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int usage_error(kn_service *svc)
{
    help(svc->spec, stderr);
    return 2;
}

/* Step 2 of service.h: -1 to go on, else the exit code (help, version,
 * usage error). */
static int parse_options(kn_service *svc, void *app, int argc, char **argv)
{
    const kn_service_spec *spec = svc->spec;
    struct option longopts[MAX_OPTIONS + 6];
    char shorts[3 * MAX_OPTIONS + 8];
    size_t n = 0, ns = 0;
    shorts[ns++] = ':'; /* a missing value returns ':' */
    for (const kn_service_option *o = spec->options; o && o->name && n < MAX_OPTIONS; o++, n++) {
        longopts[n] =
            (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->id};
        if ((o->id >= 'a' && o->id <= 'z') || (o->id >= 'A' && o->id <= 'Z')) {
            shorts[ns++] = (char)o->id;
            if (o->arg) shorts[ns++] = ':';
        }
    }
    longopts[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    longopts[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
    longopts[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    longopts[n++] = (struct option){"check-config", no_argument, NULL, OPT_CHECK_CONFIG};
    longopts[n++] = (struct option){"help-config", no_argument, NULL, OPT_HELP_CONFIG};
    longopts[n] = (struct option){NULL, 0, NULL, 0};
    memcpy(shorts + ns, "c:hV", 5);

    opterr = 0; /* our own message, naming the service */
    optind = 0; /* GNU: start afresh, so that a process (a test) may call us twice */
    int ch;
    while ((ch = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
        case OPT_CONFIG:
            svc->config_path = optarg;
            break;
        case 'h':
        case OPT_HELP:
            help(spec, stdout);
            return 0;
        case OPT_CHECK_CONFIG:
            svc->check_only = 1;
            break;
        case OPT_HELP_CONFIG:
            kn_keys_print_markdown(stdout);
            return 0;
        case 'V':
        case OPT_VERSION:
            printf("%s %s\n", spec->name, spec->version ? spec->version : KN_VERSION);
            return 0;
        case '?':
        case ':': {
            char shortopt[3] = {'-', (char)optopt, '\0'};
            const char *what =
                ch == '?' && optopt > 0 && optopt < 128 ? shortopt : argv[optind - 1];
            kn_service_usage_error(svc, "%s '%s'",
                                   ch == ':' ? "missing value for" : "unknown option", what);
            return usage_error(svc);
        }
        default:
            if (!spec->option || spec->option(svc, app, ch, optarg) != 0) return usage_error(svc);
        }
    }
    svc->args = argv + optind;
    svc->nargs = argc - optind;
    if (svc->nargs > 0 && !spec->args_help) {
        kn_service_usage_error(svc, "unexpected argument '%s'", argv[optind]);
        return usage_error(svc);
    }
    if (spec->check && !svc->check_only && spec->check(svc, app) != 0) return usage_error(svc);
    return -1;
}

static const kn_service_key *find_key(const kn_service *svc, const char *key)
{
    if (strcmp(key, log_level_key.key) == 0) return &log_level_key;
    for (const kn_service_key *k = svc->spec->keys; k && k->key; k++)
        if (strcmp(k->key, key) == 0) return k;
    fprintf(stderr, "%s: bug: configuration key '%s' is read but not in the service's table\n",
            svc->spec->name, key);
    abort();
}

/* Step 3: table defaults, then the file (the environment wins at lookup). */
static int load_config(kn_service *svc)
{
    char err[1024];
    svc->cfg = kn_config_new();
    if (!svc->cfg) return KN_ENOMEM;
    for (const kn_service_key *k = svc->spec->keys; k && k->key; k++)
        if (k->def && kn_config_set(svc->cfg, k->key, k->def) != KN_OK) return KN_ENOMEM;
    if (kn_config_set(svc->cfg, log_level_key.key, log_level_key.def) != KN_OK) return KN_ENOMEM;
    if (svc->config_path &&
        kn_config_load_file(svc->cfg, svc->config_path, err, sizeof(err)) != KN_OK) {
        fprintf(stderr, "%s: %s\n", svc->spec->name, err);
        return KN_EINVAL;
    }
    const char *level =
        svc->log_level ? svc->log_level : kn_config_get(svc->cfg, log_level_key.key, NULL);
    int lvl = kn_log_level_parse(level);
    if (lvl < 0) {
        fprintf(stderr, "%s: log level '%s': use debug, info, warn or error\n", svc->spec->name,
                level);
        return KN_EINVAL;
    }
    kn_log_init(svc->spec->name, (kn_log_level)lvl);
    /* Strict: a key no table knows, or a name no section defines, stops the
     * service here, before run() has touched Kafka or the registry. */
    char *problems = malloc(16384);
    if (!problems) return KN_ENOMEM;
    int rc = kn_keys_check(svc->cfg, svc->spec->keys, problems, 16384);
    if (rc != KN_OK)
        fprintf(stderr, "%s: the configuration%s%s has mistakes; nothing was started:\n%s\n",
                svc->spec->name, svc->config_path ? " " : "",
                svc->config_path ? svc->config_path : "", problems);
    free(problems);
    return rc;
}

static int drain_seconds(const kn_service_spec *spec)
{
    return spec->drain_s > 0 ? spec->drain_s : KN_SERVICE_DRAIN_DEFAULT_S;
}

static void *watchdog(void *arg)
{
    kn_service *svc = arg;
    int drain_s = drain_seconds(svc->spec);
    while (!kn_shutdown_requested() && !svc->done)
        usleep(100 * 1000);
    for (int t = 0; t < drain_s * 10; t++) {
        if (svc->done) return NULL;
        usleep(100 * 1000);
    }
    if (svc->done) return NULL;
    kn_log_error("still draining %d s after the shutdown request: exiting with work undone",
                 drain_s);
    _exit(1);
}

int kn_service_main(const kn_service_spec *spec, void *app, int argc, char **argv)
{
    for (const kn_service_command *c = spec->commands; argc > 1 && c && c->name; c++)
        if (strcmp(argv[1], c->name) == 0) return c->main(argc - 1, argv + 1);

    kn_service svc = {.spec = spec, .config_path = getenv("KILN_CONFIG")};
    pthread_mutex_init(&svc.ready_lock, NULL);
    snprintf(svc.why, sizeof(svc.why), "starting");
    int code = parse_options(&svc, app, argc, argv);
    if (code >= 0) goto out;
    code = 1;
    if (load_config(&svc) != KN_OK) goto out;
    if (svc.check_only) {
        printf("%s: configuration %s accepted\n", spec->name,
               svc.config_path ? svc.config_path : "(none: defaults and KILN_* variables)");
        code = 0;
        goto out;
    }
    kn_shutdown_setup();
    svc.metrics = kn_metrics_new();
    if (!svc.metrics) goto out;
    if (pthread_create(&svc.watchdog, NULL, watchdog, &svc) == 0) svc.watchdog_started = 1;

    code = spec->run(&svc, app);

    if (kn_shutdown_requested()) kn_log_info("shutting down: finishing what is in flight");
    kn_service_ready(&svc, 0, "shutting down");
    kn_http_server_destroy(svc.http); /* stops accepting, joins connection threads */
    svc.http = NULL;
    if (spec->cleanup) spec->cleanup(app);
    svc.done = 1;
    if (code == 0) kn_log_info("stopped");
    if (svc.watchdog_started) pthread_join(svc.watchdog, NULL);
out:
    kn_metrics_destroy(svc.metrics);
    kn_config_destroy(svc.cfg);
    pthread_mutex_destroy(&svc.ready_lock);
    return code;
}

void kn_service_log_level(kn_service *svc, const char *level)
{
    svc->log_level = level;
}

kn_config *kn_service_config(kn_service *svc)
{
    return svc->cfg;
}

const char *kn_service_config_path(const kn_service *svc)
{
    return svc->config_path;
}

kn_metrics *kn_service_metrics(kn_service *svc)
{
    return svc->metrics;
}

char **kn_service_args(kn_service *svc, int *argc)
{
    *argc = svc->nargs;
    return svc->args;
}

const char *kn_service_get(const kn_service *svc, const char *key)
{
    find_key(svc, key);
    return kn_config_get(svc->cfg, key, NULL);
}

int64_t kn_service_get_int(const kn_service *svc, const char *key, int *ok)
{
    find_key(svc, key);
    return kn_config_get_int(svc->cfg, key, 0, ok);
}

double kn_service_get_double(const kn_service *svc, const char *key, int *ok)
{
    find_key(svc, key);
    return kn_config_get_double(svc->cfg, key, 0, ok);
}

int kn_service_get_bool(const kn_service *svc, const char *key, int *ok)
{
    find_key(svc, key);
    return kn_config_get_bool(svc->cfg, key, 0, ok);
}

void kn_service_set_nice(const kn_service *svc, const char *key)
{
    int ok = 1;
    int64_t v = kn_service_get_int(svc, key, &ok);
    if (!ok || v < 0 || v > 19) { /* keys.c refuses it at start for the stack's keys */
        kn_log_error("%s = %s: wants a whole number in 0..19; priority left as it is", key,
                     kn_service_get(svc, key));
        return;
    }
    if (v == 0) return;
    /* Linux keeps the nice value per thread: every thread there is now
     * (librdkafka's, OpenBLAS's pool, the HTTP server's), and the ones
     * created later inherit it from their creator. */
    DIR *d = opendir("/proc/self/task");
    int n = 0, failed = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        if (setpriority(PRIO_PROCESS, (id_t)atoi(e->d_name), (int)v) != 0)
            failed++;
        else
            n++;
    }
    if (d) closedir(d);
    if (!d && setpriority(PRIO_PROCESS, 0, (int)v) == 0) n = 1;
    if (failed || !n)
        kn_log_warn("%s = %lld: set on %d thread(s), failed on %d: %s", key, (long long)v, n,
                    failed, strerror(errno));
    else
        kn_log_info("%s = %lld: this batch service yields the CPU to latency-bound ones", key,
                    (long long)v);
}

static int ready_cb(void *ctx, char *why, size_t whysz)
{
    kn_service *svc = ctx;
    pthread_mutex_lock(&svc->ready_lock);
    int ready = svc->ready;
    if (!ready) snprintf(why, whysz, "%s", svc->why);
    pthread_mutex_unlock(&svc->ready_lock);
    return ready ? 0 : 1;
}

void kn_service_ready(kn_service *svc, int ready, const char *why, ...)
{
    pthread_mutex_lock(&svc->ready_lock);
    svc->ready = ready;
    if (!ready) {
        va_list ap;
        va_start(ap, why);
        vsnprintf(svc->why, sizeof(svc->why), why, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&svc->ready_lock);
}

/* Waits while another socket listens on addr:port (a previous instance still
 * exiting, or a restart racing its predecessor): up to seconds, probing with
 * the same SO_REUSEADDR the server uses, so TIME_WAIT does not count. Returns
 * 0 when the port looks free (or cannot be probed: the server then reports). */
static int wait_for_port(const char *bind_addr, uint16_t port, double seconds)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (!bind_addr) bind_addr = "127.0.0.1"; /* kn_http_server_new's default */
    if (port == 0 || inet_pton(AF_INET, bind_addr, &a.sin_addr) != 1) return 0;
    int warned = 0;
    for (double waited = 0;; waited += 0.2) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0) return 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        int rc = bind(fd, (struct sockaddr *)&a, sizeof(a)), e = errno;
        close(fd);
        if (rc == 0 || e != EADDRINUSE) return 0;
        if (waited >= seconds || kn_shutdown_requested()) return -1;
        if (!warned++)
            kn_log_warn("http: %s:%u in use: retrying for up to %.0f s", bind_addr, port, seconds);
        usleep(200 * 1000);
    }
}

int kn_service_listen(kn_service *svc, const kn_http_options *opts,
                      void (*routes)(kn_http_server *srv, void *ctx), void *routes_ctx,
                      char *errbuf, size_t errsz)
{
    kn_http_options o = *opts;
    o.service = svc->spec->name;
    o.metrics = svc->metrics;
    if (!o.ready) {
        o.ready = ready_cb;
        o.ready_ctx = svc;
    }
    if (svc->http) return kn_seterr(errbuf, errsz, KN_EINVAL, "http: already listening");
    if (wait_for_port(o.bind_addr, o.port, KN_SERVICE_BIND_RETRY_S) != 0)
        return kn_seterr(errbuf, errsz, KN_EIO,
                         "http: cannot listen on %s:%u: still in use after %d s",
                         o.bind_addr ? o.bind_addr : "127.0.0.1", o.port, KN_SERVICE_BIND_RETRY_S);
    svc->http = kn_http_server_new(&o);
    if (!svc->http) return kn_seterr(errbuf, errsz, KN_ENOMEM, "http: out of memory");
    if (routes) routes(svc->http, routes_ctx);
    char err[512];
    if (kn_http_server_start(svc->http, err, sizeof(err)) != KN_OK)
        return kn_seterr(errbuf, errsz, KN_EIO, "http: %s", err);
    return KN_OK;
}

uint16_t kn_service_port(const kn_service *svc)
{
    return svc->http ? kn_http_server_port(svc->http) : 0;
}

void kn_service_nap(double seconds)
{
    for (double t = 0; t < seconds && !kn_shutdown_requested(); t += 0.1)
        usleep(100 * 1000);
}

void kn_service_wait(void)
{
    while (!kn_shutdown_requested())
        usleep(100 * 1000);
}
