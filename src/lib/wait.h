/* A calling thread's wait options: a deadline for its next requests that overrides the handle's
 * (ms_set_timeout), and a check asked while a wait blocks, which ends the wait when it says so
 * (a language binding's Ctrl-C or a cancelled asyncio task). Per thread, so that one handle's
 * threads can each give their calls their own deadline. */
#ifndef MS_LIB_WAIT_H
#define MS_LIB_WAIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ms__wait {
    int64_t timeout_ns; /* > 0: this thread's requests use it instead of the handle's; 0: not */
    /* Asked at least every 100 ms while this thread waits for a slot or an answer (NULL: never);
     * nonzero ends the wait: the request is abandoned as a timed-out one is. */
    int (*cancelled)(void *arg);
    void *arg; /* not owned, for cancelled */
} ms__wait;

/* Makes w this thread's wait options (NULL: none) and returns the previous ones, for the caller
 * to put back. w is not copied: it must live while it is set. */
const ms__wait *ms__wait_set(const ms__wait *w);
/* The timeout this thread's next request gets: its own, else the handle's (handle_ns). */
int64_t ms__wait_timeout(int64_t handle_ns);
/* Whether this thread's check says its wait is to end now. */
bool ms__wait_cancelled(void);

#endif
