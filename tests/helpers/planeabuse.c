/*
 * ms-planeabuse: a client that attacks the shared memory it is given (the worker's door, its own
 * arena), for tests/integration/test_client_abuse.py. What it can do must harm nobody else.
 *
 *   ms-planeabuse door TAG SPEC_JSON
 *       Acquires TAG and tries to write the door's page 0 (gen, down: what the worker and the
 *       daemon trust): mprotect of its mapping to writable, mmap of the descriptor the daemon
 *       sent with PROT_WRITE, pwrite to it, a store through the mapping (in a child), and, when
 *       run as root, a child that takes another uid (65534) and tries to open the descriptor
 *       again for writing through /proc/self/fd or to chmod it. Prints one line each, "NAME
 *       refused ERRNO" or "NAME done", then winds every word of the bell page (bell, inflight,
 *       scan_all, hints) to garbage and exits without releasing anything.
 *   ms-planeabuse arena KIND TAG SPEC_JSON
 *       Acquires TAG on an arena that is not what the protocol says (KIND: "hugetlb", a memfd
 *       of MFD_HUGETLB; "unsealed", no seals; "noshrink", sealed against grow and reseal but not
 *       shrink) with a valid header. Prints "MS_E_NAME message" (what the daemon answered), "ok"
 *       when it was granted, or "skip REASON" (no huge page to write the header into).
 *   ms-planeabuse truncate TAG SPEC_JSON
 *       Acquires TAG, tries to ftruncate its arena to one page and prints "ftruncate refused
 *       ERRNO" or "ftruncate done", then runs a request: "infer ok" or "infer MS_E_NAME".
 *   ms-planeabuse fuzz TAG SPEC_JSON SEED
 *       Acquires TAG, prints "started", then until its stdin ends writes random ring entries,
 *       tails, slot states, request records and bell-page words (bell, inflight, scan_all,
 *       hints) into what it may write, ringing the worker, and prints "ok N" (N writes).
 */
#include <modelshare.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include "../../src/common/arena.h"
#include "../../src/common/ring.h"
#include "../../src/lib/call.h"
#include "../../src/lib/internal.h"

static int open_one(const char *tag, const char *spec, ms_client **c, ms_model **m)
{
    int rc = ms_connect(NULL, c);
    if (rc == 0)
        rc = ms_acquire(*c, tag, spec, m);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), rc == 0 ? "" : ms_errmsg(*c));
        return 1;
    }
    return 0;
}

static void say(const char *name, int r)
{
    if (r == 0)
        printf("%s done\n", name);
    else
        printf("%s refused %s\n", name, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
    fflush(stdout);
}

/* Acquires tag on the arena fd straight through the protocol: the door descriptors the daemon
 * sends back land in doors (*ndoors). Returns 0, or the error code (message in ms_errmsg). */
static int raw_acquire(ms_client *c, const char *tag, int fd, int *doors, int *ndoors)
{
    json_t *req = json_pack("{s:s, s:s, s:n, s:i}", "op", "acquire", "tag", tag, "spec", "nfds", 1);
    json_t *reply = NULL;
    int rc = ms__lib_call(c, req, &fd, 1, &reply, doors, ndoors, MS__FDS_MAX);
    json_decref(req);
    json_decref(reply);
    return rc;
}

/* In a child: r is what fn did. */
static int in_child(int (*fn)(void *), void *arg, int *sig)
{
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        _exit(fn(arg) == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    *sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int store_gen(void *arg)
{
    ms__door *d = arg;
    atomic_fetch_add(&d->gen, 1);
    atomic_store(&d->down, 1);
    return 0;
}

/* As uid 65534: opens the read-only descriptor again for writing, or makes it writable. */
static int other_uid_reopen(void *arg)
{
    int fd = *(int *)arg;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
        return 2;
    int w = open(path, O_RDWR | O_CLOEXEC);
    if (w >= 0)
        return 0;
    return fchmod(fd, 0600) == 0 ? 0 : 1;
}

/* Garbage in every word of the bell page. */
static void wind_bell_page(ms__door *d)
{
    atomic_store(&d->bell, 0);
    atomic_store(&d->inflight, UINT32_MAX);
    atomic_store(&d->scan_all, 0);
    for (unsigned w = 0; w < MS__DOOR_HINTS / 64; w++)
        atomic_store(&d->hints[w], 0);
}

static int door(const char *tag, const char *spec)
{
    ms_client *c;
    ms_model *m;
    if (open_one(tag, spec, &c, &m) != 0)
        return 1;
    ms__door *d = m->inst[0].door;
    say("mprotect", mprotect(d, MS__DOOR_PAGE, PROT_READ | PROT_WRITE));
    int afd, doors[MS__FDS_MAX], nd = 0;
    void *base;
    char err[MS__ERRLEN];
    if (ms__arena_create(MS__ARENA_MIN, &afd, &base, err, sizeof err) != 0 ||
        raw_acquire(c, tag, afd, doors, &nd) != 0 || nd < 2) {
        printf("error raw acquire: %s\n", ms_errmsg(c));
        return 1;
    }
    void *p = mmap(NULL, MS__DOOR_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, doors[0], 0);
    say("mmap", p == MAP_FAILED ? -1 : 0);
    uint32_t v = 1;
    say("pwrite", pwrite(doors[0], &v, sizeof v, 0) == (ssize_t)sizeof v ? 0 : -1);
    int sig = 0;
    int r = in_child(store_gen, d, &sig);
    if (sig != 0)
        printf("store refused %s\n", sigabbrev_np(sig));
    else
        printf("store %s\n", r == 0 ? "done" : "failed");
    if (geteuid() == 0) {
        r = in_child(other_uid_reopen, &doors[0], &sig);
        printf("reopen %s\n", r == 0 ? "done" : r == 1 ? "refused" : "cannot-setuid");
    }
    wind_bell_page(d);
    printf("ok\n");
    fflush(stdout);
    _exit(0);
}

/* A memfd of MS__ARENA_MIN bytes with a valid header, made with flags and sealed with seals. */
static int odd_arena(unsigned flags, int seals, int *fd)
{
    *fd = memfd_create("modelshare-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING | flags);
    if (*fd < 0 || ftruncate(*fd, MS__ARENA_MIN) != 0)
        return -1;
    ms__arena_header *h = mmap(NULL, MS__ARENA_MIN, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (h == MAP_FAILED)
        return -1;
    h->magic = MS__ARENA_MAGIC;
    h->version = MS_PROTOCOL_VERSION;
    h->capacity = MS__ARENA_MIN;
    munmap(h, MS__ARENA_MIN);
    return seals != 0 ? fcntl(*fd, F_ADD_SEALS, seals) : 0;
}

static int arena(const char *kind, const char *tag)
{
    int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, fd = -1;
    unsigned flags = 0;
    if (strcmp(kind, "hugetlb") == 0)
        flags = MFD_HUGETLB;
    else if (strcmp(kind, "unsealed") == 0)
        seals = 0;
    else if (strcmp(kind, "noshrink") == 0)
        seals = F_SEAL_GROW | F_SEAL_SEAL;
    if (odd_arena(flags, seals, &fd) != 0) {
        printf("skip cannot make a %s arena with its header written: %s\n", kind, strerror(errno));
        return 0;
    }
    ms_client *c;
    int rc = ms_connect(NULL, &c);
    int doors[MS__FDS_MAX], nd = 0;
    if (rc == 0)
        rc = raw_acquire(c, tag, fd, doors, &nd);
    if (rc == 0)
        printf("ok\n");
    else
        printf("%s %s\n", ms_errname(rc), ms_errmsg(c));
    return 0;
}

static int truncate_arena(const char *tag, const char *spec)
{
    ms_client *c;
    ms_model *m;
    if (open_one(tag, spec, &c, &m) != 0)
        return 1;
    say("ftruncate", ftruncate(m->arena_fd, 4096));
    ms_tensor *x, *y;
    int64_t shape[2] = {2, m->sig_in.shape[1]};
    int rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x);
    if (rc == 0) {
        memset(ms_tensor_data(x), 0, ms_tensor_nbytes(x));
        rc = ms_infer(m, x, &y);
    }
    printf("infer %s\n", rc == 0 ? "ok" : ms_errname(rc));
    return ms_release(m) != 0;
}

/* One random write into what this client may write. */
static void fuzz_one(ms_model *m, unsigned *seed)
{
    ms__ring *rg = m->inst[0].ring;
    ms__door *d = m->inst[0].door;
    unsigned r = (unsigned)rand_r(seed), s = (unsigned)rand_r(seed) % MS__RING_SLOTS;
    ms__slot *sl = ms__slot_of(m->arena_base, 0, s);
    switch (r % 8) {
    case 0:
        atomic_fetch_add(&rg->tail, (uint32_t)rand_r(seed) % 80);
        break;
    case 1:
        atomic_store(&rg->tail, (uint32_t)rand_r(seed));
        break;
    case 2:
        atomic_store(&rg->entries[s], r % 3 ? s : (uint32_t)rand_r(seed));
        break;
    case 3:
        for (size_t i = 0; i < sizeof sl->req; i++)
            ((unsigned char *)&sl->req)[i] = (unsigned char)rand_r(seed);
        atomic_store(&sl->gen, r % 2 ? atomic_load(&d->gen) : (uint32_t)rand_r(seed));
        atomic_store(&sl->state, (uint32_t)rand_r(seed) % 4);
        break;
    case 4:
        atomic_store(&d->bell, (uint32_t)rand_r(seed));
        break;
    case 5:
        atomic_store(&d->inflight, (uint32_t)rand_r(seed));
        atomic_store(&d->scan_all, (uint32_t)rand_r(seed) % 2);
        break;
    case 6:
        atomic_store(&d->hints[s], r % 2 ? 0 : ((uint64_t)rand_r(seed) << 32) | r);
        break;
    default:
        ms__door_publish(d, rg);
        break;
    }
}

static int fuzz(const char *tag, const char *spec, unsigned seed)
{
    ms_client *c;
    ms_model *m;
    if (open_one(tag, spec, &c, &m) != 0)
        return 1;
    printf("started\n");
    fflush(stdout);
    unsigned long n = 0;
    struct pollfd in = {.fd = 0, .events = POLLIN};
    for (;;) {
        for (int i = 0; i < 256; i++, n++)
            fuzz_one(m, &seed);
        if (poll(&in, 1, 0) > 0)
            break;
        usleep(200); /* let the worker and the checked clients run */
    }
    printf("ok %lu\n", n);
    fflush(stdout);
    _exit(0);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "door") == 0)
        return door(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "arena") == 0)
        return arena(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "truncate") == 0)
        return truncate_arena(argv[2], argv[3]);
    if (argc == 5 && strcmp(argv[1], "fuzz") == 0)
        return fuzz(argv[2], argv[3], (unsigned)strtoul(argv[4], NULL, 10));
    fprintf(stderr, "usage: see the comment at the top of tests/helpers/planeabuse.c\n");
    return 2;
}
