/*
 * Manifests: several named tensors in one request or one answer (MS__REQ_MULTI, records.h).
 *
 * A request with MS__REQ_MULTI has as its input (a uint8 tensor of rank 1) an input manifest in
 * the client's arena; the tensors it lists lie elsewhere in that arena or in a linked one (an
 * array already in shared memory goes by reference, no copy). The worker writes the output
 * manifest at the start of the request's output room and the outputs' bytes after it, in the
 * same room; the response says uint8 [out_len].
 *
 * Layout (little-endian, every field naturally aligned):
 *   header, 16 bytes:  magic u32 "MSMF" | count u32 (0..MS__MF_MAX) | form u32 | reserved u32 0
 *   count entries of 128 bytes each:
 *     name char[32]    1..31 bytes of [A-Za-z0-9_.:-], NUL-terminated, the rest of it zero;
 *                      unique in the manifest
 *     dtype u32        an ms_dtype, or MS_TEXT_UTF8 / MS_TEXT_BYTES (a list of strings)
 *     rank u32         0..8 (a list: 1)
 *     arena u32        0: the lease's own arena; k in 1..MS__ARENA_LINKS: its k-th linked arena
 *                      (an output manifest: 0)
 *     flags u32        0, or MS__MF_OWN: the bytes are this request's own copy, which nobody
 *                      reads after the call (the model may write them)
 *     off u64, len u64 its bytes: [off, off + len) of that arena, aligned to the element size;
 *                      inside [MS__ARENA_DATA, capacity); len = numel * element size
 *     shape i64[8]     rank dims >= 0, the rest 0; a list: shape[0] is its number of items
 * A list's bytes ("text"): count u64 (= shape[0]), count lengths u64, then the items' bytes one
 * after another; len = 8 + 8 * count + the sum of the lengths (ms__text_check). Its off is
 * aligned to 8.
 *
 * form says what structure the caller used or the model returned, so that the other side
 * rebuilds it: a request's MS__FORM_ARGS (model(a, b): names "0", "1", ...), MS__FORM_KWARGS
 * (model(input_ids=a, ...)), MS__FORM_DICT (model({"input_ids": a, ...})); an answer's
 * MS__FORM_ONE (one tensor or list, named "0"), MS__FORM_TUPLE, MS__FORM_LIST (names "0", "1",
 * ...), MS__FORM_DICT, or MS__FORM_OBJECT (one uint8 entry "0": a pickled answer, only to a
 * request with MS__REQ_OBJECT that ran alone).
 */
#ifndef MS_MANIFEST_H
#define MS_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "records.h"

#define MS__MF_MAGIC 0x464d534du /* "MSMF" */
#define MS__MF_MAX 16            /* tensors in one manifest: MS_MAX_TENSORS */
#define MS__MF_NAME 32           /* bytes of a name, its NUL included: MS_NAME_MAX */
#define MS__MF_HEADER 16u
#define MS__MF_ENTRY 128u
#define MS__MF_BYTES_MAX (MS__MF_HEADER + MS__MF_MAX * MS__MF_ENTRY)
_Static_assert(MS__MF_BYTES_MAX == MS__REQ_MULTI_MAX && MS__MF_HEADER == MS__REQ_MULTI_MIN,
               "records.h's manifest sizes");
#define MS__TEXT_ITEMS_MAX (1u << 24) /* items in one list */
#define MS__MF_OWN 1u                 /* an entry's flags: the request's own copy */

enum {
    MS__FORM_ARGS = 0,
    MS__FORM_KWARGS = 1,
    MS__FORM_DICT = 2,
    MS__FORM_ONE = 3,
    MS__FORM_TUPLE = 4,
    MS__FORM_LIST = 5,
    MS__FORM_OBJECT = 6,
    MS__FORM_LAST = MS__FORM_OBJECT
};

typedef struct ms__mf_entry {
    char name[MS__MF_NAME];
    uint32_t dtype;
    uint32_t rank;
    uint32_t arena;
    uint32_t flags; /* MS__MF_OWN */
    uint64_t off;
    uint64_t len;
    int64_t shape[8];
} ms__mf_entry;

typedef struct ms__manifest {
    uint32_t magic;
    uint32_t count;
    uint32_t form;
    uint32_t reserved;
    ms__mf_entry e[MS__MF_MAX];
} ms__manifest;

/* Whether dtype is one of the list kinds (MS_TEXT_UTF8, MS_TEXT_BYTES). */
int ms__mf_is_text(uint32_t dtype);
/* An entry's element size for alignment: the dtype's, 8 for a list; 0 for an unknown dtype. */
size_t ms__mf_align(uint32_t dtype);

/* Pure decoder, fuzzed (fuzz_manifest): buf holds len bytes copied out of shared memory.
 * caps[0] is the capacity of the arena the manifest's arena 0 means, caps[k] that of linked
 * arena k (0 where none is linked; caps has 1 + MS__ARENA_LINKS entries). Checks the magic, the
 * count (0..MS__MF_MAX, and len = 16 + 128 * count), the form, reserved fields and flags, each name
 * (1..31 bytes of [A-Za-z0-9_.:-], NUL-padded, unique), dtype, rank and dims (a list: rank 1, at
 * most MS__TEXT_ITEMS_MAX items, len at least 8 + 8 * items), len = numel * size without overflow,
 * and each range inside its arena's tensor space, aligned. Returns 0 with *out filled, or
 * MS_E_PROTOCOL / MS_E_DTYPE / MS_E_SHAPE / MS_E_TOO_LARGE / MS_E_LIMIT with a message saying
 * what was expected. */
int ms__manifest_decode(const void *buf, size_t len, const uint64_t *caps, ms__manifest *out,
                        char *err, size_t errlen);

/* Checks a list's bytes (copied out of shared memory, or in memory nobody else writes): count
 * items announced by its manifest entry, its own count field equal to it, and lengths that add
 * up to exactly len - 8 - 8 * count without overflow. Returns 0, or MS_E_PROTOCOL with a
 * message. */
int ms__text_check(const void *bytes, uint64_t len, uint64_t count, char *err, size_t errlen);

/* Writes m's header and count entries as a manifest of ms__mf_bytes(m->count) bytes at dst. */
void ms__manifest_encode(const ms__manifest *m, void *dst);
static inline size_t ms__mf_bytes(uint32_t count)
{
    return MS__MF_HEADER + (size_t)count * MS__MF_ENTRY;
}

#endif
