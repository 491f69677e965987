/* A client's arena: a sealed memfd shared by the client and the worker of one model lease. */
#include "arena.h"
#include "fdlimit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "env.h"
#include "modelshare.h"
#include "util.h"

#define ARENA_VERSION 4u
#define ARENA_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

_Static_assert(sizeof(ms__arena_header) <= MS__ARENA_HEADER, "arena header must fit its page");

int ms__arena_create(uint64_t capacity, int *fd, void **base, char *err, size_t errlen)
{
    if (capacity < MS__ARENA_MIN || capacity > MS__ARENA_MAX)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "arena capacity must be %llu to %llu bytes, got %llu",
                        (unsigned long long)MS__ARENA_MIN, (unsigned long long)MS__ARENA_MAX,
                        (unsigned long long)capacity);
    if (capacity > SIZE_MAX || capacity % MS__ARENA_ALIGN != 0)
        return ms__fail(err, errlen, MS_E_INVAL,
                        "arena capacity must be a multiple of %u bytes, got %llu", MS__ARENA_ALIGN,
                        (unsigned long long)capacity);
    int f = memfd_create("modelshare-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (f < 0 && (errno == EMFILE || errno == ENFILE))
        return ms__fd_limit_fail(err, errlen, "memfd_create for the arena failed",
                                 errno == EMFILE ? "this process" : "the system (fs.file-max)",
                                 errno == EMFILE ? ms__fd_limit(0) : -1);
    if (f < 0)
        return ms__fail(err, errlen, errno == ENOMEM ? MS_E_NOMEM : MS_E_IO,
                        "memfd_create for the arena failed: %s", strerror(errno));
    if (ftruncate(f, (off_t)capacity) != 0) {
        int e = errno;
        close(f);
        return ms__fail(err, errlen, MS_E_IO, "cannot size the arena to %llu bytes: %s",
                        (unsigned long long)capacity, strerror(e));
    }
    if (fcntl(f, F_ADD_SEALS, ARENA_SEALS) != 0) {
        int e = errno;
        close(f);
        return ms__fail(err, errlen, MS_E_IO, "cannot seal the arena: %s", strerror(e));
    }
    void *p =
        mmap(NULL, (size_t)capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, f, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(f);
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot map an arena of %llu bytes: %s",
                        (unsigned long long)capacity, strerror(e));
    }
    ms__arena_header *h = p;
    h->magic = MS__ARENA_MAGIC;
    h->version = ARENA_VERSION;
    h->capacity = capacity;
    atomic_store(&h->state, MS__ARENA_LIVE);
    *fd = f;
    *base = p;
    return 0;
}

/* Checks that fd is a sealed memfd of an acceptable size; *size is its size. A memfd of
 * hugetlbfs (MFD_HUGETLB) is refused: its pages come from a pool that can run dry under a mapping
 * (SIGBUS in the worker), and its mappings are huge-page sized. */
static int arena_check_fd(int fd, uint64_t *size, char *err, size_t errlen)
{
    struct stat st;
    struct statfs fs;
    if (fstat(fd, &st) != 0 || fstatfs(fd, &fs) != 0)
        return ms__fail(err, errlen, MS_E_IO, "fstat of the arena failed: %s", strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected the arena to be a memfd (regular file), got mode %o",
                        (unsigned)st.st_mode);
    if ((unsigned long)fs.f_type != (unsigned long)TMPFS_MAGIC)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected the arena to be a memfd of tmpfs (filesystem magic 0x%lx), got "
                        "filesystem magic 0x%lx%s",
                        (unsigned long)TMPFS_MAGIC, (unsigned long)fs.f_type,
                        (unsigned long)fs.f_type == (unsigned long)HUGETLBFS_MAGIC
                            ? " (hugetlbfs: MFD_HUGETLB arenas are refused)"
                            : "");
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected the arena to be a sealable memfd, F_GET_SEALS failed: %s",
                        strerror(errno));
    if ((seals & ARENA_SEALS) != ARENA_SEALS)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected the arena sealed against shrink, grow and reseal (seals 0x%x), "
                        "got seals 0x%x",
                        (unsigned)ARENA_SEALS, (unsigned)seals);
    uint64_t sz = (uint64_t)st.st_size;
    if (st.st_size < 0 || sz < MS__ARENA_MIN || sz > MS__ARENA_MAX || sz > SIZE_MAX)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "expected an arena of %llu to %llu bytes, got %lld bytes",
                        (unsigned long long)MS__ARENA_MIN, (unsigned long long)MS__ARENA_MAX,
                        (long long)st.st_size);
    *size = sz;
    return 0;
}

static int arena_check_header(const ms__arena_header *h, uint64_t size, char *err, size_t errlen)
{
    if (h->magic != MS__ARENA_MAGIC)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected arena magic 0x%08x, got 0x%08x",
                        MS__ARENA_MAGIC, h->magic);
    if (h->version != ARENA_VERSION)
        return ms__fail(err, errlen, MS_E_PROTOCOL, "expected arena version %u, got %u",
                        ARENA_VERSION, h->version);
    if (h->capacity != size)
        return ms__fail(err, errlen, MS_E_PROTOCOL,
                        "arena header says %llu bytes but the file has %llu bytes",
                        (unsigned long long)h->capacity, (unsigned long long)size);
    return 0;
}

int ms__arena_map(int fd, void **base, uint64_t *capacity, char *err, size_t errlen)
{
    uint64_t size;
    int rc = arena_check_fd(fd, &size, err, errlen);
    if (rc != 0)
        return rc;
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED)
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot map an arena of %llu bytes: %s",
                        (unsigned long long)size, strerror(errno));
    rc = arena_check_header(p, size, err, errlen);
    if (rc != 0) {
        munmap(p, (size_t)size);
        return rc;
    }
    *base = p;
    *capacity = size;
    return 0;
}

int ms__arena_map_header(int fd, ms__arena_header **hdr, char *err, size_t errlen)
{
    uint64_t size;
    int rc = arena_check_fd(fd, &size, err, errlen);
    if (rc != 0)
        return rc;
    void *p = mmap(NULL, MS__ARENA_HEADER, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return ms__fail(err, errlen, MS_E_NOMEM, "cannot map the arena header: %s",
                        strerror(errno));
    rc = arena_check_header(p, size, err, errlen);
    if (rc != 0) {
        munmap(p, MS__ARENA_HEADER);
        return rc;
    }
    *hdr = p;
    return 0;
}

void ms__arena_unmap(void *base, uint64_t capacity)
{
    if (base != NULL && capacity > 0)
        munmap(base, (size_t)capacity);
}

uint64_t ms__arena_capacity_from_env(void)
{
    uint64_t bytes;
    int rc = ms__env_size("MODELSHARE_ARENA_BYTES", MS__ARENA_DEFAULT, &bytes, NULL, 0);
    if (rc == MS_E_TOO_LARGE || bytes > MS__ARENA_MAX)
        bytes = MS__ARENA_MAX;
    if (bytes < MS__ARENA_MIN)
        bytes = MS__ARENA_MIN;
    /* Round down to the allocation alignment. */
    return bytes & ~(uint64_t)(MS__ARENA_ALIGN - 1);
}
