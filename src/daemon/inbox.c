/* The life-cycle owner's inbox: the events it has still to act on (posted by the policies and by
 * the owner itself) and the settled notices it has still to tell, each in order. See
 * models_int.h. */
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "models_int.h"

const char *ms__life_event_name(int ev)
{
    static const char *const names[MS__EV_N] = {
        "load",       "admit",      "wait",          "recheck",     "forget",
        "fail",       "all-ready",  "unload",        "stop",        "worker-gone",
        "reload",     "remove",     "lost",          "up",          "restart",
        "swap",       "swap-drain", "swap-ready",    "swap-failed", "drained",
        "drain-lost", "swap-load",  "swap-rollback", "swap-end",    "hung"};
    return ev >= 0 && ev < MS__EV_N ? names[ev] : "?";
}

struct ms__notice {
    ms__model *m;
    int what, code;
    char *message; /* owned, NULL when none */
    ms__notice *next;
};

bool ms__inbox_post(ms__models *ml, const ms__life_event *e)
{
    ms__life_event *c = malloc(sizeof *c);
    char *text = e->message != NULL ? strdup(e->message) : NULL;
    if (c == NULL || (e->message != NULL && text == NULL)) {
        ms__log_error("model \"%s\": out of memory queueing event %s: it is lost", e->m->tag,
                      ms__life_event_name(e->ev));
        free(c);
        free(text);
        return false;
    }
    *c = *e;
    c->message = text;
    c->msg = json_incref(e->msg);
    c->next = NULL;
    if (ml->inbox.tail != NULL)
        ml->inbox.tail->next = c;
    else
        ml->inbox.head = c;
    ml->inbox.tail = c;
    return true;
}

ms__life_event *ms__inbox_take(ms__models *ml)
{
    ms__life_event *e = ml->inbox.head;
    if (e == NULL)
        return NULL;
    ml->inbox.head = e->next;
    if (ml->inbox.head == NULL)
        ml->inbox.tail = NULL;
    e->next = NULL;
    return e;
}

void ms__inbox_free(ms__life_event *e)
{
    if (e == NULL)
        return;
    json_decref(e->msg);
    free(e->message);
    free(e);
}

void ms__inbox_forget(ms__models *ml, const ms__model *m)
{
    ms__life_event **pe = &ml->inbox.head, *last = NULL;
    while (*pe != NULL) {
        ms__life_event *e = *pe;
        if (e->m == m) {
            *pe = e->next;
            ms__inbox_free(e);
        } else {
            last = e;
            pe = &e->next;
        }
    }
    ml->inbox.tail = last;
    ms__notice **pn = &ml->inbox.nhead, *nlast = NULL;
    while (*pn != NULL) {
        ms__notice *n = *pn;
        if (n->m == m) {
            *pn = n->next;
            free(n->message);
            free(n);
        } else {
            nlast = n;
            pn = &n->next;
        }
    }
    ml->inbox.ntail = nlast;
}

void ms__notice_post(ms__models *ml, ms__model *m, int what, int code, const char *message)
{
    ms__notice *n = malloc(sizeof *n);
    char *text = message != NULL ? strdup(message) : NULL;
    if (n == NULL || (message != NULL && text == NULL)) {
        /* Told at once rather than lost: the callback must not change m (models.h). */
        free(n);
        free(text);
        ml->settled(ml->settled_ctx, m, what, code, message);
        return;
    }
    *n = (ms__notice){m, what, code, text, NULL};
    if (ml->inbox.ntail != NULL)
        ml->inbox.ntail->next = n;
    else
        ml->inbox.nhead = n;
    ml->inbox.ntail = n;
}

void ms__notice_flush(ms__models *ml)
{
    ms__notice *n;
    while ((n = ml->inbox.nhead) != NULL) {
        ml->inbox.nhead = n->next;
        if (ml->inbox.nhead == NULL)
            ml->inbox.ntail = NULL;
        ml->settled(ml->settled_ctx, n->m, n->what, n->code, n->message);
        free(n->message);
        free(n);
    }
}

void ms__inbox_clear(ms__models *ml)
{
    ms__life_event *e;
    while ((e = ms__inbox_take(ml)) != NULL)
        ms__inbox_free(e);
    while (ml->inbox.nhead != NULL) {
        ms__notice *n = ml->inbox.nhead;
        ml->inbox.nhead = n->next;
        free(n->message);
        free(n);
    }
    ml->inbox.ntail = NULL;
}

void ms__inbox_event(ms__models *ml, ms__model *m, int ev)
{
    ms__inbox_post(ml, &(ms__life_event){.m = m, .ev = ev, .inst = -1});
}

void ms__inbox_error(ms__models *ml, ms__model *m, int ev, int code, const char *message)
{
    ms__inbox_post(ml, &(ms__life_event){
                           .m = m, .ev = ev, .inst = -1, .code = code, .message = (char *)message});
}
