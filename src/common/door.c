/* The worker's door and the futex calls that ring it and wait on it; the ring's one pure check.
 * See ring.h. */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
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
_Static_assert(sizeof(ms__door) <= MS__DOOR_BYTES, "a door must fit in its page");
_Static_assert(MS__ARENA_DATA % MS__ARENA_ALIGN == 0, "tensors start aligned");
_Static_assert(MS__ARENA_DATA < MS__ARENA_MIN, "the smallest arena has room after its rings");

int ms__door_create(int *fd, char *err, size_t errlen)
{
    int f = memfd_create("modelshare-door", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (f < 0)
        return ms__fail(err, errlen, errno == ENOMEM ? MS_E_NOMEM : MS_E_IO,
                        "memfd_create for a worker's door: %s", strerror(errno));
    if (ftruncate(f, MS__DOOR_BYTES) != 0 ||
        fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int e = errno;
        close(f);
        return ms__fail(err, errlen, MS_E_IO, "cannot size and seal a worker's door: %s",
                        strerror(e));
    }
    ms__door *d = mmap(NULL, MS__DOOR_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (d == MAP_FAILED) {
        int e = errno;
        close(f);
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot map a worker's door: %s", strerror(e));
    }
    d->magic = MS__DOOR_MAGIC;
    munmap(d, MS__DOOR_BYTES);
    *fd = f;
    return 0;
}

int ms__door_map(int fd, ms__door **door, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return ms__fail(err, errlen, MS_E_IO, "fstat of a door: %s", strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_size != (off_t)MS__DOOR_BYTES)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected a door memfd of %u bytes, got a file of %lld bytes",
                        MS__DOOR_BYTES, (long long)st.st_size);
    ms__door *d = mmap(NULL, MS__DOOR_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (d == MAP_FAILED)
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot map a door: %s", strerror(errno));
    if (d->magic != MS__DOOR_MAGIC) {
        munmap(d, MS__DOOR_BYTES);
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected door magic 0x%08x", MS__DOOR_MAGIC);
    }
    *door = d;
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
