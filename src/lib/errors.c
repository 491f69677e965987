/*
 * Per-thread error messages: the calling thread's last message, one for the last failed
 * ms_connect() and one for the last failed call on a client (tagged with that client's serial,
 * so that a message is never shown for another client). Also the serials themselves, and the
 * argument checks that fail with a message.
 */
#include "errors.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char tls_connect_msg[MS__ERRLEN];
static _Thread_local uint64_t tls_client_serial;
static _Thread_local char tls_client_msg[MS__ERRLEN];

static atomic_uint_fast64_t next_serial = 1;

int ms__lib_fail_msg(const ms_client *client, int code, const char *msg)
{
    if (client == NULL) {
        snprintf(tls_connect_msg, sizeof tls_connect_msg, "%s", msg);
    } else {
        /* msg may be tls_client_msg itself. */
        if (msg != tls_client_msg)
            snprintf(tls_client_msg, sizeof tls_client_msg, "%s", msg);
        tls_client_serial = client->serial;
    }
    return code;
}

int ms__lib_fail(const ms_client *client, int code, const char *fmt, ...)
{
    char buf[MS__ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return ms__lib_fail_msg(client, code, buf);
}

void ms__lib_clear(const ms_client *client)
{
    if (client == NULL)
        tls_connect_msg[0] = '\0';
    else if (tls_client_serial == client->serial)
        tls_client_msg[0] = '\0';
}

MS_EXPORT const char *ms_errmsg(const ms_client *client)
{
    if (client == NULL)
        return tls_connect_msg;
    if (tls_client_serial != 0 && tls_client_serial == client->serial)
        return tls_client_msg;
    return "";
}

uint64_t ms__lib_serial_next(void)
{
    return atomic_fetch_add(&next_serial, 1);
}

int ms__lib_check_tag(ms_client *client, const char *tag)
{
    if (tag != NULL && ms__tag_valid(tag))
        return 0;
    return ms__lib_fail(client, MS_E_INVAL,
                        "tag: expected 1 to %d characters of [A-Za-z0-9._:/@+-], got \"%.200s\"",
                        MS__TAG_MAX, tag ? tag : "(null)");
}
