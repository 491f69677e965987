/*
 * The control calls with a python constructor's memfd: what the Python package (python/src,
 * linked with the static library) uses for a constructor whose pickle is too large to travel
 * inline in the spec (common/ctorfd.h). Not part of the public API.
 */
#ifndef MS_LIB_CTOR_H
#define MS_LIB_CTOR_H

#include "modelshare.h"

/* ms_acquire(), ms_load() and ms_swap() that also send ctor_fd, a memfd sealed against write,
 * shrink and grow holding the pickle that the spec's python.constructor_size and
 * python.constructor_sha256 describe, with the request (-1: none, as the public calls do).
 * ctor_fd stays the caller's: the daemon gets its own copy. Errors as the public calls', and
 * MS_E_SPEC when the daemon refuses the descriptor (not such a memfd, another size) or the spec
 * and the descriptor do not go together (a memfd spec without one, a descriptor without it). */
int ms__acquire_ctor(ms_client *client, const char *tag, const char *spec_json, int ctor_fd,
                     ms_model **out);
int ms__load_ctor(ms_client *client, const char *tag, const char *spec_json, int ctor_fd);
int ms__swap_ctor(ms_client *client, const char *tag, const char *changes, unsigned flags,
                  int ctor_fd);

#endif
