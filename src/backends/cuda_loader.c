/* Finds the backend for a spec; "dense" on "cuda:N" comes from libmodelshare-cuda.so, opened with
 * dlopen so that the CPU build and machines without CUDA never load CUDA. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "../common/env.h"
#include "modelshare.h"
#include "../common/util.h"

#ifndef MS_INSTALL_LIBDIR
#define MS_INSTALL_LIBDIR "/usr/local/lib"
#endif

/* The first of: $MODELSHARE_CUDA_BACKEND, beside the running program, .., ../lib, ../lib64 and the
 * install libdir. false (with the first place looked in buf) when none exists. */
static bool find_library(char *buf, size_t buflen)
{
    const char *env = ms__env_str("MODELSHARE_CUDA_BACKEND", NULL);
    if (env != NULL) {
        snprintf(buf, buflen, "%s", env);
        return access(buf, R_OK) == 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        snprintf(self, sizeof self, ".");
    else
        self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    const char *const rel[] = {"", "/..", "/../lib", "/../lib64"};
    for (size_t i = 0; i < MS__ARRAY_LEN(rel); i++) {
        int k = snprintf(buf, buflen, "%s%s/%s", self, rel[i], MS__CUDA_BACKEND_LIB);
        if (k > 0 && (size_t)k < buflen && access(buf, R_OK) == 0)
            return true;
    }
    int k = snprintf(buf, buflen, "%s/%s", MS_INSTALL_LIBDIR, MS__CUDA_BACKEND_LIB);
    if (k > 0 && (size_t)k < buflen && access(buf, R_OK) == 0)
        return true;
    k = snprintf(buf, buflen, "%s/%s", self, MS__CUDA_BACKEND_LIB);
    if (k < 0 || (size_t)k >= buflen)
        snprintf(buf, buflen, "%s", MS__CUDA_BACKEND_LIB);
    return false;
}

static int open_cuda(const ms__backend_ops **out, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (!find_library(path, sizeof path))
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "CUDA backend not built: %s not found (build with the CUDA toolkit "
                        "installed, or set MODELSHARE_CUDA_BACKEND)",
                        path);
    /* The driver first: without it nothing in CUDA works, and this is the usual reason. */
    if (dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL) == NULL) {
        const char *why = dlerror();
        return ms__fail(err, errlen, MS_E_DEVICE,
                        "no CUDA driver: libcuda.so.1 not found (%s); is the NVIDIA driver "
                        "installed?",
                        why != NULL ? why : "dlopen failed");
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *why = dlerror();
        return ms__fail(err, errlen, MS_E_DEVICE, "cannot load the CUDA backend %s: %s", path,
                        why != NULL ? why : "dlopen failed");
    }
    const ms__backend_ops *ops = dlsym(h, MS__CUDA_BACKEND_SYMBOL);
    if (ops == NULL)
        return ms__fail(err, errlen, MS_E_DEVICE, "%s: expected the symbol %s, not found", path,
                        MS__CUDA_BACKEND_SYMBOL);
    *out = ops;
    return 0;
}

int ms__backend_open(const ms__spec *spec, const ms__backend_ops **out, char *err, size_t errlen)
{
    if (strcmp(spec->backend, "dense") == 0 && strncmp(spec->device, "cuda", 4) == 0)
        return open_cuda(out, err, errlen);
    const ms__backend_ops *be = ms__backend_find(spec->backend);
    if (be == NULL)
        return ms__fail(err, errlen, MS_E_SPEC, "backend \"%s\" is not built into this worker",
                        spec->backend);
    *out = be;
    return 0;
}
