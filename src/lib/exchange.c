/*
 * The client's end of the data plane: one request record out, one response record back, over the
 * model's channel (a SOCK_SEQPACKET socketpair, one record per send/recv). The ring/futex data
 * plane will replace this file and nothing else.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "../common/arena.h"

/* The channel is gone: the arena header says whether the model was unloaded on purpose. */
static int channel_lost(ms_model *m)
{
    ms__arena_header *h = m->arena_base;
    if (atomic_load(&h->state) == MS__ARENA_UNLOADED)
        return ms__lib_fail(m->client, MS_E_UNLOADED,
                            "model \"%s\" was unloaded (modelshare unload --force)", m->tag);
    return ms__lib_fail(m->client, MS_E_WORKER_LOST,
                        "the worker serving \"%s\" died; acquire the model again", m->tag);
}

int ms__exchange(ms_model *m, const ms__req *req, ms__resp *resp)
{
    char err[MS__ERRLEN];
    /* Larger than a response, so that an oversized record shows up as such. */
    union {
        ms__resp resp;
        char bytes[sizeof(ms__resp) + 64];
    } buf;
    ssize_t n;

    if (m->chan_fd < 0)
        return channel_lost(m);
    do
        n = send(m->chan_fd, req, sizeof *req, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof *req)
        return channel_lost(m);
    do
        n = recv(m->chan_fd, &buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return channel_lost(m);
    int r = ms__resp_decode(&buf, (size_t)n, resp, err, sizeof err);
    if (r < 0)
        return ms__lib_fail(m->client, MS_E_PROTOCOL, "bad response from the worker of \"%s\": %s",
                            m->tag, err);
    if (resp->id != req->id)
        return ms__lib_fail(m->client, MS_E_PROTOCOL,
                            "response from the worker of \"%s\" out of step: expected id %llu, "
                            "got %llu",
                            m->tag, (unsigned long long)req->id, (unsigned long long)resp->id);
    return 0;
}
