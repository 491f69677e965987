/* The fuzz input as a NUL-terminated string, for the decoders that read text. */
#ifndef MS_FUZZ_TEXT_H
#define MS_FUZZ_TEXT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A malloc'd copy of data[0..size) with a NUL after it (the caller frees), or NULL. */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text != NULL) {
        memcpy(text, data, size);
        text[size] = '\0';
    }
    return text;
}

#endif
