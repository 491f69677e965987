/*
 * ms-deadlineclient: timed-out calls, for the deadline test (tests/integration/test_deadlines.py).
 *
 *   ms-deadlineclient TAG SPEC_JSON
 *       Acquires TAG (a float32 model of width 4, e.g. identity), prints "acquired", then obeys
 *       stdin, one command a line:
 *         timeouts N US  N calls of one row, each with a deadline of US microseconds
 *                        (ms_set_timeout); -> "timeouts K other J" (K failed with MS_E_TIMEOUT,
 *                        J otherwise: answered or another error)
 *         call US        one call with a deadline of US microseconds -> "ok" when it answered
 *                        the row it was given, else "error NAME message"
 */
#include <modelshare.h>

#include "echo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One call with a deadline of us microseconds. */
static int one_call(ms_model *m, uint64_t us, float value)
{
    int rc = ms_set_timeout(m, us);
    return rc == 0 ? echo_call(m, value) : rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ms-deadlineclient TAG SPEC_JSON\n");
        return 2;
    }
    ms_client *c = NULL;
    ms_model *m = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc == 0)
        rc = ms_acquire(c, argv[1], argv[2], &m);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
        return 1;
    }
    printf("acquired\n");
    fflush(stdout);
    char line[256];
    float value = 1.0f;
    while (fgets(line, sizeof line, stdin)) {
        unsigned long long n, us;
        if (sscanf(line, "timeouts %llu %llu", &n, &us) == 2) {
            unsigned long long timeouts = 0, other = 0;
            for (unsigned long long i = 0; i < n; i++) {
                if (one_call(m, us, value++) == MS_E_TIMEOUT)
                    timeouts++;
                else
                    other++;
            }
            printf("timeouts %llu other %llu\n", timeouts, other);
        } else if (sscanf(line, "call %llu", &us) == 1) {
            rc = one_call(m, us, value++);
            if (rc == 0)
                printf("ok\n");
            else
                printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
        } else {
            printf("error bad command: %s", line);
        }
        fflush(stdout);
    }
    ms_release(m);
    ms_disconnect(c);
    return 0;
}
