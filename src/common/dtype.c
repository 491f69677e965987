/* The dtype table (MS_DTYPE_MAP in modelshare.h) and its views. See dtype.h. */
#include "dtype.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

static const ms__dtype_info dtypes[] = {
#define MS__DTYPE_ROW(e, value, text, st, npy, size) {MS_##e, text, st, npy, size},
    MS_DTYPE_MAP(MS__DTYPE_ROW)
#undef MS__DTYPE_ROW
};

const ms__dtype_info *ms__dtype_info_of(int dtype)
{
    for (size_t i = 0; i < MS__ARRAY_LEN(dtypes); i++)
        if ((int)dtypes[i].dtype == dtype)
            return &dtypes[i];
    return NULL;
}

size_t ms_dtype_size(ms_dtype dtype)
{
    const ms__dtype_info *d = ms__dtype_info_of((int)dtype);
    return d != NULL ? d->size : 0;
}

const char *ms_dtype_name(ms_dtype dtype)
{
    const ms__dtype_info *d = ms__dtype_info_of((int)dtype);
    return d != NULL ? d->name : "unknown";
}

int ms__dtype_from_st(const char *st)
{
    for (size_t i = 0; st != NULL && i < MS__ARRAY_LEN(dtypes); i++)
        if (strcmp(st, dtypes[i].st) == 0)
            return (int)dtypes[i].dtype;
    return 0;
}

int ms__dtype_from_name(const char *name)
{
    for (size_t i = 0; name != NULL && i < MS__ARRAY_LEN(dtypes); i++)
        if (strcmp(name, dtypes[i].name) == 0)
            return (int)dtypes[i].dtype;
    return ms__dtype_from_st(name);
}

const ms__dtype_info *ms__dtype_from_npy_code(const char *code)
{
    for (size_t i = 0; code != NULL && i < MS__ARRAY_LEN(dtypes); i++)
        if (dtypes[i].npy != NULL && strcmp(code, dtypes[i].npy + 1) == 0)
            return &dtypes[i];
    return NULL;
}

static const char *field_of(const ms__dtype_info *d, ms__dtype_field field)
{
    switch (field) {
    case MS__DTYPE_NAME:
        return d->name;
    case MS__DTYPE_ST:
        return d->st;
    case MS__DTYPE_NPY:
        return d->npy;
    case MS__DTYPE_NPY_NAME:
        return d->npy != NULL ? d->name : NULL;
    }
    return NULL;
}

void ms__dtype_list(ms__dtype_field field, const char *quote, const char *last, char *buf,
                    size_t buflen)
{
    size_t n = 0, total = 0, used = 0;
    for (size_t i = 0; i < MS__ARRAY_LEN(dtypes); i++)
        total += field_of(&dtypes[i], field) != NULL;
    if (buflen > 0)
        buf[0] = '\0';
    for (size_t i = 0; i < MS__ARRAY_LEN(dtypes) && used < buflen; i++) {
        const char *s = field_of(&dtypes[i], field);
        if (s == NULL)
            continue;
        const char *sep = n == 0 ? "" : n + 1 == total ? last : ", ";
        int w = snprintf(buf + used, buflen - used, "%s%s%s%s", sep, quote, s, quote);
        used += w > 0 ? (size_t)w : 0;
        n++;
    }
}
