/* The worker's door and the futex calls that ring it and wait on it; the ring's one pure check.
 * See ring.h. */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "modelshare.h"
#include "util.h"

_Static_assert(sizeof(ms__ring) <= 4096u, "a ring's indices must fit in its page");
_Static_assert(sizeof(ms__slot) <= MS__SLOT_BYTES, "a slot must fit in MS__SLOT_BYTES");
_Static_assert(offsetof(ms__slot, req) % 8 == 0, "request records are 8-byte aligned");
_Static_assert(sizeof(ms__door) == MS__DOOR_BYTES, "a door is its two pages");
_Static_assert(offsetof(ms__door, hung_limit_ms) < MS__DOOR_PAGE, "trusted words in page 0");
_Static_assert(offsetof(ms__door, bell) == MS__DOOR_PAGE, "the bell page is page 1");
_Static_assert(MS__ARENA_DATA % MS__ARENA_ALIGN == 0, "tensors start aligned");
_Static_assert(MS__ARENA_DATA < MS__ARENA_MIN, "the smallest arena has room after its rings");

/* A sealed one-page memfd named name in *fd. */
static int page_create(const char *name, int *fd, char *err, size_t errlen)
{
    int f = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (f < 0)
        return ms__fail(err, errlen, errno == ENOMEM ? MS_E_NOMEM : MS_E_IO,
                        "memfd_create for a worker's door: %s", strerror(errno));
    if (ftruncate(f, MS__DOOR_PAGE) != 0 ||
        fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int e = errno;
        close(f);
        return ms__fail(err, errlen, MS_E_IO, "cannot size and seal a worker's door: %s",
                        strerror(e));
    }
    *fd = f;
    return 0;
}

/* Writes the magic into page 0, then makes it mode 0400 (a process of another uid cannot open
 * it for writing through /proc, whatever descriptor it holds) and opens it again read-only
 * through /proc/self/fd: the descriptor clients get. */
static int trusted_finish(ms__door_fds *f, char *err, size_t errlen)
{
    uint32_t magic = MS__DOOR_MAGIC;
    if (pwrite(f->rw, &magic, sizeof magic, 0) != (ssize_t)sizeof magic || fchmod(f->rw, 0400))
        return ms__fail(err, errlen, MS_E_IO, "cannot write a worker's door: %s", strerror(errno));
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", f->rw);
    f->ro = open(path, O_RDONLY | O_CLOEXEC);
    if (f->ro < 0)
        return ms__fail(err, errlen, MS_E_IO,
                        "cannot open a worker's door read-only for its clients (%s: %s; is /proc "
                        "mounted?)",
                        path, strerror(errno));
    return 0;
}

int ms__door_create(ms__door_fds *fds, char *err, size_t errlen)
{
    ms__door_fds f = {.rw = -1, .ro = -1, .bell = -1};
    int rc = page_create("modelshare-door", &f.rw, err, errlen);
    if (rc == 0)
        rc = page_create("modelshare-bell", &f.bell, err, errlen);
    if (rc == 0)
        rc = trusted_finish(&f, err, errlen);
    if (rc != 0) {
        ms__door_fds_close(&f);
        return rc;
    }
    *fds = f;
    return 0;
}

void ms__door_fds_close(ms__door_fds *fds)
{
    int *all[] = {&fds->rw, &fds->ro, &fds->bell};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i] >= 0)
            close(*all[i]);
        *all[i] = -1;
    }
}

static int page_check(int fd, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return ms__fail(err, errlen, MS_E_IO, "fstat of a door's %s: %s", what, strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_size != (off_t)MS__DOOR_PAGE)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a door's %s as a memfd of %u bytes, got a file of %lld bytes",
                        what, MS__DOOR_PAGE, (long long)st.st_size);
    return 0;
}

int ms__door_map(int fd, int bell_fd, bool trusted, ms__door **door, char *err, size_t errlen)
{
    int rc = page_check(fd, "page", err, errlen);
    if (rc == 0)
        rc = page_check(bell_fd, "bell page", err, errlen);
    if (rc != 0)
        return rc;
    /* Both pages side by side, in a reservation of the two. */
    char *d = mmap(NULL, MS__DOOR_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (d == MAP_FAILED)
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot map a door: %s", strerror(errno));
    int prot = trusted ? PROT_READ | PROT_WRITE : PROT_READ;
    if (mmap(d, MS__DOOR_PAGE, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
        mmap(d + MS__DOOR_PAGE, MS__DOOR_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
             bell_fd, 0) == MAP_FAILED) {
        int e = errno;
        munmap(d, MS__DOOR_BYTES);
        return ms__fail(err, errlen, e == EACCES ? MS_E_PROTOCOL : MS_E_NOMEM,
                        "cannot map a door: %s", strerror(e));
    }
    if (((ms__door *)d)->magic != MS__DOOR_MAGIC) {
        munmap(d, MS__DOOR_BYTES);
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected door magic 0x%08x", MS__DOOR_MAGIC);
    }
    *door = (ms__door *)d;
    return 0;
}

void ms__door_unmap(ms__door *door)
{
    if (door != NULL)
        munmap(door, MS__DOOR_BYTES);
}

bool ms__door_ring(ms__door *door)
{
    /* Sequentially consistent with the worker's "sleeping = 1; read bell; look at the rings":
     * either the worker sees our request, or we see that it sleeps, or its futex_wait sees that
     * bell moved. */
    atomic_fetch_add(&door->bell, 1);
    if (!atomic_load(&door->sleeping))
        return false;
    ms__futex_wake(&door->bell, 1);
    return true;
}

void ms__door_lost(ms__door *door)
{
    atomic_store(&door->down, 1);
    atomic_fetch_add(&door->gen, 1);
}

void ms__door_done(ms__door *door)
{
    uint32_t v = atomic_load_explicit(&door->inflight, memory_order_relaxed);
    while (v > 0 && !atomic_compare_exchange_weak_explicit(
                        &door->inflight, &v, v - 1, memory_order_relaxed, memory_order_relaxed))
        ;
}

bool ms__door_publish(ms__door *door, const ms__ring *ring)
{
    uint32_t h = atomic_load_explicit(&ring->hint, memory_order_acquire);
    if (h >= 1 && h <= MS__DOOR_HINTS) {
        /* Always the read-modify-write (never "already set, skip it"): ordered against the
         * worker's exchange of the word, it makes our tail visible to the worker that takes the
         * bit, or leaves the bit for its next look. */
        atomic_fetch_or(&door->hints[(h - 1) / 64], 1ull << ((h - 1) % 64));
    } else {
        atomic_store(&door->scan_all, 1);
    }
    return ms__door_ring(door);
}

int ms__ring_pending(uint32_t head, uint32_t tail)
{
    uint32_t n = tail - head;
    return n > MS__RING_SLOTS ? -1 : (int)n;
}

int ms__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tp, NULL, 0);
    return r < 0 && errno == ETIMEDOUT ? 1 : 0;
}

void ms__futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

void ms__spin_step(int64_t t0_ns, int64_t now_ns)
{
    if (now_ns - t0_ns < 1000)
        ms__cpu_relax();
    else
        sched_yield();
}

int64_t ms__spin_ns(int64_t def_us)
{
    double us;
    ms__env_number("MODELSHARE_SPIN_US", (double)def_us, 0, 100000, &us, NULL, 0);
    return (int64_t)(us * 1000);
}
