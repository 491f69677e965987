/*
 * ms-testclient: a small client of the C API that the integration tests (pytest) drive as a
 * separate process.
 *
 *   ms-testclient connect
 *       Connects (starting the daemon when none runs), prints "connected PID" with the daemon's
 * pid. ms-testclient session TAG SPEC_JSON|- Acquires TAG ("-": attach to the loaded model without
 * a spec), prints "acquired", then reads commands on stdin, one per line, answering each with one
 * line: infer IN.npy OUT.npy   -> "ok" | "error MS_E_NAME message" release                ->
 * "released" | "error ..." quit                   -> exits 0 (without releasing: the connection's
 * end does it) EOF on stdin: exits 0. Errors print "error MS_E_NAME message" on stdout and exit 1.
 */
#include <modelshare.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/npy.h"

static int fail(ms_client *c, int rc)
{
    printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
    fflush(stdout);
    return 1;
}

static int daemon_pid(ms_client *c)
{
    char *json = NULL;
    if (ms_status_json(c, &json) != 0)
        return -1;
    const char *p = strstr(json, "\"daemon_pid\"");
    int pid = -1;
    if (p && (p = strchr(p, ':')))
        pid = atoi(p + 1);
    free(json);
    return pid;
}

static void infer_cmd(ms_client *c, ms_model *m, const char *in_path, const char *out_path)
{
    char err[1024];
    ms__npy_header hdr;
    void *data = NULL;
    int rc = ms__npy_read(in_path, &hdr, &data, err, sizeof err);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), err);
        return;
    }
    ms_tensor *x = NULL, *y = NULL;
    rc = ms_tensor_from(m, hdr.dtype, hdr.rank, hdr.shape, data, hdr.nbytes, &x);
    free(data);
    if (rc == 0)
        rc = ms_infer(m, x, &y);
    if (rc != 0) {
        printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
        ms_tensor_free(x);
        return;
    }
    rc = ms__npy_write(out_path, ms_tensor_dtype(y), ms_tensor_rank(y), ms_tensor_shape(y),
                       ms_tensor_data(y), err, sizeof err);
    if (rc != 0)
        printf("error %s %s\n", ms_errname(rc), err);
    else
        printf("ok\n");
    ms_tensor_free(y);
    ms_tensor_free(x);
}

static int session(const char *tag, const char *spec)
{
    ms_client *c = NULL;
    int rc = ms_connect(NULL, &c);
    if (rc != 0)
        return fail(NULL, rc);
    ms_model *m = NULL;
    rc = ms_acquire(c, tag, strcmp(spec, "-") == 0 ? NULL : spec, &m);
    if (rc != 0) {
        fail(c, rc);
        ms_disconnect(c);
        return 1;
    }
    printf("acquired\n");
    fflush(stdout);
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char in_path[4096], out_path[4096];
        if (sscanf(line, "infer %4095s %4095s", in_path, out_path) == 2) {
            if (!m)
                printf("error MS_E_INVAL released already\n");
            else
                infer_cmd(c, m, in_path, out_path);
        } else if (strcmp(line, "release") == 0) {
            rc = ms_release(m);
            m = NULL;
            if (rc != 0)
                printf("error %s %s\n", ms_errname(rc), ms_errmsg(c));
            else
                printf("released\n");
        } else if (strcmp(line, "quit") == 0) {
            fflush(stdout);
            _Exit(0);
        } else {
            printf("error MS_E_INVAL unknown command: %s\n", line);
        }
        fflush(stdout);
    }
    ms_release(m);
    ms_disconnect(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "connect") == 0) {
        ms_client *c = NULL;
        int rc = ms_connect(NULL, &c);
        if (rc != 0)
            return fail(NULL, rc);
        printf("connected %d\n", daemon_pid(c));
        ms_disconnect(c);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "session") == 0)
        return session(argv[2], argv[3]);
    fprintf(stderr, "usage: ms-testclient connect | session TAG SPEC_JSON|-\n");
    return 2;
}
