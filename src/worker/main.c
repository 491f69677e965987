/*
 * The worker: hosts one model instance through one backend and serves every client the daemon
 * attaches to it. ms__worker_main() is the program; modelshare-worker (program.c) runs it with
 * the built-in backends, `python -m modelshare.worker` with the python backend.
 *
 *   modelshare-worker --tag TAG --spec JSON [--log-level L]
 *   fd 3: control socket to the daemon (proto.h); fd 4: stats memfd (stats.h); fds 5 and 7:
 *   the worker's door (ring.h: page 0 read-write, the bell page), which its clients ring; fd 6,
 *   for a python spec whose constructor is in a memfd (python.constructor_size): that memfd
 *   (common/ctorfd.h), which the python backend's _load reads and closes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker.h"
#include "../common/log.h"
#include "../common/procmem.h"
#include "../common/signames.h"
#include "../common/proto.h"
#include "../common/spec.h"
#include "../common/util.h"
#include "modelshare.h"

static void usage(void)
{
    fprintf(stderr, "usage: modelshare-worker --tag TAG --spec JSON [--log-level "
                    "error|warn|info|debug]\n"
                    "  (started by modelshared with fd 3 = control socket, fd 4 = stats memfd,\n"
                    "   fds 5 and 7 = door memfds)\n");
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

/* Whether our parent is still the process at the other end of the control socket (the daemon
 * that made it): a worker re-parented to init or to a subreaper is an orphan. Without a control
 * socket, whether we were re-parented to init. */
static bool parent_is_daemon(void)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(MS__WORKER_CTRL_FD, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return getppid() != 1;
    return cred.pid == getppid();
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* The command line: --tag TAG --spec JSON [--log-level L]. Returns -1 to go on, else the exit
 * status (0 after --help, 2 on a usage error). */
static int parse_args(int argc, char **argv, const char **tag, const char **spec_text, int *level)
{
    static const struct option opts[] = {{"tag", required_argument, NULL, 't'},
                                         {"spec", required_argument, NULL, 's'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            *tag = optarg;
            break;
        case 's':
            *spec_text = optarg;
            break;
        case 'l':
            *level = ms__log_level_parse(optarg);
            if (*level < 0) {
                fprintf(stderr,
                        "modelshare-worker: --log-level: expected error, warn, info or debug, "
                        "got \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case 'h':
            usage();
            return 0;
        case ':':
            fprintf(stderr, "modelshare-worker: %s needs a value\n", argv[optind - 1]);
            usage();
            return 2;
        default:
            fprintf(stderr, "modelshare-worker: unknown argument \"%s\"\n", argv[optind - 1]);
            usage();
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "modelshare-worker: unknown argument \"%s\"\n", argv[optind]);
        usage();
        return 2;
    }
    if (*tag == NULL || *spec_text == NULL) {
        fprintf(stderr, "modelshare-worker: --tag and --spec are required\n");
        usage();
        return 2;
    }
    return -1;
}

/* Takes the stats page on fd 4 (optional: without it the counters are off) and the door on fds 5
 * and 7, all close-on-exec from here on, the descriptors closed once mapped; fd 3 is the control
 * socket. Returns 0, or -1 when fd 3 or the door is missing (logged). */
static int take_fds(const char *tag, ms__stats **stats)
{
    char err[MS__ERRLEN];
    if (!fd_open(MS__WORKER_CTRL_FD)) {
        ms__log_error("worker for \"%s\": no control socket on fd %d (start it from modelshared)",
                      tag, MS__WORKER_CTRL_FD);
        return -1;
    }
    /* Inherited without close-on-exec: nothing the backend starts may keep them. */
    fcntl(MS__WORKER_CTRL_FD, F_SETFD, FD_CLOEXEC);
    *stats = NULL;
    if (fd_open(MS__WORKER_STATS_FD)) {
        fcntl(MS__WORKER_STATS_FD, F_SETFD, FD_CLOEXEC);
        if (ms__stats_map(MS__WORKER_STATS_FD, stats) < 0) {
            ms__log_warn("worker for \"%s\": cannot map the stats page on fd %d; counters off", tag,
                         MS__WORKER_STATS_FD);
            *stats = NULL;
        }
        close(MS__WORKER_STATS_FD);
    } else {
        ms__log_warn("worker for \"%s\": no stats page on fd %d; counters off", tag,
                     MS__WORKER_STATS_FD);
    }

    if (!fd_open(MS__WORKER_DOOR_FD) || !fd_open(MS__WORKER_BELL_FD)) {
        ms__log_error("worker for \"%s\": no door on fds %d and %d (start it from modelshared)",
                      tag, MS__WORKER_DOOR_FD, MS__WORKER_BELL_FD);
        return -1;
    }
    fcntl(MS__WORKER_DOOR_FD, F_SETFD, FD_CLOEXEC);
    fcntl(MS__WORKER_BELL_FD, F_SETFD, FD_CLOEXEC);
    int rc = ms__door_map(MS__WORKER_DOOR_FD, MS__WORKER_BELL_FD, true, &the_door, err, sizeof err);
    close(MS__WORKER_DOOR_FD);
    close(MS__WORKER_BELL_FD);
    if (rc < 0) {
        ms__log_error("worker for \"%s\": %s", tag, err);
        return -1;
    }
    return 0;
}

/* SIGTERM and SIGINT reach the loop through a flag and the door. Not signalfd: libraries
 * (OpenBLAS) start threads before main() that would not block the signals, and a
 * process-directed signal can land on any of them. A handler runs on whichever thread gets it. */
static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A daemon that went away is an error on the control socket, not SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
}

/* The model, loaded. */
typedef struct loaded {
    ms__spec spec;
    const ms__backend_ops *be;
    void *state;
    uint64_t memory; /* bytes the load added to the worker's proportional set size */
    int64_t t0;      /* when the backend's load began (ms__now_ns) */
} loaded;

/* Parses the spec, finds its backend (opener) and loads the model, measuring what the load took.
 * On failure the daemon is told (and the error logged) and -1 returned, with nothing to free. */
static int load(const char *tag, const char *spec_text, ms__backend_opener opener, loaded *m)
{
    char err[MS__ERRLEN];
    int r = ms__spec_parse(spec_text, &m->spec, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": %s", tag, err);
        send_failed(MS__WORKER_CTRL_FD, r, err);
        return -1;
    }
    /* "cuda:N" names the card NVML (and so the daemon's budget) calls N. */
    setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", 0);
    m->be = NULL;
    r = opener(&m->spec, &m->be, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": %s", tag, err);
        send_failed(MS__WORKER_CTRL_FD, r, err);
        ms__spec_free(&m->spec);
        return -1;
    }
    uint64_t before = 0, after = 0;
    if (ms__proc_pss(0, &before) < 0)
        before = 0;
    m->state = NULL;
    m->t0 = ms__now_ns();
    r = m->be->load(&m->spec, &m->state, err, sizeof err);
    if (r < 0) {
        ms__log_error("model \"%s\": load failed: %s", tag, err);
        send_failed(MS__WORKER_CTRL_FD, r, err);
        ms__spec_free(&m->spec);
        return -1;
    }
    ms__progress_phase(MS__PHASE_WARMING);
    if (ms__proc_pss(0, &after) < 0)
        after = before;
    m->memory = after > before ? after - before : 0;
    return 0;
}

/* Adds the model's named inputs and outputs (named: taken, NULL when it does not say them) to
 * its signature, when they are what clients read (signames.h); else logs why they are left out. */
static void add_names(const char *tag, json_t *sig, json_t *named)
{
    char err[MS__ERRLEN];
    ms__sig_entry e[MS__MF_MAX];
    int n;
    if (named == NULL)
        return;
    if (ms__sig_list_from_json(named, "inputs", e, &n, err, sizeof err) < 0 ||
        ms__sig_list_from_json(named, "outputs", e, &n, err, sizeof err) < 0)
        ms__log_warn("model \"%s\": its inputs' and outputs' names are left out of its "
                     "signature: %s",
                     tag, err);
    else
        json_object_update(sig, named);
    json_decref(named);
}

/* Tells the daemon the model is ready: its measured memory and its signature. 0 or -1 (logged). */
static int send_ready(const char *tag, const loaded *m)
{
    char err[MS__ERRLEN];
    ms__sig sin, sout;
    memset(&sin, 0, sizeof sin);
    memset(&sout, 0, sizeof sout);
    m->be->signature(m->state, &sin, &sout);
    json_t *sig = ms__sig_to_json(&sin, &sout);
    if (sig != NULL && m->be->signature_named != NULL)
        add_names(tag, sig, m->be->signature_named(m->state));
    json_t *ready = json_pack("{s:s, s:I, s:o}", "op", "ready", "memory_bytes",
                              (json_int_t)m->memory, "signature", sig ? sig : json_null());
    if (ready == NULL ||
        ms__msg_send(MS__WORKER_CTRL_FD, ready, NULL, 0, 5000, err, sizeof err) < 0) {
        ms__log_error("model \"%s\": cannot tell the daemon it is ready: %s", tag,
                      ready ? err : "out of memory");
        json_decref(ready);
        return -1;
    }
    json_decref(ready);
    return 0;
}

/* Serves the loaded model until told to stop. Returns the loop's result (ms__worker_serve). */
static int serve(const char *tag, const loaded *m, ms__stats *stats)
{
    ms__worker w = {
        .tag = tag,
        .backend = m->be,
        .state = m->state,
        .stats = stats,
        .door = the_door,
        .ctrl_fd = MS__WORKER_CTRL_FD,
        .stop = &stop_flag,
        .max_batch = ms__spec_run_rows(&m->spec),
        .batch_sizes = m->spec.batch_sizes,
        .nbatch_sizes = m->spec.nbatch_sizes,
        .pad_dim = m->spec.pad.dim,
        .batch_delay_ns = (int64_t)m->spec.batch_delay_us * 1000,
        .batchable = m->spec.batchable,
        .spin_ns = ms__spin_ns(MS__WORKER_SPIN_US),
        .threads = ms__worker_threads(&m->spec, m->be),
    };
    if (m->spec.thread_safe && !m->be->concurrent)
        ms__log_info("model \"%s\": the %s backend runs one batch at a time (thread_safe is "
                     "for backends that may be called concurrently: python, identity)",
                     tag, m->be->name);
    return ms__worker_serve(&w);
}

int ms__worker_main(int argc, char **argv, ms__backend_opener opener)
{
    const char *tag = NULL, *spec_text = NULL;
    int level = MS_LOG_INFO;
    int rc = parse_args(argc, argv, &tag, &spec_text, &level);
    if (rc >= 0)
        return rc;

    /* Die with the daemon (also set before exec). If it is already gone, stop now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || !parent_is_daemon())
        return 1;
    /* Started as a member of a group daemon (docs/SECURITY.md): the arenas it will map are other
     * members' too, and no other process of this uid may read them through /proc. */
    const char *nodump = getenv("MODELSHARE_WORKER_NODUMP");
    if (nodump != NULL && strcmp(nodump, "1") == 0 && prctl(PR_SET_DUMPABLE, 0) != 0)
        return 1;
    ms__log_init("modelshare-worker", level);
    ms__stats *stats = NULL;
    if (take_fds(tag, &stats) < 0)
        return 1;
    catch_signals();
    /* The backend tells its load's phase and bytes read (status, top, `load`'s progress line). */
    ms__progress_attach(stats);

    loaded m;
    if (load(tag, spec_text, opener, &m) < 0)
        return 1;
    if (stats)
        atomic_store_explicit(&stats->memory_bytes, m.memory, memory_order_relaxed);
    ms__progress_phase(MS__PHASE_READY);
    if (send_ready(tag, &m) < 0) {
        m.be->unload(m.state);
        ms__spec_free(&m.spec);
        return 1;
    }
    ms__log_info("model \"%s\" ready: backend %s, %llu bytes, loaded in %.3f s", tag, m.be->name,
                 (unsigned long long)m.memory, (double)(ms__now_ns() - m.t0) / 1e9);

    int r = serve(tag, &m, stats);
    m.be->unload(m.state);
    ms__spec_free(&m.spec);
    ms__progress_attach(NULL);
    if (stats)
        ms__stats_unmap(stats);
    return r < 0 ? 1 : 0;
}
