/* Tensors in a model's arena, placed by its allocator (alloc.h). */
#ifndef MS_LIB_TENSOR_H
#define MS_LIB_TENSOR_H

#include "internal.h"

/* Makes a tensor of the model with nbytes of room (model lock held); the model owns it. Shape is
 * set by the caller. Errors: MS_E_TOO_LARGE, MS_E_NOMEM, MS_E_DAEMON_LOST (in a child of fork())
 * (message recorded). */
int ms__tensor_new_locked(ms_model *model, uint64_t nbytes, ms_tensor **out);
/* Frees a tensor and its room (model lock held); one that a timed-out request holds is freed when
 * the last such request is done (ms__tensor_unhold_locked). */
void ms__tensor_free_locked(ms_tensor *t);
/* A timed-out request whose worker may still read or write t holds it (model lock held). */
void ms__tensor_hold_locked(ms_tensor *t);
/* That request is done (or its worker gone): t freed now if its owner freed it meanwhile. */
void ms__tensor_unhold_locked(ms_tensor *t);
/* Gives back the tail of a tensor's room beyond keep bytes (model lock held). */
void ms__tensor_shrink_locked(ms_tensor *t, uint64_t keep);
/* Frees every tensor handle of the model, not their room (model lock held): the model ends. */
void ms__tensor_free_all_locked(ms_model *model);

/* Checks dtype, rank and shape against the model's arena; *nbytes is the tensor's size. Errors:
 * MS_E_DTYPE, MS_E_INVAL, MS_E_TOO_LARGE (message recorded). */
int ms__tensor_check_shape(ms_model *model, int dtype, int rank, const int64_t *shape,
                           size_t *nbytes);
/* Whether [off, off + n) of m's arena lies in the bytes of a live tensor of m that has room of its
 * own (model lock held). */
bool ms__tensor_holds_locked(const ms_model *m, uint64_t off, uint64_t n);

#endif
