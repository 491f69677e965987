/*
 * The dtype table's internal views: lookups by each of the names a dtype has (modelshare's
 * "float32", safetensors' "F32", numpy's "<f4") and the lists that error messages print. Every
 * row comes from MS_DTYPE_MAP in modelshare.h; nothing here restates it.
 */
#ifndef MS_DTYPE_H
#define MS_DTYPE_H

#include <stddef.h>

#include "modelshare.h"

typedef struct ms__dtype_info {
    ms_dtype dtype;
    const char *name; /* "float32" */
    const char *st;   /* safetensors: "F32" */
    const char *npy;  /* .npy descriptor: "<f4"; NULL when numpy has no such dtype */
    size_t size;      /* bytes per element */
} ms__dtype_info;

/* The row of dtype (a static row), or NULL for a value that is not an ms_dtype. */
const ms__dtype_info *ms__dtype_info_of(int dtype);

/* dtype of a modelshare name ("float32") or a safetensors name ("F32"); 0 for anything else,
 * NULL included. */
int ms__dtype_from_name(const char *name);
/* dtype of a safetensors name only ("F32"); 0 for anything else. */
int ms__dtype_from_st(const char *st);
/* The row whose .npy descriptor, after its byte-order character, is code ("f4"); NULL when
 * none. */
const ms__dtype_info *ms__dtype_from_npy_code(const char *code);

/* Which name a list shows: the name, the safetensors name, the .npy descriptor, or the name of
 * each dtype that has a .npy descriptor. */
typedef enum ms__dtype_field {
    MS__DTYPE_NAME,
    MS__DTYPE_ST,
    MS__DTYPE_NPY,
    MS__DTYPE_NPY_NAME,
} ms__dtype_field;

/* Writes every dtype's name of that field into buf (always NUL-terminated), in table order,
 * skipping rows without one: each between quote characters (quote may be ""), separated by
 * ", " and by last before the final one ("float32, float16 or bool" with last " or "). */
void ms__dtype_list(ms__dtype_field field, const char *quote, const char *last, char *buf,
                    size_t buflen);

#endif
