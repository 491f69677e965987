/* The identity backend (output = input), for measuring and testing modelshare itself. */
#ifndef MS_BACKEND_IDENTITY_H
#define MS_BACKEND_IDENTITY_H

#include "../backend.h"

extern const ms__backend_ops ms__identity_ops;

#endif
