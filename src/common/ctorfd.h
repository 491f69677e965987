/*
 * A python model's constructor too large to travel inline in the spec: its pickle travels in a
 * sealed memfd instead (proto.h, "A constructor in a memfd").
 *
 * The client writes the pickle into a memfd, seals it (F_SEAL_WRITE, F_SEAL_SHRINK, F_SEAL_GROW,
 * and F_SEAL_SEAL) and sends it with its acquire, load or swap request; the spec's "python"
 * object then has "constructor_size" (bytes) and "constructor_sha256" instead of "constructor".
 * The daemon checks the descriptor (ms__ctorfd_check), keeps it with the model for the model's
 * life and hands it to every worker of the model as fd MS__WORKER_CTOR_FD; the python worker
 * reads the pickle there (with pread or mmap: the descriptor's file offset is shared) and checks
 * its size and SHA-256 before it unpickles it.
 */
#ifndef MS_CTORFD_H
#define MS_CTORFD_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>

/* The largest constructor pickle a memfd may carry (spec python.constructor_size). */
#define MS__CTOR_MAX (1ull << 30)

/* The descriptor a python worker finds its constructor's memfd on (beside 3 control, 4 stats
 * and 5 door: src/worker/main.c). */
#define MS__WORKER_CTOR_FD 6

/* The seals a constructor memfd must have: its bytes and size cannot change after the check. */
#define MS__CTOR_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)

/* Checks that fd is a memfd sealed with MS__CTOR_SEALS whose size is exactly size bytes (1 to
 * MS__CTOR_MAX). Returns 0, or MS_E_SPEC with a message that says what was expected and what
 * came (not a memfd, seals missing, another size). The descriptor stays the caller's. */
int ms__ctorfd_check(int fd, uint64_t size, char *err, size_t errlen);

#endif
