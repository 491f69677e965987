/* The error table's internal view: whether a number is one of its codes. The public views
 * (ms_strerror, ms_errname) are in modelshare.h. */
#ifndef MS_ERRORS_H
#define MS_ERRORS_H

#include <stdbool.h>

/* True when code is MS_OK or one of the MS_E_* codes of MS_ERRNO_MAP; false for anything else
 * (a code from a newer peer, a positive number, garbage off the wire). */
bool ms__error_known(long long code);

#endif
