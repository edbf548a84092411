/* dead_url.h: a loopback URL nobody listens on (connection refused), for
 * tests of what a client does when its server is away: a lib/net/http
 * server is started on a free port and destroyed, so the port was free a
 * moment ago and is closed now. Include after <cmocka.h> and net/http.h. */
#ifndef KILN_TEST_DEAD_URL_H
#define KILN_TEST_DEAD_URL_H

#include <stdio.h>

static void dead_url(char *url, size_t n)
{
    kn_http_options o = {.service = "gone"};
    kn_http_server *gone = kn_http_server_new(&o);
    char e[256];
    assert_non_null(gone);
    assert_int_equal(kn_http_server_start(gone, e, sizeof(e)), KN_OK);
    snprintf(url, n, "http://127.0.0.1:%u", kn_http_server_port(gone));
    kn_http_server_destroy(gone);
}

#endif
