/*
 * Worker processes: spawn (fork + exec of modelshare-worker), watch (pidfd and control socket in
 * the daemon's epoll), stop (SIGTERM, SIGKILL after a grace period), reap.
 */
#ifndef MS_DAEMON_SUPERVISOR_H
#define MS_DAEMON_SUPERVISOR_H

#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon.h"
#include "registry.h"

typedef struct ms__supervisor {
    int epfd;
    char worker_path[PATH_MAX];
    char log_level[16];
    struct ms__wproc_list all;     /* every live worker (not yet retired or freed) */
    int count;                     /* in all */
    struct ms__wproc_list retired; /* reaped workers, freed after the current batch of events */
} ms__supervisor;

/* Finds the worker binary (ms__sibling_binary("modelshare-worker", "MODELSHARE_WORKER")). */
int ms__sup_init(ms__supervisor *s, int epfd, const char *log_level, char *err, size_t errlen);

/* Starts one worker for instance inst of m (argv --tag, --spec canonical, --log-level; fd 2 a
 * pipe the daemon reads (ms__sup_stderr_read), fd 3 control, fd 4 stats, fd 5 the instance's
 * door, which stays the instance's, and fd 6 a copy of m->ctor_fd when m has one: the python
 * constructor's memfd, common/ctorfd.h), links it to m and watches it in epoll.
 * MS_E_LOAD_FAILED / MS_E_IO / MS_E_LIMIT with a message. */
int ms__sup_spawn(ms__supervisor *s, ms__model *m, int inst, char *err, size_t errlen);

/* The same for a swap's new version (swap.c): a worker of spec (canonical spec_json) on door_fd
 * with the constructor memfd ctor_fd (-1: none; both not taken: the caller's), w->model set to m
 * but not yet one of m's workers (w->standby). *out: the worker record (the supervisor's). */
int ms__sup_spawn_standby(ms__supervisor *s, ms__model *m, int inst, const ms__spec *spec,
                          const json_t *spec_json, int door_fd, int ctor_fd, ms__wproc **out,
                          char *err, size_t errlen);

/* SIGTERM now, SIGKILL at now + MS__KILL_GRACE_NS (see ms__sup_timers). Idempotent. */
void ms__sup_stop(ms__supervisor *s, ms__wproc *w, int64_t now);

/* Sends SIGKILL to stopping workers past their grace; sets *next to the earliest pending SIGKILL
 * time and returns true when there is one. */
bool ms__sup_timers(ms__supervisor *s, int64_t now, int64_t *next);

/* Reads what the control socket has. Returns 0, or a negative code when the socket is at EOF or
 * broken (the caller then calls ms__sup_ctrl_close). */
int ms__sup_ctrl_fill(ms__wproc *w, char *err, size_t errlen);
/* The next whole message from the worker, or NULL. Bad framing is reported as a code. */
int ms__sup_ctrl_next(ms__wproc *w, json_t **msg, char *err, size_t errlen);
void ms__sup_ctrl_close(ms__supervisor *s, ms__wproc *w);

/* Sends a message (and descriptors) to the worker, waiting up to a second for room. */
int ms__sup_send(ms__wproc *w, const json_t *msg, const int *fds, int nfds, char *err,
                 size_t errlen);

/* waitpid(WNOHANG): 1 with *status when the worker has exited, 0 when it still runs. */
int ms__sup_reap(ms__supervisor *s, ms__wproc *w, int *status);

/* Closes every descriptor of w, unmaps its stats, unlinks and frees it. */
void ms__sup_free(ms__supervisor *s, ms__wproc *w);
/* Like ms__sup_free for a reaped worker, but the record itself stays (w->gone set) until
 * ms__sup_collect(): events of the same epoll batch may still point to it. */
void ms__sup_retire(ms__supervisor *s, ms__wproc *w);
void ms__sup_collect(ms__supervisor *s);

/* Reads what the worker wrote on its stderr (without blocking): complete lines go to the
 * daemon's log, the last bytes stay in w->err. Closes the pipe at its end. */
void ms__sup_stderr_read(ms__supervisor *s, ms__wproc *w);

#endif
