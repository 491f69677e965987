/*
 * Environment variables: the one way every part of modelshare reads one. A variable that is
 * unset or empty counts as not given, so that `VAR= cmd` restores the default. The variables
 * themselves are listed in docs/operations.md ("Where things are").
 */
#ifndef MS_ENV_H
#define MS_ENV_H

#include <stddef.h>
#include <stdint.h>

/* $name, or def (may be NULL) when it is unset or empty. The string belongs to the environment. */
const char *ms__env_str(const char *name, const char *def);

/* $name as a number from min to max ("200", "1.5", "1e3"; spaces around it allowed).
 * *out is always written: the value when it is valid, else def. Returns 0 when the variable is
 * valid or not given; MS_E_INVAL (message naming the variable, what was expected and what came)
 * when it is given but not such a number: callers that have no one to tell ignore it. */
int ms__env_number(const char *name, double def, double min, double max, double *out, char *err,
                   size_t errlen);

/* $name as a size (size.h: "64MiB", "4GB", no percentage). *out as above: the value when it is
 * valid, else def. Returns 0, or the code of ms__size_parse() with the variable named in the
 * message (MS_E_TOO_LARGE for a well-formed size above 16 EiB, MS_E_INVAL otherwise). */
int ms__env_size(const char *name, uint64_t def, uint64_t *out, char *err, size_t errlen);

#endif
