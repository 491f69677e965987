/* The daemon's set of models as the event loop sees it: start, stop, timers, idleness. See
 * models.h. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "modelshare.h"
#include "models_int.h"

void ms__models_init(ms__models *ml, ms__settled_fn settled, void *ctx)
{
    memset(ml, 0, sizeof *ml);
    ms__registry_init(&ml->reg, NULL, NULL);
    LIST_INIT(&ml->sup.all);
    LIST_INIT(&ml->sup.retired);
    ms__budgets_init(&ml->budgets);
    ml->settled = settled;
    ml->settled_ctx = ctx;
    ml->ops = &ms__launch_ops;
}

int ms__models_start(ms__models *ml, int epfd, const char *memory, const char *log_level, char *err,
                     size_t errlen)
{
    int rc = ms__admission_init(&ml->budgets, memory, err, errlen);
    if (rc != 0)
        return rc;
    return ms__sup_init(&ml->sup, epfd, log_level, err, errlen);
}

void ms__models_free(ms__models *ml)
{
    /* Workers still there (only when the loop failed): they must not outlive us. */
    while (!LIST_EMPTY(&ml->sup.all)) {
        ms__wproc *w = LIST_FIRST(&ml->sup.all);
        kill(w->pid, SIGKILL);
        int status;
        while (ms__sup_reap(&ml->sup, w, &status) == 0)
            usleep(1000);
        if (w->model != NULL)
            ms__model_detach_worker(w->model, w);
        ms__sup_free(&ml->sup, w);
    }
    ms__sup_collect(&ml->sup);
    ms__inbox_clear(ml);
    ms__registry_destroy(&ml->reg);
}

void ms__models_shutdown(ms__models *ml)
{
    ml->stopping = true;
    ms__life_shutdown(ml);
    int64_t now = ms__registry_now(&ml->reg);
    for (ms__wproc *w = LIST_FIRST(&ml->sup.all); w != NULL; w = LIST_NEXT(w, link))
        ms__sup_stop(&ml->sup, w, now);
}

int64_t ms__models_timers(ms__models *ml, int64_t now)
{
    int64_t next = INT64_MAX, t;
    if (!ml->stopping)
        next = ms__life_timers(ml, now);
    if (ms__sup_timers(&ml->sup, now, &t) && t < next)
        next = t;
    return next;
}

bool ms__models_idle(const ms__models *ml)
{
    for (int i = 0; i < ml->reg.nmodels; i++)
        if (ml->reg.models[i]->state != MS__MODEL_FAILED)
            return false;
    return ml->reg.nclients == 0 && ml->sup.count == 0;
}
