/*
 * The smallest modelshare client: acquire a dense model by tag, run it once, print the output.
 *
 *   build/modelshare make-dense mlp.safetensors --layers 1024,4096,1000
 *   build/examples/hello mlp.safetensors
 *
 * Run it from several terminals at once: the model is loaded once, by the daemon's worker.
 */
#include <modelshare.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s WEIGHTS.safetensors\n", argv[0]);
        return 2;
    }
    char spec[4096];
    snprintf(spec, sizeof spec, "{\"backend\": \"dense\", \"weights\": \"%s\"}", argv[1]);

    ms_client *c = NULL;
    ms_model *m = NULL;
    ms_tensor *x = NULL, *y = NULL;
    int rc = ms_connect(NULL, &c); /* starts the daemon when none runs */
    if (rc != 0) {
        fprintf(stderr, "connect: %s\n", ms_errmsg(NULL));
        return 1;
    }
    rc = ms_acquire(c, "hello-mlp", spec, &m);
    if (rc != 0)
        goto fail;

    int in_rank = 0;
    int64_t in_shape[MS_MAX_RANK];
    ms_model_signature(m, NULL, &in_rank, in_shape, NULL, NULL, NULL);
    int64_t shape[2] = {2, in_rank == 2 ? in_shape[1] : 1};
    rc = ms_tensor_alloc(m, MS_FLOAT32, 2, shape, &x); /* lives in shared memory */
    if (rc != 0)
        goto fail;
    float *in = ms_tensor_data(x);
    for (int64_t i = 0; i < shape[0] * shape[1]; i++)
        in[i] = (float)(i % 7) / 7.0f; /* written once, where the worker reads it */

    rc = ms_infer(m, x, &y);
    if (rc != 0)
        goto fail;
    const int64_t *out_shape = ms_tensor_shape(y);
    const float *out = ms_tensor_data(y); /* read in place */
    printf("output [%lld, %lld]:", (long long)out_shape[0], (long long)out_shape[1]);
    for (int64_t j = 0; j < out_shape[1] && j < 5; j++)
        printf(" %.6f", out[j]);
    printf("%s\n", out_shape[1] > 5 ? " ..." : "");

    ms_tensor_free(y);
    ms_tensor_free(x);
    ms_release(m); /* one lease less; the model stays loaded for its keep_alive */
    ms_disconnect(c);
    return 0;

fail:
    fprintf(stderr, "%s: %s\n", ms_errname(rc), ms_errmsg(c));
    ms_tensor_free(x);
    ms_release(m);
    ms_disconnect(c);
    return 1;
}
