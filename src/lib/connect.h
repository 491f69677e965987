/* The daemon's socket: connecting, and starting the daemon when none answers. */
#ifndef MS_LIB_CONNECT_H
#define MS_LIB_CONNECT_H

#include <stddef.h>

/* Connects to the daemon at path, starting it when none answers. *fd is the connected socket
 * (caller owns; O_CLOEXEC). Errors: MS_E_NO_DAEMON, MS_E_PERMISSION, MS_E_INVAL, with the
 * message in err. */
int ms__lib_connect(const char *path, int *fd, char *err, size_t errlen);

#endif
