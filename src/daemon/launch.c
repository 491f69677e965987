/*
 * What a worker runs (see launch.h): the program (modelshare-worker, or the client's Python
 * interpreter with -m modelshare.worker, its working directory and sys.path), its argv (the tag,
 * the instance's spec, the log level) and environment (a GPU instance pinned to its device), made
 * into the supervisor's plain exec context.
 */
#include "launch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "modelshare.h"

/* How a python worker starts: the acquiring client's interpreter, working directory and
 * sys.path (as PYTHONPATH), running `-m modelshare.worker`. All of it is made before fork(). */
typedef struct py_launch {
    json_t *obj; /* the spec's "python" object */
    char **envp; /* the daemon's environment, PYTHONPATH replaced (the strings are not copied) */
    char *pythonpath;
} py_launch;

static void py_launch_free(py_launch *pl)
{
    json_decref(pl->obj);
    free(pl->envp);
    free(pl->pythonpath);
    memset(pl, 0, sizeof *pl);
}

extern char **environ;

/* 0 when o may run exe (checked with o's rights where the daemon takes them: owner.h), else
 * why not (an errno). */
static int exe_check(const ms__owner *o, const char *exe)
{
    char why[MS__ERRLEN];
    ms__owner_fs fs;
    if (ms__owner_enter(o, &fs, why, sizeof why) != 0)
        return EPERM;
    int rc = faccessat(AT_FDCWD, exe, X_OK, AT_EACCESS) == 0 ? 0 : errno;
    ms__owner_leave(&fs);
    return rc;
}

static int py_launch_make(const ms__spec *spec, const ms__owner *o, py_launch *pl, char *err,
                          size_t errlen)
{
    memset(pl, 0, sizeof *pl);
    pl->obj = json_loads(spec->python, 0, NULL);
    const json_t *path = json_object_get(pl->obj, "path");
    if (pl->obj == NULL || !json_is_string(json_object_get(pl->obj, "executable")) ||
        !json_is_string(json_object_get(pl->obj, "cwd")) || !json_is_array(path))
        goto nomem; /* the spec was checked: only memory can fail here */
    size_t len = strlen("PYTHONPATH=") + 1, i;
    json_t *e;
    json_array_foreach(path, i, e) len += strlen(json_string_value(e)) + 1;
    pl->pythonpath = malloc(len);
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    pl->envp = calloc(n + 2, sizeof *pl->envp);
    if (pl->pythonpath == NULL || pl->envp == NULL)
        goto nomem;
    char *p = pl->pythonpath;
    p += sprintf(p, "PYTHONPATH=");
    json_array_foreach(path, i, e) p += sprintf(p, "%s%s", i > 0 ? ":" : "", json_string_value(e));
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (strncmp(environ[j], "PYTHONPATH=", 11) != 0 &&
            strncmp(environ[j], "PYTHONHOME=", 11) != 0)
            pl->envp[k++] = environ[j];
    pl->envp[k++] = pl->pythonpath;
    pl->envp[k] = NULL;
    const char *exe = json_string_value(json_object_get(pl->obj, "executable"));
    int bad = exe_check(o, exe);
    if (bad != 0) {
        int rc = ms__fail(err, errlen, MS_E_LOAD_FAILED,
                          "python worker: interpreter %s: expected an executable file, got %s", exe,
                          strerror(bad));
        py_launch_free(pl);
        return rc;
    }
    return 0;
nomem:
    py_launch_free(pl);
    return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a python worker");
}

/* What a worker runs: program, argv, working directory and environment, made before fork(). */
typedef struct spawn_cmd {
    py_launch pl;    /* a python worker's launch (empty for the dense worker) */
    bool python;     /* the spec has a "python" constructor */
    char *spec_text; /* owned: the instance's spec, passed as --spec */
    const char *path, *cwd;
    char **envp;   /* NULL: the daemon's environment */
    char **pinned; /* owned array (strings not copied): envp with the GPU pinned, or NULL */
    char **marked; /* owned array (strings not copied): envp as the owner (as_owner_env) */
    char home[PATH_MAX + 8], user[80], logname[80]; /* "HOME=...", "USER=...", "LOGNAME=..." */
    char visible[48];                               /* "CUDA_VISIBLE_DEVICES=N" */
    char *argv[10]; /* points into spec_text, the model's tag and the supervisor */
} spawn_cmd;

static void spawn_cmd_free(spawn_cmd *c)
{
    py_launch_free(&c->pl);
    free(c->spec_text);
    c->spec_text = NULL;
    free(c->pinned);
    c->pinned = NULL;
    free(c->marked);
    c->marked = NULL;
}

/* A worker started as a model's owner (owner.h) gets the owner's HOME, USER and LOGNAME (when
 * the system knows its name: a framework's caches go to its own home, not the daemon's), and is
 * told to make itself non-dumpable (MODELSHARE_WORKER_NODUMP=1, worker/main.c): no other process
 * of that uid may then read, through /proc, the arenas of other members that it maps. The rest of
 * its environment is c->envp's (or the daemon's). */
static int as_owner_env(spawn_cmd *c, const ms__owner *o)
{
    struct passwd pw, *found = NULL;
    char buf[2048];
    if (getpwuid_r(o->uid, &pw, buf, sizeof buf, &found) != 0)
        found = NULL;
    char **base = c->envp != NULL ? c->envp : environ;
    size_t n = 0, k = 0;
    while (base[n] != NULL)
        n++;
    c->marked = calloc(n + 5, sizeof *c->marked);
    if (c->marked == NULL)
        return MS_E_NOMEM;
    for (size_t j = 0; j < n; j++)
        if (found == NULL ||
            (strncmp(base[j], "HOME=", 5) != 0 && strncmp(base[j], "USER=", 5) != 0 &&
             strncmp(base[j], "LOGNAME=", 8) != 0))
            c->marked[k++] = base[j];
    if (found != NULL) {
        snprintf(c->home, sizeof c->home, "HOME=%s", found->pw_dir);
        snprintf(c->user, sizeof c->user, "USER=%s", found->pw_name);
        snprintf(c->logname, sizeof c->logname, "LOGNAME=%s", found->pw_name);
        c->marked[k++] = c->home;
        c->marked[k++] = c->user;
        c->marked[k++] = c->logname;
    }
    c->marked[k++] = "MODELSHARE_WORKER_NODUMP=1";
    c->envp = c->marked;
    return 0;
}

/* The spec a worker of an instance on device gets: device as it sees it ("cpu", or "cuda:0" for
 * a GPU, which CUDA_VISIBLE_DEVICES leaves it alone with), devices null. New text, or NULL. */
static char *instance_spec(const json_t *spec_json, const char *device)
{
    json_t *j = json_deep_copy(spec_json);
    if (j == NULL)
        return NULL;
    bool gpu = strncmp(device, "cuda:", 5) == 0;
    if (device[0] != '\0')
        json_object_set_new(j, "device", json_string(gpu ? "cuda:0" : "cpu"));
    json_object_set_new(j, "devices", json_null());
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return text;
}

/* A worker of an instance on "cuda:N" sees that GPU alone, as its device 0:
 * CUDA_VISIBLE_DEVICES=N, with CUDA_DEVICE_ORDER=PCI_BUS_ID so that N is NVML's N. The rest of
 * its environment is c->envp's (or the daemon's); on the CPU it is left as it is. */
static int pin_gpu(spawn_cmd *c, const char *device)
{
    if (strncmp(device, "cuda:", 5) != 0)
        return 0;
    char **base = c->envp != NULL ? c->envp : environ;
    size_t n = 0;
    while (base[n] != NULL)
        n++;
    c->pinned = calloc(n + 3, sizeof *c->pinned);
    if (c->pinned == NULL)
        return MS_E_NOMEM;
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (strncmp(base[j], "CUDA_VISIBLE_DEVICES=", 21) != 0 &&
            strncmp(base[j], "CUDA_DEVICE_ORDER=", 18) != 0)
            c->pinned[k++] = base[j];
    snprintf(c->visible, sizeof c->visible, "CUDA_VISIBLE_DEVICES=%s", device + 5);
    c->pinned[k++] = c->visible;
    c->pinned[k++] = "CUDA_DEVICE_ORDER=PCI_BUS_ID";
    c->envp = c->pinned;
    return 0;
}

/* Checks that m can have one more worker and what it runs. On success *c is freed with
 * spawn_cmd_free(). */
static int spawn_cmd_make(ms__supervisor *s, ms__model *m, const ms__spec *spec,
                          const json_t *spec_json, const char *device, spawn_cmd *c, char *err,
                          size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->python = spec->python != NULL;
    if (c->python) {
        int rc = py_launch_make(spec, &m->owner, &c->pl, err, errlen);
        if (rc < 0)
            return rc;
    } else if (access(s->worker_path, X_OK) != 0) {
        return ms__fail(err, errlen, MS_E_LOAD_FAILED,
                        "worker program %s: expected an executable file, got %s", s->worker_path,
                        strerror(errno));
    }
    if (m->nworkers >= MS__INSTANCES_MAX) {
        py_launch_free(&c->pl);
        return ms__fail(err, errlen, MS_E_LIMIT, "expected at most %d workers per model",
                        MS__INSTANCES_MAX);
    }
    c->spec_text = instance_spec(spec_json, device);
    if (c->spec_text == NULL) {
        py_launch_free(&c->pl);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a worker");
    }
    char *tail[] = {"--tag", m->tag, "--spec", c->spec_text, "--log-level", s->log_level, NULL};
    int n = 0;
    c->path = s->worker_path;
    if (c->python) {
        c->path = json_string_value(json_object_get(c->pl.obj, "executable"));
        c->cwd = json_string_value(json_object_get(c->pl.obj, "cwd"));
        c->envp = c->pl.envp;
        c->argv[n++] = (char *)c->path;
        c->argv[n++] = "-m";
        c->argv[n++] = "modelshare.worker";
    } else {
        c->argv[n++] = s->worker_path;
    }
    memcpy(&c->argv[n], tail, sizeof tail);
    if (pin_gpu(c, device) != 0 ||
        (ms__owner_switches(&m->owner) && as_owner_env(c, &m->owner) != 0)) {
        spawn_cmd_free(c);
        return ms__fail(err, errlen, MS_E_NOMEM, "out of memory starting a worker");
    }
    return 0;
}

int ms__launch_spawn(ms__supervisor *s, ms__model *m, int inst, const ms__spec *spec,
                     const json_t *spec_json, const ms__door_fds *door, int ctor_fd,
                     ms__wproc **out, char *err, size_t errlen)
{
    spawn_cmd cmd;
    const char *device = inst >= 0 && inst < MS__INSTANCES_MAX ? m->inst_device[inst] : "";
    if (spec->python_ctor_size > 0 && ctor_fd < 0) /* the request checks make this impossible */
        return ms__fail(err, errlen, MS_E_LOAD_FAILED,
                        "python worker: the spec's constructor is in a memfd, and the model has "
                        "none");
    int rc = spawn_cmd_make(s, m, spec, spec_json, device, &cmd, err, errlen);
    if (rc != 0)
        return rc;
    ms__exec x = {.path = cmd.path,
                  .argv = cmd.argv,
                  .envp = cmd.envp,
                  .cwd = cmd.cwd,
                  .door_fd = door->rw,
                  .bell_fd = door->bell,
                  .ctor_fd = spec->python_ctor_size > 0 ? ctor_fd : -1,
                  .inst = inst,
                  .as = ms__owner_switches(&m->owner) ? &m->owner : NULL};
    rc = ms__sup_exec(s, &x, out, err, errlen);
    if (rc == 0)
        ms__log_info("model \"%s\": started worker %ld for instance %d%s on %s (%s%s) as uid %lu",
                     m->tag, (long)(*out)->pid, inst, spec_json != m->spec_json ? " of a swap" : "",
                     device[0] ? device : "cpu", cmd.path,
                     cmd.python ? " -m modelshare.worker" : "",
                     (unsigned long)(x.as != NULL ? x.as->uid : geteuid()));
    spawn_cmd_free(&cmd);
    return rc;
}

const ms__sup_ops ms__launch_ops = {ms__launch_spawn, ms__sup_stop, ms__sup_kill};
