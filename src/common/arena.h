/*
 * A client's arena: one memfd per model lease, made by the client library, mapped by the client
 * and by the worker that serves the model (the daemon maps only the header page).
 *
 * Layout: the first MS__ARENA_HEADER bytes (one page, the only part the daemon maps) are an
 * ms__arena_header; then MS__RINGS_MAX ring sets (ring.h), one per instance of the model; tensors
 * live from MS__ARENA_DATA on, at offsets the client's allocator chooses (aligned to
 * MS__ARENA_ALIGN). The file is sized once to its full capacity with ftruncate: address space
 * only, pages are used when written (a ring set that is never used costs nothing).
 */
#ifndef MS_ARENA_H
#define MS_ARENA_H

#include <stddef.h>
#include <stdint.h>

#define MS__ARENA_MAGIC 0x4d534152u /* "MSAR" */
#define MS__ARENA_HEADER 4096u
#define MS__ARENA_ALIGN 64u
#define MS__RING_SLOTS 64u /* requests in flight per client and instance */
#define MS__SLOT_BYTES 1024u
#define MS__RINGSET_BYTES (4096u + MS__RING_SLOTS * MS__SLOT_BYTES)
#define MS__RINGS_MAX 64u /* one ring set per instance: MS__INSTANCES_MAX */
/* Where tensors start: after the header page and the ring sets (4.25 MiB of address space). */
#define MS__ARENA_DATA ((uint64_t)MS__ARENA_HEADER + (uint64_t)MS__RINGS_MAX * MS__RINGSET_BYTES)
/* Default capacity, overridden by $MODELSHARE_ARENA_BYTES; never above MS__ARENA_MAX. */
#define MS__ARENA_DEFAULT (4ull << 30)
#define MS__ARENA_MIN (8ull << 20)
#define MS__ARENA_MAX (64ull << 30)

/* Arena states (header.state), written by the daemon: UNLOADED before it stops a worker that a
 * force-unload took away (the client reports MS_E_UNLOADED), LOST when a worker of the model died
 * (MS_E_WORKER_LOST). A client waiting for a response looks at it at least every 100 ms. */
enum { MS__ARENA_LIVE = 0, MS__ARENA_UNLOADED = 1, MS__ARENA_LOST = 2 };

typedef struct ms__arena_header {
    uint32_t magic;
    uint32_t version;       /* 4 (MS_PROTOCOL_VERSION) */
    uint64_t capacity;      /* bytes of the whole file, header included */
    _Atomic uint32_t state; /* MS__ARENA_LIVE / MS__ARENA_UNLOADED */
} ms__arena_header;

/* Client side: creates the memfd ("modelshare-arena", MFD_CLOEXEC), sizes it to capacity,
 * writes the header and maps it read-write. */
int ms__arena_create(uint64_t capacity, int *fd, void **base, char *err, size_t errlen);
/* Worker side: maps an arena received from the daemon after checking its size (fstat) against
 * MS__ARENA_MIN..MS__ARENA_MAX and its header. *capacity is the checked size. */
int ms__arena_map(int fd, void **base, uint64_t *capacity, char *err, size_t errlen);
/* Daemon side: maps just the header page. */
int ms__arena_map_header(int fd, ms__arena_header **hdr, char *err, size_t errlen);
void ms__arena_unmap(void *base, uint64_t capacity);

/* Capacity to use in the client: $MODELSHARE_ARENA_BYTES (a size, size.h: "64MiB", "4GB" is 4e9
 * bytes) clamped to MS__ARENA_MIN..MS__ARENA_MAX and rounded down to MS__ARENA_ALIGN; when it is
 * not given or not a size, MS__ARENA_DEFAULT. */
uint64_t ms__arena_capacity_from_env(void);

#endif
