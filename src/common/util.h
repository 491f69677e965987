/* Small helpers shared by every program: time, bounded error messages, checked arithmetic. */
#ifndef MS_UTIL_H
#define MS_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Length of the error-message buffers passed around internally (err, errlen pairs). */
#define MS__ERRLEN 1024

/* CLOCK_MONOTONIC in nanoseconds / seconds. */
int64_t ms__now_ns(void);
double ms__now_s(void);

/* snprintf into err (if err is non-NULL and errlen > 0), then returns code. For one-line
 * "set the message and fail": return ms__fail(err, errlen, MS_E_SHAPE, "expected ...", ...); */
int ms__fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* a * b and a + b on size_t, as __builtin_*_overflow: true on overflow (*result untouched
 * then), false when *result holds the value. */
bool ms__mul_overflow(size_t a, size_t b, size_t *result);
bool ms__add_overflow(size_t a, size_t b, size_t *result);

/* Part i (0..n-1) of total split evenly over n parts: total / n, and the remainder to part 0, so
 * the parts add up to total. n < 1 counts as 1. */
uint64_t ms__even_part(uint64_t total, int n, int i);

/* Number of elements of a shape (product of dims; 1 for rank 0). Returns false when a dimension
 * is negative or the product overflows size_t. */
bool ms__shape_numel(int rank, const int64_t *shape, size_t *numel);

/* Writes "[8, 1024]" into buf (always NUL-terminated). -1 dims are written as "N". */
void ms__shape_str(int rank, const int64_t *shape, char *buf, size_t buflen);

/* True when tag is 1..MS__TAG_MAX characters of [A-Za-z0-9._:/@+-]. */
#define MS__TAG_MAX 128
bool ms__tag_valid(const char *tag);

#endif
