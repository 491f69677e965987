/*
 * Worker processes, mechanism only: spawn one from a plain exec context (ms__exec, made by
 * launch.c), watch it (pidfd, control socket and stderr in the daemon's epoll), send it messages
 * (queued, never waited for), stop it (SIGTERM, SIGKILL after a grace period), reap it. It knows
 * no model: the life cycle links a worker to its model.
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

/* A worker process as plain data (launch.c makes it): what to run, and the descriptors it gets
 * beside the supervisor's own (fd 2 a stderr pipe the daemon reads, fd 3 its control socket, fd
 * 4 its stats page). Nothing in it is taken. */
typedef struct ms__exec {
    const char *path;  /* the program */
    char *const *argv; /* NULL-terminated */
    char *const *envp; /* NULL: the daemon's environment */
    const char *cwd;   /* NULL: the daemon's working directory */
    int door_fd;       /* its fd 5: its door's page 0, read-write */
    int bell_fd;       /* its fd 7: its door's bell page */
    int ctor_fd;       /* its fd 6, -1: none */
    int inst;          /* recorded in the worker record (ms__wproc.inst) */
    /* Run as this owner (its uid, gid and groups, with no privilege left: no new privileges, no
     * ambient capabilities), not as the daemon; NULL: as the daemon. Not taken. */
    const ms__owner *as;
} ms__exec;

/* Starts one worker as x says and watches it in epoll. *out: the worker record (the
 * supervisor's), linked to no model. MS_E_LOAD_FAILED (fork) / MS_E_IO / MS_E_LIMIT /
 * MS_E_NOMEM with a message. */
int ms__sup_exec(ms__supervisor *s, const ms__exec *x, ms__wproc **out, char *err, size_t errlen);

/* SIGTERM now, SIGKILL at now + MS__KILL_GRACE_NS (see ms__sup_timers). Idempotent. */
void ms__sup_stop(ms__supervisor *s, ms__wproc *w, int64_t now);

/* SIGKILL now (a worker that does not answer: the watchdog). Idempotent. */
void ms__sup_kill(ms__supervisor *s, ms__wproc *w);

/* Sends SIGKILL to stopping workers past their grace; sets *next to the earliest pending SIGKILL
 * time and returns true when there is one. */
bool ms__sup_timers(ms__supervisor *s, int64_t now, int64_t *next);

/* Reads what the control socket has. Returns 0, or a negative code when the socket is at EOF or
 * broken (the caller then calls ms__sup_ctrl_close). */
int ms__sup_ctrl_fill(ms__wproc *w, char *err, size_t errlen);
/* The next whole message from the worker, or NULL. Bad framing is reported as a code. */
int ms__sup_ctrl_next(ms__wproc *w, json_t **msg, char *err, size_t errlen);
void ms__sup_ctrl_close(ms__supervisor *s, ms__wproc *w);

/* Queues a message (and copies of its descriptors) for the worker and writes what its socket
 * takes now, never waiting (ms__writer, as for clients); the rest goes when the socket has room
 * (EPOLLOUT: ms__sup_ctrl_flush). MS_E_WORKER_LOST (its socket is closed), MS_E_IO (it is gone,
 * or it has not read MS__WORKER_QUEUE_MAX bytes queued for it), MS_E_NOMEM, MS_E_LIMIT. */
int ms__sup_send(ms__wproc *w, const json_t *msg, const int *fds, int nfds, char *err,
                 size_t errlen);
/* Writes what is queued for w that its socket takes now; watches for room while some is left.
 * MS_E_IO when the worker is gone. */
int ms__sup_ctrl_flush(ms__wproc *w, char *err, size_t errlen);

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
