/* The small shared helpers: errors table, dtypes, checked arithmetic, shapes, tags, paths, the
 * arena and its seals, stats pages, /proc readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "modelshare.h"
#include "../../src/common/arena.h"
#include "../../src/common/dtype.h"
#include "../../src/common/errors.h"
#include "../../src/common/log.h"
#include "../../src/common/paths.h"
#include "../../src/common/procmem.h"
#include "../../src/common/proto.h"
#include "../../src/common/stats.h"
#include "../../src/common/util.h"

static void test_errors_table(void **state)
{
    (void)state;
    assert_string_equal(ms_strerror(MS_E_UNKNOWN_TAG), "no model with this tag");
    assert_string_equal(ms_errname(MS_E_UNKNOWN_TAG), "MS_E_UNKNOWN_TAG");
    assert_string_equal(ms_errname(MS_E_BACKEND), "MS_E_BACKEND");
    assert_string_equal(ms_errname(MS_OK), "MS_OK");
    assert_int_equal(MS_E_IO, -23);
    /* Every code from -1 down to the last has a name and a text of its own. */
    for (int code = -1; code >= MS_E_BACKEND; code--) {
        assert_string_not_equal(ms_errname(code), "MS_E_UNKNOWN");
        assert_string_not_equal(ms_strerror(code), "unknown error");
    }
    assert_string_equal(ms_errname(-1000), "MS_E_UNKNOWN");
    assert_string_equal(ms_strerror(12345), "unknown error");
    assert_string_equal(ms_strerror(MS_OK), "success");
    assert_true(ms__error_known(MS_OK));
    assert_true(ms__error_known(MS_E_INVAL));
    assert_true(ms__error_known(MS_E_BACKEND));
    assert_false(ms__error_known(MS_E_BACKEND - 1));
    assert_false(ms__error_known(1));
    assert_false(ms__error_known(-4294967297ll)); /* not MS_E_INVAL once truncated */
    assert_int_equal(ms_version(), MS_VERSION_HEX);
}

static void test_dtypes(void **state)
{
    (void)state;
    static const struct {
        int dtype;
        size_t size;
        const char *name, *st;
    } t[] = {
        {MS_FLOAT32, 4, "float32", "F32"},    {MS_FLOAT16, 2, "float16", "F16"},
        {MS_BFLOAT16, 2, "bfloat16", "BF16"}, {MS_FLOAT64, 8, "float64", "F64"},
        {MS_INT8, 1, "int8", "I8"},           {MS_UINT8, 1, "uint8", "U8"},
        {MS_INT16, 2, "int16", "I16"},        {MS_INT32, 4, "int32", "I32"},
        {MS_INT64, 8, "int64", "I64"},        {MS_BOOL, 1, "bool", "BOOL"},
    };
    for (size_t i = 0; i < MS__ARRAY_LEN(t); i++) {
        assert_int_equal(ms_dtype_size(t[i].dtype), t[i].size);
        assert_string_equal(ms_dtype_name(t[i].dtype), t[i].name);
        assert_int_equal(ms__dtype_from_name(t[i].name), t[i].dtype);
        assert_int_equal(ms__dtype_from_name(t[i].st), t[i].dtype);
    }
    assert_int_equal(ms_dtype_size(0), 0);
    assert_int_equal(ms_dtype_size(11), 0);
    assert_int_equal(ms_dtype_size(-1), 0);
    assert_string_equal(ms_dtype_name(0), "unknown");
    assert_int_equal(ms__dtype_from_name("float"), 0);
    assert_int_equal(ms__dtype_from_name("f32"), 0);
    assert_int_equal(ms__dtype_from_name(""), 0);
    assert_int_equal(ms__dtype_from_name(NULL), 0);
    assert_int_equal(ms__dtype_from_st("float32"), 0);
    assert_int_equal(ms__dtype_from_st("BF16"), MS_BFLOAT16);
    assert_true(ms__dtype_from_npy_code("f4")->dtype == MS_FLOAT32);
    assert_true(ms__dtype_from_npy_code("b1")->dtype == MS_BOOL);
    assert_null(ms__dtype_from_npy_code("f16"));
    assert_null(ms__dtype_info_of(MS_BFLOAT16)->npy);
    char list[128];
    ms__dtype_list(MS__DTYPE_NPY, "'", " or ", list, sizeof list);
    assert_string_equal(list, "'<f4', '<f2', '<f8', '|i1', '|u1', '<i2', '<i4', '<i8' or '|b1'");
    ms__dtype_list(MS__DTYPE_ST, "", ", ", list, sizeof list);
    assert_string_equal(list, "F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL");
    ms__dtype_list(MS__DTYPE_NAME, "", " or ", list, 8); /* truncated, still terminated */
    assert_string_equal(list, "float32");
}

static void test_overflow(void **state)
{
    (void)state;
    size_t r = 7;
    assert_false(ms__mul_overflow(3, 4, &r));
    assert_int_equal(r, 12);
    r = 7;
    assert_true(ms__mul_overflow(SIZE_MAX / 2 + 1, 2, &r));
    assert_int_equal(r, 7);
    assert_false(ms__add_overflow(SIZE_MAX - 1, 1, &r));
    assert_true(r == SIZE_MAX);
    r = 7;
    assert_true(ms__add_overflow(SIZE_MAX, 1, &r));
    assert_int_equal(r, 7);
}

/* An even split gives the remainder to part 0, so the parts add up to the whole. */
static void test_even_part(void **state)
{
    (void)state;
    assert_int_equal(ms__even_part(10, 4, 0), 4);
    for (int i = 1; i < 4; i++)
        assert_int_equal(ms__even_part(10, 4, i), 2);
    uint64_t sum = 0;
    for (int i = 0; i < 7; i++)
        sum += ms__even_part(UINT64_MAX, 7, i);
    assert_true(sum == UINT64_MAX);
    assert_true(ms__even_part(5, 0, 0) == 5); /* no parts counts as one */
}

static void test_shape_numel(void **state)
{
    (void)state;
    size_t n = 99;
    assert_true(ms__shape_numel(0, NULL, &n));
    assert_int_equal(n, 1);
    int64_t s1[] = {8, 1024};
    assert_true(ms__shape_numel(2, s1, &n));
    assert_int_equal(n, 8192);
    int64_t s0[] = {8, 0, 5};
    assert_true(ms__shape_numel(3, s0, &n));
    assert_int_equal(n, 0);
    n = 99;
    int64_t neg[] = {4, -1};
    assert_false(ms__shape_numel(2, neg, &n));
    assert_int_equal(n, 99);
    int64_t big[] = {INT64_MAX, INT64_MAX};
    assert_false(ms__shape_numel(2, big, &n));
    int64_t big2[] = {1ll << 32, 1ll << 32};
    assert_false(ms__shape_numel(2, big2, &n));
    int64_t ok[] = {1ll << 31, 1ll << 31};
    assert_true(ms__shape_numel(2, ok, &n));
    assert_true(n == (size_t)1 << 62);
    assert_false(ms__shape_numel(-1, s1, &n));
}

static void test_shape_str(void **state)
{
    (void)state;
    char buf[64];
    int64_t s[] = {-1, 1024, 3};
    ms__shape_str(3, s, buf, sizeof buf);
    assert_string_equal(buf, "[N, 1024, 3]");
    ms__shape_str(0, NULL, buf, sizeof buf);
    assert_string_equal(buf, "[]");
    char small[6];
    ms__shape_str(3, s, small, sizeof small);
    assert_int_equal(strlen(small), 5); /* truncated, NUL-terminated */
}

static void test_tags(void **state)
{
    (void)state;
    assert_true(ms__tag_valid("mlp"));
    assert_true(ms__tag_valid("org/model:v1.2@cpu+x_y-z"));
    assert_false(ms__tag_valid(""));
    assert_false(ms__tag_valid(NULL));
    assert_false(ms__tag_valid("a b"));
    assert_false(ms__tag_valid("a\nb"));
    assert_false(ms__tag_valid("caf\xc3\xa9"));
    assert_false(ms__tag_valid("a\"b"));
    char t[MS__TAG_MAX + 2];
    memset(t, 'a', sizeof t);
    t[MS__TAG_MAX] = '\0';
    assert_true(ms__tag_valid(t));
    t[MS__TAG_MAX] = 'a';
    t[MS__TAG_MAX + 1] = '\0';
    assert_false(ms__tag_valid(t));
}

static void test_fail(void **state)
{
    (void)state;
    char err[16];
    assert_int_equal(ms__fail(err, sizeof err, MS_E_SHAPE, "expected %d got %s", 3, "a long tail"),
                     MS_E_SHAPE);
    assert_string_equal(err, "expected 3 got ");
    assert_int_equal(ms__fail(NULL, 0, MS_E_IO, "x"), MS_E_IO);
}

static void test_socket_path(void **state)
{
    (void)state;
    char buf[128], err[MS__ERRLEN];
    setenv("MODELSHARE_SOCKET", "/tmp/x/y.sock", 1);
    assert_int_equal(ms__socket_path_default(buf, sizeof buf, err, sizeof err), 0);
    assert_string_equal(buf, "/tmp/x/y.sock");
    unsetenv("MODELSHARE_SOCKET");
    setenv("XDG_RUNTIME_DIR", "/run/user/77", 1);
    assert_int_equal(ms__socket_path_default(buf, sizeof buf, err, sizeof err), 0);
    assert_string_equal(buf, "/run/user/77/modelshare/modelshared.sock");
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(ms__socket_path_default(buf, sizeof buf, err, sizeof err), 0);
    char want[64];
    snprintf(want, sizeof want, "/tmp/modelshare-%lu/modelshared.sock", (unsigned long)geteuid());
    assert_string_equal(buf, want);
    char longp[200];
    memset(longp, 'a', sizeof longp);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    setenv("MODELSHARE_SOCKET", longp, 1);
    assert_int_equal(ms__socket_path_default(buf, sizeof buf, err, sizeof err), MS_E_INVAL);
    assert_non_null(strstr(err, "socket path"));
    unsetenv("MODELSHARE_SOCKET");

    assert_int_equal(ms__path_with_suffix("/a/b.sock", ".lock", buf, sizeof buf), 0);
    assert_string_equal(buf, "/a/b.sock.lock");
    assert_int_equal(ms__path_with_suffix("/a/b.sock", ".lock", buf, 8), MS_E_INVAL);
}

static void test_socket_dir(void **state)
{
    (void)state;
    char dir[64], sock[128], err[MS__ERRLEN];
    strcpy(dir, "/tmp/ms_test_util_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/sub/s.sock", dir);
    assert_int_equal(ms__socket_dir_prepare(sock, err, sizeof err), 0);
    char sub[96];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    /* Again: exists, fine. */
    assert_int_equal(ms__socket_dir_prepare(sock, err, sizeof err), 0);
    /* Group-writable: refused. */
    assert_int_equal(chmod(sub, 0770), 0);
    assert_int_equal(ms__socket_dir_prepare(sock, err, sizeof err), MS_E_PERMISSION);
    assert_non_null(strstr(err, "group or others"));
    assert_int_equal(chmod(sub, 0755), 0);
    assert_int_equal(ms__socket_dir_prepare(sock, err, sizeof err), 0);
    /* Not a directory. */
    rmdir(sub);
    int f = open(sub, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(f >= 0);
    close(f);
    assert_int_equal(ms__socket_dir_prepare(sock, err, sizeof err), MS_E_PERMISSION);
    unlink(sub);
    rmdir(dir);
}

static void test_sibling(void **state)
{
    (void)state;
    char buf[4096], self[4096];
    unsetenv("MS_TEST_SIBLING");
    assert_int_equal(ms__sibling_binary("modelshared", "MS_TEST_SIBLING", buf, sizeof buf), 0);
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    strcat(self, "/modelshared");
    assert_string_equal(buf, self);
    setenv("MS_TEST_SIBLING", "/opt/x/modelshared", 1);
    assert_int_equal(ms__sibling_binary("modelshared", "MS_TEST_SIBLING", buf, sizeof buf), 0);
    assert_string_equal(buf, "/opt/x/modelshared");
    setenv("MS_TEST_SIBLING", "", 1);
    assert_int_equal(ms__sibling_binary("modelshared", "MS_TEST_SIBLING", buf, sizeof buf), 0);
    assert_string_equal(buf, self);
    assert_int_equal(ms__sibling_binary("modelshared", NULL, buf, 4), MS_E_INVAL);
    unsetenv("MS_TEST_SIBLING");
}

static void test_arena(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    int fd;
    void *base;
    uint64_t cap = 8ull << 20;
    assert_int_equal(ms__arena_create(cap, &fd, &base, err, sizeof err), 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    ms__arena_header *h = base;
    assert_int_equal(h->magic, MS__ARENA_MAGIC);
    assert_true(h->capacity == cap);
    /* The seals hold: the file cannot shrink or grow. */
    assert_int_not_equal(ftruncate(fd, 1 << 20), 0);
    assert_int_not_equal(ftruncate(fd, 16 << 20), 0);
    ((char *)base)[cap - 1] = 42;

    void *b2;
    uint64_t c2;
    assert_int_equal(ms__arena_map(fd, &b2, &c2, err, sizeof err), 0);
    assert_true(c2 == cap);
    assert_int_equal(((char *)b2)[cap - 1], 42);
    ms__arena_unmap(b2, c2);

    ms__arena_header *hh;
    assert_int_equal(ms__arena_map_header(fd, &hh, err, sizeof err), 0);
    atomic_store(&hh->state, MS__ARENA_UNLOADED);
    assert_int_equal(atomic_load(&h->state), MS__ARENA_UNLOADED);
    munmap(hh, MS__ARENA_HEADER);

    /* Bad magic: refused. */
    h->magic = 0;
    assert_int_equal(ms__arena_map(fd, &b2, &c2, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "magic"));
    ms__arena_unmap(base, cap);
    close(fd);

    assert_int_equal(ms__arena_create(1000, &fd, &base, err, sizeof err), MS_E_INVAL);
    assert_int_equal(ms__arena_create(MS__ARENA_MAX + 64, &fd, &base, err, sizeof err), MS_E_INVAL);
}

/* A memfd that looks like an arena but is not sealed: the worker must refuse it. */
static void test_arena_unsealed(void **state)
{
    (void)state;
    char err[MS__ERRLEN];
    uint64_t cap = 2ull << 20;
    int fd = memfd_create("fake-arena", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)cap), 0);
    ms__arena_header h = {.magic = MS__ARENA_MAGIC, .version = 2, .capacity = cap};
    assert_int_equal(pwrite(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    void *b;
    uint64_t c;
    assert_int_equal(ms__arena_map(fd, &b, &c, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "seal"));
    ms__arena_header *hp;
    assert_int_equal(ms__arena_map_header(fd, &hp, err, sizeof err), MS_E_PROTOCOL);
    close(fd);

    /* Sealed, but only against shrinking: still refused. */
    fd = memfd_create("fake-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)cap), 0);
    assert_int_equal(pwrite(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
    assert_int_equal(ms__arena_map(fd, &b, &c, err, sizeof err), MS_E_PROTOCOL);
    close(fd);

    /* Fully sealed but too small. */
    fd = memfd_create("fake-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(ftruncate(fd, 4096), 0);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
    assert_int_equal(ms__arena_map(fd, &b, &c, err, sizeof err), MS_E_PROTOCOL);
    assert_non_null(strstr(err, "bytes"));
    close(fd);

    /* Header capacity that disagrees with the file size. */
    fd = memfd_create("fake-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(ftruncate(fd, (off_t)cap), 0);
    h.capacity = cap * 2;
    assert_int_equal(pwrite(fd, &h, sizeof h, 0), (ssize_t)sizeof h);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
    assert_int_equal(ms__arena_map(fd, &b, &c, err, sizeof err), MS_E_PROTOCOL);
    close(fd);
}

static void test_arena_env(void **state)
{
    (void)state;
    unsetenv("MODELSHARE_ARENA_BYTES");
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_DEFAULT);
    setenv("MODELSHARE_ARENA_BYTES", "64M", 1); /* SI: 64000000 bytes, as "64MB" */
    assert_true(ms__arena_capacity_from_env() == 64000000ull);
    setenv("MODELSHARE_ARENA_BYTES", "64MiB", 1);
    assert_true(ms__arena_capacity_from_env() == 64ull << 20);
    setenv("MODELSHARE_ARENA_BYTES", "4GB", 1);
    assert_true(ms__arena_capacity_from_env() == 4000000000ull);
    setenv("MODELSHARE_ARENA_BYTES", "100000063", 1); /* rounded down to 64 bytes */
    assert_true(ms__arena_capacity_from_env() == 100000000ull);
    setenv("MODELSHARE_ARENA_BYTES", "", 1);
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_DEFAULT);
    setenv("MODELSHARE_ARENA_BYTES", "2GiB", 1);
    assert_true(ms__arena_capacity_from_env() == 2ull << 30);
    setenv("MODELSHARE_ARENA_BYTES", "12582912", 1);
    assert_true(ms__arena_capacity_from_env() == 12ull << 20);
    setenv("MODELSHARE_ARENA_BYTES", "512k", 1);
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_MIN);
    setenv("MODELSHARE_ARENA_BYTES", "1000G", 1);
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_MAX);
    setenv("MODELSHARE_ARENA_BYTES", "99999999999999999999999", 1);
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_MAX);
    setenv("MODELSHARE_ARENA_BYTES", "lots", 1);
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_DEFAULT);
    setenv("MODELSHARE_ARENA_BYTES", "-5M", 1);
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_DEFAULT);
    setenv("MODELSHARE_ARENA_BYTES", "5Q", 1);
    assert_true(ms__arena_capacity_from_env() == MS__ARENA_DEFAULT);
    unsetenv("MODELSHARE_ARENA_BYTES");
}

static void test_stats(void **state)
{
    (void)state;
    int fd;
    ms__stats *s;
    assert_int_equal(ms__stats_create(&fd, &s), 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_not_equal(ftruncate(fd, 0), 0); /* sealed */
    ms__stats *w;
    assert_int_equal(ms__stats_map(fd, &w), 0);
    atomic_fetch_add(&w->requests, 5);
    assert_true(atomic_load(&s->requests) == 5);
    ms__stats_unmap(w);
    ms__stats_unmap(s);
    close(fd);
    int bad = memfd_create("x", MFD_CLOEXEC);
    assert_int_equal(ftruncate(bad, 4096), 0);
    assert_int_equal(ms__stats_map(bad, &w), MS_E_PROTOCOL);
    close(bad);
    ms__stats_unmap(NULL);
}

static void test_procmem(void **state)
{
    (void)state;
    uint64_t pss = 0, rss = 0, total = 0, avail = 0;
    assert_int_equal(ms__proc_pss(0, &pss), 0);
    assert_true(pss > 0);
    assert_int_equal(ms__proc_rss(getpid(), &rss), 0);
    assert_true(rss > 0);
    assert_int_equal(ms__sys_mem(&total, &avail), 0);
    assert_true(total > 0 && avail <= total);
    assert_int_equal(ms__proc_rss(999999999, &rss), MS_E_IO);
}

static void test_log_level(void **state)
{
    (void)state;
    assert_int_equal(ms__log_level_parse("error"), MS_LOG_ERROR);
    assert_int_equal(ms__log_level_parse("warn"), MS_LOG_WARN);
    assert_int_equal(ms__log_level_parse("info"), MS_LOG_INFO);
    assert_int_equal(ms__log_level_parse("debug"), MS_LOG_DEBUG);
    assert_int_equal(ms__log_level_parse("loud"), -1);
    assert_int_equal(ms__log_level_parse(NULL), -1);
}

/* A log line has the documented shape: "<ISO time>Z prog[pid] level: message". */
static void test_log_line(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int saved = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    ms__log_init("modelshared", MS_LOG_INFO);
    ms__log_info("hello %d\n", 42);
    ms__log_debug("hidden");
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(p[1]);
    char buf[512] = {0};
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    close(p[0]);
    assert_true(n > 0);
    char want[64];
    snprintf(want, sizeof want, "Z modelshared[%ld] info: hello 42\n", (long)getpid());
    assert_non_null(strstr(buf, want));
    assert_null(strstr(buf, "hidden"));
    assert_null(strstr(buf, "\n\n")); /* a message's own newline is not doubled */
    assert_int_equal(buf[4], '-');
    assert_int_equal(buf[10], 'T');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_table),   cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_overflow),       cmocka_unit_test(test_even_part),
        cmocka_unit_test(test_shape_numel),    cmocka_unit_test(test_shape_str),
        cmocka_unit_test(test_tags),           cmocka_unit_test(test_fail),
        cmocka_unit_test(test_socket_path),    cmocka_unit_test(test_socket_dir),
        cmocka_unit_test(test_sibling),        cmocka_unit_test(test_arena),
        cmocka_unit_test(test_arena_unsealed), cmocka_unit_test(test_arena_env),
        cmocka_unit_test(test_stats),          cmocka_unit_test(test_procmem),
        cmocka_unit_test(test_log_level),      cmocka_unit_test(test_log_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
