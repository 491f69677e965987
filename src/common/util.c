/* Small helpers shared by every program. */
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t ms__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double ms__now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t ms__even_part(uint64_t total, int n, int i)
{
    uint64_t parts = n < 1 ? 1 : (uint64_t)n;
    return total / parts + (i == 0 ? total % parts : 0);
}

int ms__fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

bool ms__mul_overflow(size_t a, size_t b, size_t *result)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return true;
    *result = r;
    return false;
}

bool ms__add_overflow(size_t a, size_t b, size_t *result)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r))
        return true;
    *result = r;
    return false;
}

bool ms__shape_numel(int rank, const int64_t *shape, size_t *numel)
{
    if (rank < 0 || (rank > 0 && shape == NULL))
        return false;
    size_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX)
            return false;
        if (ms__mul_overflow(n, (size_t)shape[i], &n))
            return false;
    }
    *numel = n;
    return true;
}

void ms__shape_str(int rank, const int64_t *shape, char *buf, size_t buflen)
{
    if (buf == NULL || buflen == 0)
        return;
    size_t pos = 0;
    int n = snprintf(buf, buflen, "[");
    pos = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < rank && shape != NULL && pos < buflen; i++) {
        const char *sep = i > 0 ? ", " : "";
        if (shape[i] == -1)
            n = snprintf(buf + pos, buflen - pos, "%sN", sep);
        else
            n = snprintf(buf + pos, buflen - pos, "%s%lld", sep, (long long)shape[i]);
        if (n < 0)
            break;
        pos += (size_t)n;
    }
    if (pos < buflen)
        snprintf(buf + pos, buflen - pos, "]");
    buf[buflen - 1] = '\0';
}

bool ms__tag_valid(const char *tag)
{
    if (tag == NULL)
        return false;
    size_t len = strnlen(tag, MS__TAG_MAX + 1);
    if (len == 0 || len > MS__TAG_MAX)
        return false;
    return strspn(tag, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@+-") ==
           len;
}
