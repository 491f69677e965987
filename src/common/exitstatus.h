/* How a child process ended, in words, from its waitpid() status: the one text the daemon, the
 * CLI and the library use. */
#ifndef MS_EXITSTATUS_H
#define MS_EXITSTATUS_H

#include <stddef.h>

/* "exited with status 1" / "was killed by signal 9 (SIGKILL)" / "ended with wait status N" into
 * buf (always terminated). */
void ms__exit_text(int status, char *buf, size_t buflen);
/* "exit 1" / "SIGKILL" / "wait status N": the short form (status's last crash). */
void ms__exit_brief(int status, char *buf, size_t buflen);

#endif
