/* shutdown.h: SIGTERM/SIGINT → a process-wide shutdown flag that service loops
 * poll. SIGPIPE is ignored (a closed socket is an error return, not a death). */
#ifndef KN_SHUTDOWN_H
#define KN_SHUTDOWN_H

/* Installs the handlers. Call once in main before starting threads. */
void kn_shutdown_setup(void);

/* Non-zero once SIGTERM or SIGINT arrived (or kn_shutdown_request ran). */
int kn_shutdown_requested(void);

/* Asks the loops to stop, as a signal would (used by tests and fatal paths). */
void kn_shutdown_request(void);

#endif
