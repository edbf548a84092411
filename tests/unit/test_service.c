/* Unit tests for lib/service: the skeleton's command line, exit codes, the
 * key table as defaults under the file and the environment, the order of
 * run() and cleanup(), readiness over HTTP, and command dispatch. Runs
 * kn_service_main in-process (no Kafka, no database). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exit_codes),
        cmocka_unit_test(run_and_config),
        cmocka_unit_test(commands_take_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
