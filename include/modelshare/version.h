/* modelshare version. The runtime value is ms_version() in <modelshare.h>. */
#ifndef MODELSHARE_VERSION_H
#define MODELSHARE_VERSION_H

#define MS_VERSION_MAJOR 0
#define MS_VERSION_MINOR 1
#define MS_VERSION_PATCH 0
#define MS_VERSION_HEX ((MS_VERSION_MAJOR << 16) | (MS_VERSION_MINOR << 8) | MS_VERSION_PATCH)
#define MS_VERSION_STRING "0.1.0"

/* Version of the control protocol spoken between libmodelshare and modelshared, and of the
 * shared-memory layouts the client and the workers share (arena, rings, records). A client and a
 * daemon with different protocol versions refuse each other with MS_E_VERSION.
 * 2: request records name the arena of their input (linked arenas), slots carry wake-up figures.
 * 3: requests of several named tensors and lists of strings (MS__REQ_MULTI, manifests). */
#define MS_PROTOCOL_VERSION 3

#endif
