/*
 * Socket activation, as systemd does it (sd_listen_fds(3)): a service manager binds and listens
 * on the socket, then starts the daemon with it as descriptor 3, $LISTEN_FDS=1 and
 * $LISTEN_PID=<the daemon's pid>. The daemon serves on that socket as it is (path, owner, mode
 * are the manager's); it neither binds, nor takes the pid lock, nor removes the socket at exit,
 * and it stays the only one for the socket because the manager starts one.
 */
#ifndef MS_DAEMON_ACTIVATION_H
#define MS_DAEMON_ACTIVATION_H

#include <stddef.h>
#include <sys/types.h>

/* The first inherited descriptor (SD_LISTEN_FDS_START). */
#define MS__ACTIVATION_FD 3

/* Reads $LISTEN_PID and $LISTEN_FDS, given as strings (NULL when unset), for the process self.
 * Returns 0 when they do not name self (not activated: *nfds = 0) or name it with nfds >= 1,
 * else MS_E_INVAL with a message in err (a number that does not parse). Pure; unit-tested. */
int ms__activation_parse(const char *listen_pid, const char *listen_fds, pid_t self, int *nfds,
                         char *err, size_t errlen);

/* Whether this process was started with an inherited listening socket. Returns 0 with *fd = -1
 * (not activated) or with *fd = MS__ACTIVATION_FD made close-on-exec and non-blocking, and the
 * socket's path in path; removes $LISTEN_PID, $LISTEN_FDS and $LISTEN_FDNAMES so that workers do
 * not see them. Errors (MS_E_INVAL, with a message in err): more than one socket, or descriptor 3
 * not a listening Unix stream socket with a path. Call before anything opens a descriptor. */
int ms__activation_take(int *fd, char *path, size_t pathlen, char *err, size_t errlen);

#endif
