/* The public error table's views and the runtime version. */
#include "errors.h"

#include "modelshare.h"

bool ms__error_known(long long code)
{
    switch (code) {
    case MS_OK:
#define MS__ERR_CASE(name, num, text) case num:
        MS_ERRNO_MAP(MS__ERR_CASE)
#undef MS__ERR_CASE
        return true;
    default:
        return false;
    }
}

const char *ms_strerror(int code)
{
    if (!ms__error_known(code))
        return "unknown error";
    switch (code) {
#define MS__ERR_TEXT(name, num, text)                                                              \
    case num:                                                                                      \
        return text;
        MS_ERRNO_MAP(MS__ERR_TEXT)
#undef MS__ERR_TEXT
    }
    return "success";
}

const char *ms_errname(int code)
{
    if (!ms__error_known(code))
        return "MS_E_UNKNOWN";
    switch (code) {
#define MS__ERR_NAME(name, num, text)                                                              \
    case num:                                                                                      \
        return "MS_E_" #name;
        MS_ERRNO_MAP(MS__ERR_NAME)
#undef MS__ERR_NAME
    }
    return "MS_OK";
}

unsigned ms_version(void)
{
    return MS_VERSION_HEX;
}
