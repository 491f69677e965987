/*
 * safetensors files: 8-byte little-endian header length N, N bytes of JSON header
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data. Offsets are relative to the end of the header.
 * Framing by hand, the header with jansson.
 */
#ifndef MS_SAFETENSORS_H
#define MS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* Largest header accepted (the format's own limit is 100 MB). */
#define MS__ST_HEADER_MAX (100u << 20)
#define MS__ST_TENSORS_MAX 65536

typedef struct ms__st_tensor {
    char *name; /* malloc'd */
    int dtype;  /* ms_dtype; 0 for a dtype modelshare does not know (kept, not an error) */
    int rank;
    int64_t shape[8];
    uint64_t begin; /* offset in the data section */
    uint64_t end;
} ms__st_tensor;

typedef struct ms__st_file {
    ms__st_tensor *tensors;
    size_t ntensors;
    uint64_t data_start; /* 8 + N: where the data section begins in the file */
    uint64_t data_len;   /* bytes of the data section */
} ms__st_file;

/* Pure parser, fuzzed: buf holds the first len bytes of a file whose total size is file_size
 * (len may be less than file_size: only the header is needed). Checks: header length within the
 * file and MS__ST_HEADER_MAX, valid JSON object, each entry's dtype/shape/data_offsets well
 * formed, rank <= 8, end >= begin, (end - begin) == numel * dtype size, every range inside the
 * data section. Errors: MS_E_WEIGHTS with a message that says what was wrong, e.g.
 * "not a safetensors file: header length 1936287828 is larger than the file (1024 bytes)".
 * On success *out is filled; free with ms__st_free(). Returns MS_E_INVAL if len < 8 + N. */
int ms__st_parse(const uint8_t *buf, size_t len, uint64_t file_size, ms__st_file *out, char *err,
                 size_t errlen);
void ms__st_free(ms__st_file *f);
/* Tensor by name, or NULL. */
const ms__st_tensor *ms__st_find(const ms__st_file *f, const char *name);

/* Writer used by `modelshare make-dense` and tests: writes a safetensors file of the given
 * float32 tensors (names, shapes, data). Returns 0 or MS_E_IO with a message. */
typedef struct ms__st_out_tensor {
    const char *name;
    int rank;
    int64_t shape[8];
    const float *data; /* numel floats */
} ms__st_out_tensor;
int ms__st_write_f32(const char *path, const ms__st_out_tensor *tensors, size_t n, char *err,
                     size_t errlen);

#endif
