/*
 * NumPy .npy files (format versions 1.0, 2.0 and 3.0), for the CLI's infer verb: little-endian
 * numeric dtypes of ms_dtype, C order only.
 */
#ifndef MS_NPY_H
#define MS_NPY_H

#include <stddef.h>
#include <stdint.h>

typedef struct ms__npy_header {
    int dtype;
    int rank;
    int64_t shape[8];
    size_t data_offset; /* where the array's bytes begin */
    size_t nbytes;      /* numel * dtype size */
} ms__npy_header;

/* Pure parser, fuzzed: the magic, version, header length, the header dict ('descr',
 * 'fortran_order', 'shape'). Errors: MS_E_INVAL with what was expected ("expected a
 * little-endian float32 array like '<f4', got '>f8'"), MS_E_DTYPE, MS_E_SHAPE.
 * Does not check that the data is all there (see ms__npy_read). */
int ms__npy_parse(const uint8_t *buf, size_t len, ms__npy_header *out, char *err, size_t errlen);

/* Reads a whole file: *data malloc'd (caller frees) holding hdr->nbytes bytes. Errors as above and
 * MS_E_IO (missing, unreadable, truncated). */
int ms__npy_read(const char *path, ms__npy_header *hdr, void **data, char *err, size_t errlen);

/* Writes data (numel(shape) * dtype size bytes) as a version 1.0 .npy file. */
int ms__npy_write(const char *path, int dtype, int rank, const int64_t *shape, const void *data,
                  char *err, size_t errlen);

#endif
