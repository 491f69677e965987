/* The dense backend's memory estimate, from the safetensors header alone. See dense.h. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dense.h"
#include "modelshare.h"
#include "../../common/safetensors.h"
#include "../../common/util.h"

/* The file's header (8 length bytes and the JSON) parsed into f. */
static int read_header(int fd, uint64_t size, ms__st_file *f)
{
    uint8_t len8[8];
    if (size < 8 || pread(fd, len8, 8, 0) != 8)
        return -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | len8[i];
    if (n > MS__ST_HEADER_MAX || n > size - 8)
        return -1;
    uint8_t *head = malloc((size_t)n + 8);
    if (head == NULL)
        return -1;
    size_t got = 0;
    while (got < n + 8) {
        ssize_t r = pread(fd, head + got, (size_t)n + 8 - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(head);
            return -1;
        }
        got += (size_t)r;
    }
    int rc = ms__st_parse(head, (size_t)n + 8, size, f, NULL, 0);
    free(head);
    return rc < 0 ? -1 : 0;
}

uint64_t ms__dense_estimate(const ms__spec *spec)
{
    if (spec->weights == NULL || spec->weights[0] == '\0')
        return 0;
    bool cuda = strncmp(spec->device, "cuda", 4) == 0;
    int fd = open(spec->weights, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat st;
    ms__st_file f;
    memset(&f, 0, sizeof f);
    uint64_t total = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        read_header(fd, (uint64_t)st.st_size, &f) != 0)
        goto out;
    uint64_t weight_bytes = 0, width = 0;
    bool half = false;
    for (size_t i = 0; i < f.ntensors; i++) {
        size_t numel;
        if (!ms__shape_numel(f.tensors[i].rank, f.tensors[i].shape, &numel))
            continue;
        bool keep16 = cuda && f.tensors[i].dtype == MS_FLOAT16;
        half = half || keep16;
        weight_bytes += (uint64_t)numel * (keep16 ? 2 : sizeof(float));
        if (f.tensors[i].rank == 2 && (uint64_t)f.tensors[i].shape[0] > width)
            width = (uint64_t)f.tensors[i].shape[0];
    }
    uint64_t rows = spec->max_batch > 0 ? (uint64_t)spec->max_batch : 1;
    total = weight_bytes + 2 * rows * width * sizeof(float);
    if (cuda)
        total += (half ? rows * width * 2 : 0) + MS__CUDA_CONTEXT_BYTES;
out:
    ms__st_free(&f);
    close(fd);
    return total;
}
