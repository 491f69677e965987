/*
 * A model's named inputs and outputs, as a python model's worker reports them (ready's
 * signature, proto.h: "inputs" and "outputs" beside "input" and "output"):
 *   [{"name":"input_ids","dtype":"int64","shape":[-1,-1]}, ...]
 * in the model's order, at most MS__MF_MAX each, names of 1 to 31 of [A-Za-z0-9_.:-] (those of
 * ms_infer_n), each dtype an ms_dtype name, "str" or "bytes" (a list of strings), or null (not
 * known), each shape an array of at most MS_MAX_RANK integers >= -1 (-1: varies) or null.
 */
#ifndef MS_SIGNAMES_H
#define MS_SIGNAMES_H

#include <jansson.h>
#include <stddef.h>

#include "manifest.h" /* MS__MF_MAX, MS__MF_NAME */
#include "proto.h"    /* ms__sig */

typedef struct ms__sig_entry {
    char name[MS__MF_NAME];
    ms__sig sig;     /* dtype: an ms_dtype, MS_TEXT_UTF8 / MS_TEXT_BYTES, or 0 (not known) */
    int shape_known; /* 0: "shape" was null (sig.rank 0 then says nothing) */
} ms__sig_entry;

/* Decodes the list at key `which` of signature object j ("inputs" or "outputs") into e (room for
 * MS__MF_MAX) and *n. A missing or null list is *n = -1 (the model does not name its tensors).
 * Errors: MS_E_PROTOCOL with what was expected in err. */
int ms__sig_list_from_json(const json_t *j, const char *which, ms__sig_entry *e, int *n, char *err,
                           size_t errlen);

#endif
