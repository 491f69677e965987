/* The public error table's views, the runtime version and the dtype table. */
#include "modelshare.h"

const char *ms_strerror(int code)
{
    switch (code) {
    case MS_OK:
        return "success";
#define MS__ERR_TEXT(name, num, text)                                                              \
    case num:                                                                                      \
        return text;
        MS_ERRNO_MAP(MS__ERR_TEXT)
#undef MS__ERR_TEXT
    default:
        return "unknown error";
    }
}

const char *ms_errname(int code)
{
    switch (code) {
    case MS_OK:
        return "MS_OK";
#define MS__ERR_NAME(name, num, text)                                                              \
    case num:                                                                                      \
        return "MS_E_" #name;
        MS_ERRNO_MAP(MS__ERR_NAME)
#undef MS__ERR_NAME
    default:
        return "MS_E_UNKNOWN";
    }
}

unsigned ms_version(void)
{
    return MS_VERSION_HEX;
}

size_t ms_dtype_size(int dtype)
{
    switch (dtype) {
    case MS_FLOAT32:
        return 4;
    case MS_FLOAT16:
        return 2;
    case MS_BFLOAT16:
        return 2;
    case MS_FLOAT64:
        return 8;
    case MS_INT8:
        return 1;
    case MS_UINT8:
        return 1;
    case MS_INT16:
        return 2;
    case MS_INT32:
        return 4;
    case MS_INT64:
        return 8;
    case MS_BOOL:
        return 1;
    default:
        return 0;
    }
}

const char *ms_dtype_name(int dtype)
{
    switch (dtype) {
    case MS_FLOAT32:
        return "float32";
    case MS_FLOAT16:
        return "float16";
    case MS_BFLOAT16:
        return "bfloat16";
    case MS_FLOAT64:
        return "float64";
    case MS_INT8:
        return "int8";
    case MS_UINT8:
        return "uint8";
    case MS_INT16:
        return "int16";
    case MS_INT32:
        return "int32";
    case MS_INT64:
        return "int64";
    case MS_BOOL:
        return "bool";
    default:
        return "unknown";
    }
}
