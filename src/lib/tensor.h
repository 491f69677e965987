/* Tensors in a model's arena, placed by its allocator (alloc.h). */
#ifndef MS_LIB_TENSOR_H
#define MS_LIB_TENSOR_H

#include "internal.h"

/* Makes a tensor of the model with nbytes of room (model lock held); the model owns it. Shape is
 * set by the caller. Errors: MS_E_TOO_LARGE, MS_E_NOMEM, MS_E_DAEMON_LOST (in a child of fork())
 * (message recorded). */
int ms__tensor_new_locked(ms_model *model, uint64_t nbytes, ms_tensor **out);
/* Frees a tensor and its room (model lock held). */
void ms__tensor_free_locked(ms_tensor *t);
/* Gives back the tail of a tensor's room beyond keep bytes (model lock held). */
void ms__tensor_shrink_locked(ms_tensor *t, uint64_t keep);
/* Frees every tensor handle of the model, not their room (model lock held): the model ends. */
void ms__tensor_free_all_locked(ms_model *model);

#endif
