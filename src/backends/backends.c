/* The table of backends a worker can host. */
#include <string.h>

#include "backend.h"
#include "dense/dense.h"
#include "identity/identity.h"
#include "../common/util.h"

static const ms__backend_ops *const backends[] = {
    &ms__dense_ops,
    &ms__identity_ops,
};

const ms__backend_ops *ms__backend_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < MS__ARRAY_LEN(backends); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}
