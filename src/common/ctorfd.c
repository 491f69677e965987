/* A python constructor's pickle in a sealed memfd: the daemon's check of it. See ctorfd.h. */
#include "ctorfd.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "modelshare.h"
#include "util.h"

int ms__ctorfd_check(int fd, uint64_t size, char *err, size_t errlen)
{
    struct stat st;
    if (size == 0 || size > MS__CTOR_MAX)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "python.constructor_size: expected 1 to %llu bytes, got %llu",
                        (unsigned long long)MS__CTOR_MAX, (unsigned long long)size);
    if (fd < 0 || fstat(fd, &st) != 0)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "the constructor descriptor: expected an open memfd, got one fstat "
                        "refuses (%s)",
                        strerror(fd < 0 ? EBADF : errno));
    struct statfs fs;
    if (!S_ISREG(st.st_mode))
        return ms__fail(err, errlen, MS_E_SPEC,
                        "the constructor descriptor: expected a memfd (a regular file), got file "
                        "mode %o",
                        (unsigned)st.st_mode);
    if (fstatfs(fd, &fs) != 0 || (unsigned long)fs.f_type != (unsigned long)TMPFS_MAGIC)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "the constructor descriptor: expected a memfd of tmpfs (filesystem magic "
                        "0x%lx), got another file system (hugetlbfs is refused)",
                        (unsigned long)TMPFS_MAGIC);
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "the constructor descriptor: expected a memfd made with "
                        "MFD_ALLOW_SEALING, got a file whose seals cannot be read (%s)",
                        strerror(errno));
    if ((seals & MS__CTOR_SEALS) != MS__CTOR_SEALS)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "the constructor memfd: expected it sealed against write, shrink and grow "
                        "(seals 0x%x), got seals 0x%x",
                        (unsigned)MS__CTOR_SEALS, (unsigned)seals);
    if (st.st_size < 0 || (uint64_t)st.st_size != size)
        return ms__fail(err, errlen, MS_E_SPEC,
                        "the constructor memfd: expected %llu bytes (python.constructor_size), "
                        "got %lld",
                        (unsigned long long)size, (long long)st.st_size);
    return 0;
}
