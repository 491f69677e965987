/* Fuzzes the manifest decoder (manifest.h) and the list check. The first byte picks which linked
 * arenas exist; the rest is the manifest. An accepted manifest must only name tensors inside
 * their arenas' tensor space, aligned, of the byte length their dtype and shape say, with unique
 * names; an accepted list's lengths must fill its bytes exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/arena.h"
#include "../../src/common/manifest.h"
#include "../../src/common/util.h"

static void check(const ms__manifest *m, const uint64_t *caps)
{
    if (m->magic != MS__MF_MAGIC || m->count > MS__MF_MAX || m->form > MS__FORM_LAST)
        abort();
    for (uint32_t i = 0; i < m->count; i++) {
        const ms__mf_entry *e = &m->e[i];
        if (e->arena > MS__ARENA_LINKS || caps[e->arena] == 0)
            abort();
        uint64_t cap = caps[e->arena];
        if (e->off < MS__ARENA_DATA || e->off > cap || e->len > cap - e->off)
            abort();
        size_t align = ms__mf_align(e->dtype), numel;
        if (align == 0 || e->off % align != 0 || strnlen(e->name, MS__MF_NAME) == 0 ||
            strnlen(e->name, MS__MF_NAME) == MS__MF_NAME)
            abort();
        if (ms__mf_is_text(e->dtype)
                ? (e->rank != 1 || e->len < 8 + 8 * (uint64_t)e->shape[0])
                : (!ms__shape_numel((int)e->rank, e->shape, &numel) || numel * align != e->len))
            abort();
        for (uint32_t k = 0; k < i; k++)
            if (strcmp(m->e[k].name, e->name) == 0)
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint64_t caps[1 + MS__ARENA_LINKS] = {16ull << 20};
    if (data[0] & 1)
        caps[1] = MS__ARENA_MIN;
    if (data[0] & 2)
        caps[3] = MS__ARENA_MAX + 1; /* out of range: refused */
    char err[MS__ERRLEN] = "";
    ms__manifest m;
    if (ms__manifest_decode(data + 1, size - 1, caps, &m, err, sizeof err) == 0)
        check(&m, caps);
    else if (strnlen(err, sizeof err) == 0)
        abort();
    /* The same bytes as a list of (data[0] >> 2) items. */
    err[0] = '\0';
    if (ms__text_check(data + 1, size - 1, data[0] >> 2, err, sizeof err) == 0) {
        uint64_t n = data[0] >> 2, sum = 0, l;
        for (uint64_t i = 0; i < n; i++) {
            memcpy(&l, data + 1 + 8 + 8 * i, 8);
            sum += l;
        }
        if (sum != size - 1 - 8 - 8 * n)
            abort();
    } else if (strnlen(err, sizeof err) == 0) {
        abort();
    }
    return 0;
}
