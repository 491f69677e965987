/* How a child process ended, in words. See exitstatus.h. */
#include "exitstatus.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

/* "SIGKILL" for 9, else "signal N". */
static void signal_name(int sig, char *buf, size_t buflen)
{
    const char *abbrev = sigabbrev_np(sig);
    if (abbrev != NULL)
        snprintf(buf, buflen, "SIG%s", abbrev);
    else
        snprintf(buf, buflen, "signal %d", sig);
}

void ms__exit_text(int status, char *buf, size_t buflen)
{
    char name[32];
    if (WIFEXITED(status)) {
        snprintf(buf, buflen, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        signal_name(WTERMSIG(status), name, sizeof name);
        snprintf(buf, buflen, "was killed by signal %d (%s)", WTERMSIG(status), name);
    } else {
        snprintf(buf, buflen, "ended with wait status %d", status);
    }
}

void ms__exit_brief(int status, char *buf, size_t buflen)
{
    if (WIFEXITED(status))
        snprintf(buf, buflen, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        signal_name(WTERMSIG(status), buf, buflen);
    else
        snprintf(buf, buflen, "wait status %d", status);
}
