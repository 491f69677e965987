/* A process's limit of open files (RLIMIT_NOFILE) and the messages that name it: a daemon, a
 * worker or a client short of descriptors refuses the one thing that needs more, with
 * MS_E_LIMIT and a message saying which limit and how to raise it. */
#ifndef MS_FDLIMIT_H
#define MS_FDLIMIT_H

#include <stddef.h>
#include <sys/types.h>

/* The soft RLIMIT_NOFILE of process pid (0: this one); -1 when it cannot be read. */
long ms__fd_limit(pid_t pid);

/* Returns MS_E_LIMIT with a message in err: "<what>: <who> is at its limit of open files
 * (RLIMIT_NOFILE = N)" and how to raise it. who: "modelshared", "this process", "the worker of
 * model \"x\" (pid 12)"; limit: as ms__fd_limit says. */
int ms__fd_limit_fail(char *err, size_t errlen, const char *what, const char *who, long limit);

/* 0 when this process can open `reserve` more descriptors below its limit (judged by the lowest
 * free descriptor number, which Linux hands out first: every one under it is open), else
 * ms__fd_limit_fail(err, errlen, what, who, ...). */
int ms__fd_room(int reserve, const char *what, const char *who, char *err, size_t errlen);

/* How many descriptors process pid has open (/proc/PID/fd), or -1 when it cannot be read. */
int ms__fd_count(pid_t pid);

#endif
