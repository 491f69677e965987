/* Per-tag counters that outlive a model's record (tally.h). */
#include "tally.h"

#include <stdio.h>
#include <string.h>

/* The slot a new tag takes: the next free one, else the least recently touched tag without a
 * model; -1 when there is none. */
static int free_slot(const ms__tally *t, bool (*is_loaded)(void *, const char *), void *ctx)
{
    if (t->n < MS__TALLY_MAX)
        return t->n;
    int best = -1;
    for (int i = 0; i < t->n; i++)
        if ((best < 0 || t->e[i].touched < t->e[best].touched) &&
            (is_loaded == NULL || !is_loaded(ctx, t->e[i].tag)))
            best = i;
    return best;
}

ms__tally_entry *ms__tally_get(ms__tally *t, const char *tag,
                               bool (*is_loaded)(void *, const char *), void *ctx)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->e[i].tag, tag) == 0) {
            t->e[i].touched = ++t->clock;
            return &t->e[i];
        }
    int i = free_slot(t, is_loaded, ctx);
    if (i < 0)
        return NULL;
    if (i == t->n)
        t->n++;
    ms__tally_entry *e = &t->e[i];
    memset(e, 0, sizeof *e);
    snprintf(e->tag, sizeof e->tag, "%s", tag);
    e->touched = ++t->clock;
    return e;
}
