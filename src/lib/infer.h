/* ms_infer with the data plane's optional request flags, for the Python package. */
#ifndef MS_LIB_INFER_H
#define MS_LIB_INFER_H

#include <stdbool.h>
#include <stdint.h>

#include "modelshare.h"
#include "../common/records.h"

/* ms_infer(model, input, output) with flags of MS__REQ_OBJECT and MS__REQ_OWN_INPUT
 * (records.h): the caller reads an answer that is not one array, and the input is a copy of its
 * own that the model may write. On success *object says whether the worker answered a pickled
 * object (then *output is a uint8 tensor of rank 1 holding the pickle, owned by the caller as an
 * ms_infer output is). Errors as ms_infer; MS_E_INVAL for other flags. */
int ms__infer_flags(ms_model *model, const ms_tensor *input, uint32_t flags, ms_tensor **output,
                    bool *object);

/* One request record for input (flags: MS__REQ_*) with *room bytes of output room (*out, made
 * here), published and waited for (model lock held; released while waiting); when the worker
 * answers that the room is too small, once more with the room it asks for (*room). *resp is the
 * response, its status not yet looked at. On MS_E_TIMEOUT *out is NULL (freed once the worker
 * is done with it), and input and the nnamed tensors of named that the request names (ms_infer_n's
 * manifest names them) are held as long: a free of one of them meanwhile takes effect then.
 * (infer.c; multi.c uses it for ms_infer_n) */
int ms__round_trip(ms_model *model, uint32_t flags, const ms_tensor *input,
                   const ms_tensor *const *named, int nnamed, uint64_t *room, ms_tensor **out,
                   ms__resp *resp);
/* ms_infer_n with MS__REQ_OBJECT in flags or not: a python model that runs the request alone may
 * answer anything, then *outputs holds one uint8 output "0" (its pickle) and ms_outputs_count's
 * form is 6 (MS__FORM_OBJECT). Bit i of own: input i is a copy made for this call, which the
 * model may write (MS__MF_OWN). For the Python package. (multi.c) */
int ms__infer_n_flags(ms_model *model, const ms_named *inputs, int n, int form, uint32_t flags,
                      uint32_t own, ms_tensor **outputs);

/* Whether data lies in the arena of model or of another model of its client: where
 * ms_tensor_view may find it (it may still refuse it: not inside a live tensor). A cheap look,
 * with no error recorded, for a caller that copies what is elsewhere. (view.c) */
bool ms__in_arenas(ms_model *model, const void *data);

#endif
