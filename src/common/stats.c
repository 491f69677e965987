/* Worker counters in one page of shared memory, created by the daemon. */
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "modelshare.h"

#define STATS_SIZE 4096u

_Static_assert(sizeof(ms__stats) <= STATS_SIZE, "stats must fit in one page");

int ms__stats_create(int *fd, ms__stats **stats)
{
    int f = memfd_create("modelshare-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (f < 0)
        return errno == ENOMEM ? MS_E_NOMEM : MS_E_IO;
    /* Sealed at one page: whoever holds the fd cannot truncate it under the daemon's reads. */
    if (ftruncate(f, STATS_SIZE) != 0 ||
        fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(f);
        return MS_E_IO;
    }
    void *p = mmap(NULL, STATS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
        close(f);
        return MS_E_NOMEM;
    }
    ms__stats *s = p;
    s->magic = MS__STATS_MAGIC;
    s->pad = 0;
    atomic_store(&s->requests, 0);
    atomic_store(&s->batches, 0);
    atomic_store(&s->rows, 0);
    atomic_store(&s->errors, 0);
    atomic_store(&s->busy_ns, 0);
    atomic_store(&s->memory_bytes, 0);
    *fd = f;
    *stats = s;
    return 0;
}

int ms__stats_map(int fd, ms__stats **stats)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return MS_E_IO;
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)STATS_SIZE)
        return MS_E_PROTOCOL;
    void *p = mmap(NULL, STATS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return MS_E_NOMEM;
    ms__stats *s = p;
    if (s->magic != MS__STATS_MAGIC) {
        munmap(p, STATS_SIZE);
        return MS_E_PROTOCOL;
    }
    *stats = s;
    return 0;
}

void ms__stats_unmap(ms__stats *stats)
{
    if (stats != NULL)
        munmap(stats, STATS_SIZE);
}
