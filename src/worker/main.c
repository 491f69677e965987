/*
 * The worker: hosts one model instance through one backend and serves every client the daemon
 * attaches to it. ms__worker_main() is the program; modelshare-worker (program.c) runs it with
 * the built-in backends, `python -m modelshare.worker` with the python backend.
 *
 *   modelshare-worker --tag TAG --spec JSON [--log-level L]
 *   fd 3: control socket to the daemon (proto.h); fd 4: stats memfd (stats.h); fd 5: the
 *   worker's door (ring.h), which its clients ring.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "worker.h"
#include "../common/log.h"
#include "../common/procmem.h"
#include "../common/proto.h"
#include "../common/spec.h"
#include "../common/util.h"
#include "modelshare.h"

static void usage(void)
{
    fprintf(stderr, "usage: modelshare-worker --tag TAG --spec JSON [--log-level "
                    "error|warn|info|debug]\n"
                    "  (started by modelshared with fd 3 = control socket, fd 4 = stats memfd,\n"
                    "   fd 5 = door memfd)\n");
}

/* Tells the daemon the load failed; the worker exits 1 after this. */
static void send_failed(int fd, int code, const char *msg)
{
    char err[MS__ERRLEN];
    json_t *j = json_pack("{s:s, s:i, s:s}", "op", "failed", "code", code, "error", msg);
    if (j == NULL || ms__msg_send(fd, j, NULL, 0, 5000, err, sizeof err) < 0)
        ms__log_error("cannot tell the daemon that the load failed: %s", j ? err : "out of memory");
    json_decref(j);
}

/* SIGTERM and SIGINT: set the flag the loop checks, and ring the door so that a sleeping loop
 * wakes up to see it. Both are async-signal-safe (an atomic add and a futex call). */
static volatile sig_atomic_t stop_flag;
static ms__door *the_door;

static void on_stop_signal(int signo)
{
    int saved = errno;
    (void)signo;
    stop_flag = 1;
    if (the_door != NULL)
        ms__door_ring(the_door);
    errno = saved;
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

int ms__worker_main(int argc, char **argv, ms__backend_opener opener)
{
    const char *tag = NULL, *spec_text = NULL;
    int level = MS_LOG_INFO;
    char err[MS__ERRLEN];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "--tag") == 0 || strcmp(a, "--spec") == 0 ||
             strcmp(a, "--log-level") == 0) &&
            i + 1 >= argc) {
            fprintf(stderr, "modelshare-worker: %s needs a value\n", a);
            usage();
            return 2;
        }
        if (strcmp(a, "--tag") == 0) {
            tag = argv[++i];
        } else if (strcmp(a, "--spec") == 0) {
            spec_text = argv[++i];
        } else if (strcmp(a, "--log-level") == 0) {
            level = ms__log_level_parse(argv[++i]);
            if (level < 0) {
                fprintf(stderr,
                        "modelshare-worker: --log-level: expected error, warn, info or debug, "
                        "got \"%s\"\n",
                        argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        } else {
            fprintf(stderr, "modelshare-worker: unknown argument \"%s\"\n", a);
            usage();
            return 2;
        }
    }
    if (tag == NULL || spec_text == NULL) {
        fprintf(stderr, "modelshare-worker: --tag and --spec are required\n");
        usage();
        return 2;
    }

    /* Die with the daemon. If it is already gone (we were re-parented), stop now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
        return 1;
    ms__log_init("modelshare-worker", level);

    if (!fd_open(MS__WORKER_CTRL_FD)) {
        ms__log_error("worker for \"%s\": no control socket on fd %d (start it from modelshared)",
                      tag, MS__WORKER_CTRL_FD);
        return 1;
    }
    /* Inherited without close-on-exec: nothing the backend starts may keep them. */
    fcntl(MS__WORKER_CTRL_FD, F_SETFD, FD_CLOEXEC);
    ms__stats *stats = NULL;
    if (fd_open(MS__WORKER_STATS_FD)) {
        fcntl(MS__WORKER_STATS_FD, F_SETFD, FD_CLOEXEC);
        if (ms__stats_map(MS__WORKER_STATS_FD, &stats) < 0) {
            ms__log_warn("worker for \"%s\": cannot map the stats page on fd %d; counters off", tag,
                         MS__WORKER_STATS_FD);
            stats = NULL;
        }
        close(MS__WORKER_STATS_FD);
    } else {
        ms__log_warn("worker for \"%s\": no stats page on fd %d; counters off", tag,
                     MS__WORKER_STATS_FD);
    }

    if (!fd_open(MS__WORKER_DOOR_FD)) {
        ms__log_error("worker for \"%s\": no door on fd %d (start it from modelshared)", tag,
                      MS__WORKER_DOOR_FD);
        return 1;
    }
    fcntl(MS__WORKER_DOOR_FD, F_SETFD, FD_CLOEXEC);
    if (ms__door_map(MS__WORKER_DOOR_FD, &the_door, err, sizeof err) < 0) {
        ms__log_error("worker for \"%s\": %s", tag, err);
        return 1;
    }
    close(MS__WORKER_DOOR_FD);

    /* SIGTERM and SIGINT reach the loop through a flag and the door. Not signalfd: libraries
     * (OpenBLAS) start threads before main() that would not block the signals, and a
     * process-directed signal can land on any of them. A handler runs on whichever thread gets
     * it. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A daemon that went away is an error on the control socket, not SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    ms__spec spec;
    int r = ms__spec_parse(spec_text, &spec, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": %s", tag, err);
        send_failed(MS__WORKER_CTRL_FD, r, err);
        return 1;
    }
    /* "cuda:N" names the card NVML (and so the daemon's budget) calls N. */
    setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", 0);
    const ms__backend_ops *be = NULL;
    r = opener(&spec, &be, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": %s", tag, err);
        send_failed(MS__WORKER_CTRL_FD, r, err);
        ms__spec_free(&spec);
        return 1;
    }

    uint64_t before = 0, after = 0;
    if (ms__proc_pss(0, &before) < 0)
        before = 0;
    void *state = NULL;
    int64_t t0 = ms__now_ns();
    r = be->load(&spec, &state, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": load failed: %s", tag, err);
        send_failed(MS__WORKER_CTRL_FD, r, err);
        ms__spec_free(&spec);
        return 1;
    }
    if (ms__proc_pss(0, &after) < 0)
        after = before;
    uint64_t memory = after > before ? after - before : 0;
    if (stats)
        atomic_store_explicit(&stats->memory_bytes, memory, memory_order_relaxed);

    ms__sig sin, sout;
    memset(&sin, 0, sizeof sin);
    memset(&sout, 0, sizeof sout);
    be->signature(state, &sin, &sout);
    json_t *sig = ms__sig_to_json(&sin, &sout);
    json_t *ready = json_pack("{s:s, s:I, s:o}", "op", "ready", "memory_bytes", (json_int_t)memory,
                              "signature", sig ? sig : json_null());
    if (ready == NULL ||
        ms__msg_send(MS__WORKER_CTRL_FD, ready, NULL, 0, 5000, err, sizeof err) < 0) {
        ms__log_error("model \"%s\": cannot tell the daemon it is ready: %s", tag,
                      ready ? err : "out of memory");
        json_decref(ready);
        be->unload(state);
        ms__spec_free(&spec);
        return 1;
    }
    json_decref(ready);
    ms__log_info("model \"%s\" ready: backend %s, %llu bytes, loaded in %.3f s", tag, be->name,
                 (unsigned long long)memory, (double)(ms__now_ns() - t0) / 1e9);

    ms__worker w = {
        .tag = tag,
        .backend = be,
        .state = state,
        .stats = stats,
        .door = the_door,
        .ctrl_fd = MS__WORKER_CTRL_FD,
        .stop = &stop_flag,
        .max_batch = spec.max_batch,
        .batch_delay_ns = (int64_t)spec.batch_delay_us * 1000,
        .batchable = spec.batchable,
        .spin_ns = ms__spin_ns(MS__WORKER_SPIN_US),
    };
    r = ms__worker_serve(&w);
    be->unload(state);
    ms__spec_free(&spec);
    if (stats)
        ms__stats_unmap(stats);
    return r < 0 ? 1 : 0;
}
