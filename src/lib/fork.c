/*
 * Fork: every client of the process is listed, so that a child that fork() made can drop its
 * copies of the parent's descriptors (see fork.h).
 */
#include "fork.h"

#include <unistd.h>

#include "call.h"

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static LIST_HEAD(, ms_client) all_clients = LIST_HEAD_INITIALIZER(all_clients);
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&all_lock);
}

/* The child is single-threaded: locks that other threads of the parent held are copied held, so
 * they are made anew rather than taken. */
static void fork_child(void)
{
    int64_t parent = (int64_t)getppid();
    ms_client *c;
    LIST_FOREACH(c, &all_clients, all)
    {
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        c->lost = true;
        if (c->forked_from == 0)
            c->forked_from = parent;
        ms__lib_call_init(c); /* the parent's waiting threads are not here */
        pthread_mutex_init(&c->models_lock, NULL);
        ms_model *m;
        LIST_FOREACH(m, &c->models, link)
        {
            if (m->arena_fd >= 0)
                close(m->arena_fd);
            m->arena_fd = -1;
            m->alloc.fd = -1;
            pthread_mutex_init(&m->lock, NULL);
            pthread_cond_init(&m->slot_free, NULL);
        }
    }
    pthread_mutex_init(&all_lock, NULL);
}

static void atfork_register(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void ms__lib_fork_track(ms_client *c)
{
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&all_lock);
    LIST_INSERT_HEAD(&all_clients, c, all);
    pthread_mutex_unlock(&all_lock);
}

void ms__lib_fork_untrack(ms_client *c)
{
    pthread_mutex_lock(&all_lock);
    LIST_REMOVE(c, all);
    pthread_mutex_unlock(&all_lock);
}

ms_client *ms__lib_fork_take_inherited(void)
{
    pthread_mutex_lock(&all_lock);
    ms_client *c;
    LIST_FOREACH(c, &all_clients, all)
    {
        if (c->forked_from != 0)
            break;
    }
    if (c != NULL)
        LIST_REMOVE(c, all);
    pthread_mutex_unlock(&all_lock);
    return c;
}
