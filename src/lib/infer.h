/* ms_infer with the data plane's optional request flags, for the Python package. */
#ifndef MS_LIB_INFER_H
#define MS_LIB_INFER_H

#include <stdbool.h>
#include <stdint.h>

#include "modelshare.h"

/* ms_infer(model, input, output) with flags of MS__REQ_OBJECT and MS__REQ_OWN_INPUT
 * (records.h): the caller reads an answer that is not one array, and the input is a copy of its
 * own that the model may write. On success *object says whether the worker answered a pickled
 * object (then *output is a uint8 tensor of rank 1 holding the pickle, owned by the caller as an
 * ms_infer output is). Errors as ms_infer; MS_E_INVAL for other flags. */
int ms__infer_flags(ms_model *model, const ms_tensor *input, uint32_t flags, ms_tensor **output,
                    bool *object);

#endif
