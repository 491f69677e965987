/* The model run in the helper's own process, for reference answers. See reference.h. */
#include "reference.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <modelshare.h>

#include "../../src/backends/dense/dense.h"

int reference_load(reference *r, const char *spec_json)
{
    char err[1024];
    memset(r, 0, sizeof *r);
    if (ms__spec_parse(spec_json, &r->spec, err, sizeof err) < 0) {
        printf("error reference spec: %s\n", err);
        return 1;
    }
    if (ms__backend_open(&r->spec, &r->be, err, sizeof err) < 0 ||
        r->be->load(&r->spec, &r->state, err, sizeof err) < 0) {
        printf("error reference load: %s\n", err);
        return 1;
    }
    if (strcmp(r->spec.backend, "dense") == 0) {
        ms__dense_layer_view l;
        for (size_t i = 0; ms__dense_layer(r->state, i, &l) == 0; i++)
            r->reduction += (size_t)l.in;
    }
    return 0;
}

void reference_free(reference *r)
{
    if (r->be && r->state)
        r->be->unload(r->state);
    ms__spec_free(&r->spec);
}

float *reference_run(reference *r, const float *x, int64_t rows, int64_t width, size_t *nbytes)
{
    char err[1024];
    ms__tensor_view in = {.dtype = MS_FLOAT32, .rank = 2, .shape = {rows, width}};
    ms__tensor_view out;
    in.data = (void *)x;
    in.nbytes = (size_t)(rows * width) * sizeof(float);
    memset(&out, 0, sizeof out);
    if (r->be->output_for(r->state, &in, &out, err, sizeof err) < 0)
        return NULL;
    out.data = malloc(out.nbytes ? out.nbytes : 1);
    if (out.data == NULL || r->be->run(r->state, &in, &out, err, sizeof err) < 0) {
        free(out.data);
        return NULL;
    }
    *nbytes = out.nbytes;
    return out.data;
}

long first_mismatch(const reference *r, const float *got, const float *want, size_t n)
{
    float scale = 1.0f;
    for (size_t k = 0; k < n; k++)
        if (fabsf(want[k]) > scale)
            scale = fabsf(want[k]);
    float tol = 4.0f * FLT_EPSILON * (float)r->reduction;
    for (size_t k = 0; k < n; k++) {
        if (r->reduction == 0 ? memcmp(&got[k], &want[k], sizeof(float)) != 0
                              : !(fabsf(got[k] - want[k]) <= tol * (scale + fabsf(want[k]))))
            return (long)k;
    }
    return -1;
}

uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
