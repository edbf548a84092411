/* Unit tests for lib/service: the skeleton's command line, exit codes, the
 * key table as defaults under the file and the environment, the order of
 * run() and cleanup(), readiness over HTTP, command dispatch, a bind that
 * waits out a predecessor still holding the port, the shutdown deadline
 * of a service whose drain hangs, and kn_service_set_nice on every thread.
 * Runs kn_service_main in-process (a forked child for the deadline and the
 * nice values; no Kafka, no database). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "core/kn.h"
#include "service/service.h"

typedef struct {
    const char *model; /* --model */
    int flag;          /* --flag */
    int ran, cleaned, run_code;
    char port_value[32], env_value[32], from_file[32], log_level[16];
    int bad_key_ok;
    long readyz_before, readyz_after; /* HTTP status of /readyz */
} app;

static const kn_service_option options[] = {
    {"model", 'm', "NAME", "the model"},
    {"flag", 300, NULL, "a flag"},
    {NULL, 0, NULL, NULL},
};

static const kn_service_key keys[] = {
    {"t.port", "8085", "a port"},
    {"t.env", "from-table", "overridden by the environment"},
    {"t.file", "from-table", "overridden by the file"},
    {"t.bad", "12q", "not an integer"},
    {NULL, NULL, NULL},
};

static int option(kn_service *svc, void *a, int id, const char *arg)
{
    app *t = a;
    if (id == 'm') {
        if (strcmp(arg, "refuse") == 0) {
            kn_service_usage_error(svc, "--model refuse: refused");
            return 1;
        }
        t->model = arg;
    } else {
        t->flag = 1;
    }
    return 0;
}

static long get_status(uint16_t port, const char *path)
{
    char url[128];
    long status = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fwrite);
    FILE *devnull = fopen("/dev/null", "w");
    curl_easy_setopt(c, CURLOPT_WRITEDATA, devnull);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    fclose(devnull);
    return status;
}

static int run(kn_service *svc, void *a)
{
    app *t = a;
    t->ran = 1;
    snprintf(t->port_value, sizeof(t->port_value), "%s", kn_service_get(svc, "t.port"));
    snprintf(t->env_value, sizeof(t->env_value), "%s", kn_service_get(svc, "t.env"));
    snprintf(t->from_file, sizeof(t->from_file), "%s", kn_service_get(svc, "t.file"));
    snprintf(t->log_level, sizeof(t->log_level), "%s", kn_service_get(svc, "log.level"));
    t->bad_key_ok = 1;
    kn_service_get_int(svc, "t.bad", &t->bad_key_ok);
    kn_http_options ho = {.bind_addr = "127.0.0.1", .port = 0};
    char err[256];
    if (kn_service_listen(svc, &ho, NULL, NULL, err, sizeof(err)) != KN_OK) return 1;
    t->readyz_before = get_status(kn_service_port(svc), "/readyz");
    kn_service_ready(svc, 1, NULL);
    t->readyz_after = get_status(kn_service_port(svc), "/readyz");
    return t->run_code;
}

static void cleanup(void *a)
{
    app *t = a;
    t->cleaned = t->ran ? 1 : -1; /* -1: cleanup without run */
}

static int sub_main(int argc, char **argv)
{
    return argc == 2 && strcmp(argv[0], "sub") == 0 && strcmp(argv[1], "x") == 0 ? 42 : 43;
}

static const kn_service_command commands[] = {{"sub", sub_main}, {NULL, NULL}};

static const kn_service_spec spec = {
    .name = "kiln-test",
    .options = options,
    .option = option,
    .keys = keys,
    .commands = commands,
    .run = run,
    .cleanup = cleanup,
};

/* Runs the skeleton with argv (NULL-terminated, without argv[0]), stdout and
 * stderr to /dev/null. */
static int service(app *t, const char *const *args)
{
    char *argv[16] = {"kiln-test"};
    int argc = 1;
    for (; args && args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), errfd = dup(2);
    FILE *null = fopen("/dev/null", "w");
    dup2(fileno(null), 1);
    dup2(fileno(null), 2);
    int rc = kn_service_main(&spec, t, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(errfd, 2);
    close(out);
    close(errfd);
    fclose(null);
    return rc;
}

static void exit_codes(void **state)
{
    (void)state;
    unsetenv("KILN_CONFIG");
    app t = {0};
    const char *help[] = {"--help", NULL}, *h[] = {"-h", NULL}, *ver[] = {"--version", NULL},
               *bad[] = {"--nope", NULL}, *missing[] = {"--model", NULL},
               *extra[] = {"positional", NULL}, *refused[] = {"-m", "refuse", NULL},
               *nofile[] = {"--config", "/nonexistent/kiln.ini", NULL},
               *badlevel[] = {"--config", "/dev/null", NULL};
    assert_int_equal(service(&t, help), 0);
    assert_int_equal(service(&t, h), 0);
    assert_int_equal(service(&t, ver), 0);
    assert_int_equal(service(&t, bad), 2);
    assert_int_equal(service(&t, missing), 2);
    assert_int_equal(service(&t, extra), 2);
    assert_int_equal(service(&t, refused), 2);
    assert_false(t.ran);
    assert_int_equal(t.cleaned, 0); /* nothing was built, nothing to clean */
    assert_int_equal(service(&t, nofile), 1);
    setenv("KILN_LOG_LEVEL", "loud", 1);
    assert_int_equal(service(&t, badlevel), 1);
    unsetenv("KILN_LOG_LEVEL");
    assert_false(t.ran);
}

static void run_and_config(void **state)
{
    (void)state;
    char path[] = "/tmp/kiln-test-service-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *ini = "[t]\nfile = from-file\n[log]\nlevel = warn\n";
    assert_int_equal(write(fd, ini, strlen(ini)), (ssize_t)strlen(ini));
    close(fd);
    setenv("KILN_T_ENV", "from-env", 1);
    setenv("KILN_CONFIG", path, 1);
    app t = {.run_code = 0};
    const char *args[] = {"--flag", "--model=m1", NULL};
    assert_int_equal(service(&t, args), 0);
    assert_true(t.ran);
    assert_int_equal(t.cleaned, 1);
    assert_string_equal(t.model, "m1");
    assert_true(t.flag);
    assert_string_equal(t.port_value, "8085");     /* the table's default */
    assert_string_equal(t.env_value, "from-env");  /* the environment wins */
    assert_string_equal(t.from_file, "from-file"); /* $KILN_CONFIG was read */
    assert_string_equal(t.log_level, "warn");
    assert_int_equal(t.bad_key_ok, 0);
    assert_int_equal(t.readyz_before, 503);
    assert_int_equal(t.readyz_after, 200);

    app f = {.run_code = 1};
    assert_int_equal(service(&f, NULL), 1); /* run's code is the exit code */
    assert_int_equal(f.cleaned, 1);
    unsetenv("KILN_T_ENV");
    unsetenv("KILN_CONFIG");
    unlink(path);
}

static void commands_take_over(void **state)
{
    (void)state;
    app t = {0};
    const char *sub[] = {"sub", "x", NULL}, *later[] = {"--flag", "sub", NULL};
    assert_int_equal(service(&t, sub), 42);
    assert_false(t.ran);
    /* only argv[1] names a command; later it is a positional, refused here */
    assert_int_equal(service(&t, later), 2);
}

/* --- the port a predecessor still holds (issue 14: "port in use" after a
 * restart) --- */

static uint16_t held_port;

static int run_listen_held(kn_service *svc, void *a)
{
    (void)a;
    kn_http_options ho = {.bind_addr = "127.0.0.1", .port = held_port};
    char err[256];
    return kn_service_listen(svc, &ho, NULL, NULL, err, sizeof(err)) == KN_OK &&
                   kn_service_port(svc) == held_port
               ? 0
               : 1;
}

static void *release_later(void *arg)
{
    usleep(1500 * 1000);
    close(*(int *)arg);
    return NULL;
}

static void bind_waits_for_the_port(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof(a);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    held_port = ntohs(a.sin_port);
    /* the "previous instance" lets go 1.5 s after the new one starts */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &fd), 0);
    kn_service_spec sp = spec;
    sp.run = run_listen_held;
    sp.commands = NULL;
    char *argv[] = {"kiln-test", NULL};
    assert_int_equal(kn_service_main(&sp, &(app){0}, 1, argv), 0);
    pthread_join(th, NULL);
}

/* --- the shutdown deadline: a drain that never ends (a flush to a broker
 * that is SIGSTOPped) must not keep the process alive --- */

static int run_hung(kn_service *svc, void *a)
{
    (void)svc;
    (void)a;
    for (;;) /* ignores the shutdown request, as a blocked Kafka call does */
        usleep(100 * 1000);
    return 0;
}

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void hung_drain_exits_by_the_deadline(void **state)
{
    (void)state;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *null = fopen("/dev/null", "w");
        dup2(fileno(null), 1);
        dup2(fileno(null), 2);
        kn_service_spec sp = spec; /* drain_s 0: the skeleton's default deadline */
        sp.run = run_hung;
        sp.commands = NULL;
        char *argv[] = {"kiln-test", NULL};
        _exit(kn_service_main(&sp, &(app){0}, 1, argv) == 0 ? 0 : 3);
    }
    usleep(500 * 1000); /* the child is in run() */
    double t0 = mono();
    kill(pid, SIGTERM);
    int status = 0;
    pid_t got = 0;
    while ((got = waitpid(pid, &status, WNOHANG)) == 0 &&
           mono() - t0 < KN_SERVICE_DRAIN_DEFAULT_S + 10)
        usleep(100 * 1000);
    double took = mono() - t0;
    if (got == 0) { /* still there: the deadline did not hold */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("still running %.0f s after SIGTERM", took);
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1); /* work undone: not a clean 0 */
    assert_true(took >= KN_SERVICE_DRAIN_DEFAULT_S - 1);
    assert_true(took <= KN_SERVICE_DRAIN_DEFAULT_S + 3);
}

/* --- kn_service_set_nice: Linux keeps the nice value per thread, so a
 * setpriority() of the calling thread alone would leave librdkafka's and
 * OpenBLAS's threads at full priority --- */

static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static int park_done;

static void *parked(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&park_lock);
    while (!park_done)
        pthread_cond_wait(&park_cond, &park_lock);
    pthread_mutex_unlock(&park_lock);
    return NULL;
}

/* Every thread of the process at `want`, except the calling one at `self`
 * (want when self < 0). Returns the number of threads seen, -1 on a
 * mismatch (printed). */
static int threads_at(int want, int self)
{
    pid_t me = (pid_t)syscall(SYS_gettid);
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0, bad = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        pid_t tid = (pid_t)atoi(e->d_name);
        errno = 0;
        int p = getpriority(PRIO_PROCESS, (id_t)tid);
        int w = tid == me && self >= 0 ? self : want;
        if (errno || p != w) {
            fprintf(stderr, "thread %d: nice %d, want %d\n", (int)tid, p, w);
            bad = 1;
        }
        n++;
    }
    closedir(d);
    return bad ? -1 : n;
}

/* The child's run(): 2 threads parked, the calling thread at nice 3; t.nice
 * = 0 changes nothing; t.nice = 5 puts every thread at 5, and a thread
 * created after inherits it. Exit 0 when all held, else the step that
 * failed. */
static int run_nice(kn_service *svc, void *a)
{
    (void)a;
    pthread_t th[3];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, parked, NULL) != 0) return 10;
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 3) != 0) return 11;
    setenv("KILN_T_NICE", "0", 1);
    kn_service_set_nice(svc, "t.nice");
    int n = threads_at(0, 3);
    if (n < 3) return 12; /* the caller, the two parked, the skeleton's watchdog */
    setenv("KILN_T_NICE", "5", 1);
    kn_service_set_nice(svc, "t.nice");
    if (threads_at(5, -1) != n) return 13;
    if (pthread_create(&th[2], NULL, parked, NULL) != 0) return 10;
    if (threads_at(5, -1) != n + 1) return 14;
    pthread_mutex_lock(&park_lock);
    park_done = 1;
    pthread_cond_broadcast(&park_cond);
    pthread_mutex_unlock(&park_lock);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    return 0;
}

static void set_nice_reaches_every_thread(void **state)
{
    (void)state;
    static const kn_service_key nice_keys[] = {{"t.nice", "0", "nice"}, {NULL, NULL, NULL}};
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork(); /* the nice values would stay with this process */
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *null = fopen("/dev/null", "w");
        dup2(fileno(null), 1);
        kn_service_spec sp = spec;
        sp.keys = nice_keys;
        sp.run = run_nice;
        sp.cleanup = NULL;
        sp.commands = NULL;
        char *argv[] = {"kiln-test", NULL};
        _exit(kn_service_main(&sp, &(app){0}, 1, argv));
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exit_codes),
        cmocka_unit_test(run_and_config),
        cmocka_unit_test(commands_take_over),
        cmocka_unit_test(bind_waits_for_the_port),
        cmocka_unit_test(hung_drain_exits_by_the_deadline),
        cmocka_unit_test(set_nice_reaches_every_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
