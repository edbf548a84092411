/* shutdown.c: the shutdown flag, the only mutable global besides config. */
#include "core/shutdown.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

void kn_shutdown_setup(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int kn_shutdown_requested(void)
{
    return stop_requested != 0;
}

void kn_shutdown_request(void)
{
    stop_requested = 1;
}
