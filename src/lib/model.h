/* Model handles: acquire, release, signature. */
#ifndef MS_LIB_MODEL_H
#define MS_LIB_MODEL_H

#include <jansson.h>
#include <stddef.h>

#include "internal.h"

/* Parses spec_json into a JSON object with "weights" made absolute. *out new reference.
 * MS_E_SPEC with a message when the text is not a JSON object. */
int ms__lib_spec_prepare(const char *spec_json, json_t **out, char *err, size_t errlen);

/* Ends a model handle already unlinked from its client: tells the daemon (unless the connection
 * is lost), unmaps the doors and the arena, frees every tensor and the handle. Returns 0 or
 * MS_E_DAEMON_LOST (message recorded). */
int ms__lib_model_end(ms_model *model);
/* The same without a word to the daemon (ms_client_forget): the handle's doors and arena are
 * unmapped, its descriptor closed, its tensors and the handle freed. */
void ms__lib_model_drop(ms_model *model);

#endif
