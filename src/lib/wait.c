/* A calling thread's wait options (wait.h). */
#include "wait.h"

#include <stddef.h>

static _Thread_local const ms__wait *current;

const ms__wait *ms__wait_set(const ms__wait *w)
{
    const ms__wait *old = current;
    current = w;
    return old;
}

int64_t ms__wait_timeout(int64_t handle_ns)
{
    return current != NULL && current->timeout_ns > 0 ? current->timeout_ns : handle_ns;
}

bool ms__wait_cancelled(void)
{
    return current != NULL && current->cancelled != NULL && current->cancelled(current->arg) != 0;
}
