/* Per-thread error messages (ms_errmsg), client serials, and the argument checks that fail with
 * a message. The bottom of the library: it calls no other file of it. */
#ifndef MS_LIB_ERRORS_H
#define MS_LIB_ERRORS_H

#include <stdint.h>

#include "modelshare.h"

/* Records message for the calling thread's last failed call on client (NULL: ms_connect) and
 * returns code. */
int ms__lib_fail(const ms_client *client, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same with a message already formatted. */
int ms__lib_fail_msg(const ms_client *client, int code, const char *msg);
/* Empties the calling thread's message for client (NULL: ms_connect's), at the start of each
 * public call: ms_errmsg() is empty after a call that succeeded. */
void ms__lib_clear(const ms_client *client);
/* A serial for a new client, unique in this process: its messages are never shown for another. */
uint64_t ms__lib_serial_next(void);
/* 0 when tag is valid (ms__tag_valid), else MS_E_INVAL with a message saying what a tag is. */
int ms__lib_check_tag(ms_client *client, const char *tag);

#endif
