/*
 * The identity backend: its output is its input, any dtype, any shape. It has no weights and
 * does no work, so that what a benchmark or a test measures with it is modelshare itself: the
 * rings, the wake-ups, the batching and the copies.
 *
 *   spec: {"backend": "identity"}
 */
#include "identity.h"

#include <stdbool.h>
#include <string.h>

#include "modelshare.h"

/* No state: any non-NULL pointer will do. */
static char loaded;

static int id_load(const ms__spec *spec, void **state, char *err, size_t errlen)
{
    (void)spec;
    (void)err;
    (void)errlen;
    *state = &loaded;
    return 0;
}

static void id_signature(void *state, ms__sig *in, ms__sig *out)
{
    (void)state;
    memset(in, 0, sizeof *in);
    memset(out, 0, sizeof *out);
}

static int id_output_for(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                         size_t errlen)
{
    (void)state;
    (void)err;
    (void)errlen;
    *out = *in;
    out->data = NULL;
    return 0;
}

static int id_run(void *state, const ms__tensor_view *in, ms__tensor_view *out, char *err,
                  size_t errlen)
{
    (void)state;
    (void)err;
    (void)errlen;
    if (in->data != out->data && in->nbytes > 0)
        memcpy(out->data, in->data, in->nbytes);
    return 0;
}

static uint64_t id_estimate(const ms__spec *spec)
{
    (void)spec;
    return 0;
}

static void id_unload(void *state)
{
    (void)state;
}

const ms__backend_ops ms__identity_ops = {
    .name = "identity",
    .load = id_load,
    .signature = id_signature,
    .output_for = id_output_for,
    .run = id_run,
    .estimate = id_estimate,
    .unload = id_unload,
    .concurrent = true, /* no state: any number of runs at once */
};
