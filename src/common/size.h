/*
 * Sizes, as every part of modelshare reads them: `--memory host=16GiB,cuda:0=90%`,
 * $MODELSHARE_MEMORY, $MODELSHARE_ARENA_BYTES.
 *
 * A size is a number (decimals allowed: "1.5GiB") and an optional unit, case-insensitive, with
 * optional spaces around and between them:
 *   none or B: bytes;  K, KB: 1000;  M, MB: 1000^2;  G, GB: 1000^3;  T, TB: 1000^4   (SI)
 *                     KiB: 1024;    MiB: 1024^2;    GiB: 1024^3;    TiB: 1024^4     (IEC)
 * so "4GB" is 4000000000 bytes and "4GiB" 4294967296, as docs/operations.md and `--memory` say.
 * Where a share of a device is allowed, "90%" is a percentage above 0 and at most 100.
 */
#ifndef MS_SIZE_H
#define MS_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Parses text as a size of 1 byte to 16 EiB (*bytes, with *percent 0), or, when percent is not
 * NULL, as a percentage (*percent, with *bytes 0). Outputs are written only on success.
 * Errors: MS_E_INVAL with a message saying what was expected and what came; MS_E_TOO_LARGE for
 * a well-formed size above 16 EiB (callers that clamp tell it apart). */
int ms__size_parse(const char *text, uint64_t *bytes, double *percent, char *err, size_t errlen);

#endif
