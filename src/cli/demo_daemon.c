/* The demo's private daemon: its own socket directory, so that the demo touches nothing the
 * user runs, and a clean stop at the end. */
#include "demo.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

int ms__demo_daemon_dir(char *dir, size_t dirlen, char *socket, size_t socketlen)
{
    /* mkdtemp makes the directory with mode 0700, as the daemon's socket directory must be. */
    if ((size_t)snprintf(dir, dirlen, "/tmp/modelshare-demo-XXXXXX") >= dirlen)
        return MS_E_INVAL;
    if (!mkdtemp(dir))
        return MS_E_IO;
    if ((size_t)snprintf(socket, socketlen, "%s/modelshared.sock", dir) >= socketlen) {
        rmdir(dir);
        return MS_E_INVAL;
    }
    if (setenv("MODELSHARE_SOCKET", socket, 1) < 0) {
        rmdir(dir);
        return MS_E_NOMEM;
    }
    unsetenv("MODELSHARE_NO_AUTOSTART");
    return 0;
}

/* Alive and not a zombie (a zombie has let go of everything it held). */
static bool alive(pid_t pid)
{
    if (pid <= 0)
        return false;
    waitpid(pid, NULL, WNOHANG); /* reaps it if it happens to be our child */
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return false;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return !(paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'));
}

/* Whether pid runs the program whose name starts with prefix (/proc/PID/comm: 15 characters). */
static bool runs(pid_t pid, const char *prefix)
{
    char path[64], comm[32] = "";
    snprintf(path, sizeof path, "/proc/%ld/comm", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, comm, sizeof comm - 1);
    close(fd);
    if (n <= 0)
        return false;
    comm[n] = '\0';
    return strncmp(comm, prefix, strlen(prefix) < 15 ? strlen(prefix) : 15) == 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Sends sig, waits up to timeout_ms for the process to be gone. */
static bool stop(pid_t pid, int sig, int timeout_ms)
{
    if (!alive(pid))
        return true;
    kill(pid, sig);
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (!alive(pid))
            return true;
        sleep_ms(20);
    }
    return !alive(pid);
}

/* Removes dir and what it holds (the daemon's socket, lock file, ...), a few levels deep. */
static void remove_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char path[PATH_MAX];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path)
                continue;
            if (e->d_type == DT_DIR && depth > 0)
                remove_tree(path, depth - 1);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* The daemon's pid and its workers', asked of the daemon on $MODELSHARE_SOCKET (never starts
 * one). */
static pid_t ask_daemon(pid_t *workers, int max, int *nworkers)
{
    pid_t pid = 0;
    ms_client *client = NULL;
    char *text = NULL;
    *nworkers = 0;
    setenv("MODELSHARE_NO_AUTOSTART", "1", 1);
    if (ms_connect(NULL, &client) < 0)
        return 0;
    if (ms_status_json(client, &text) == 0) {
        json_t *st = json_loads(text, 0, NULL);
        pid = (pid_t)json_integer_value(json_object_get(st, "daemon_pid"));
        json_t *models = json_object_get(st, "models"), *m;
        size_t i;
        json_array_foreach(models, i, m)
        {
            json_t *pids = json_object_get(m, "worker_pids"), *p;
            size_t k;
            json_array_foreach(pids, k, p)
            {
                if (*nworkers < max)
                    workers[(*nworkers)++] = (pid_t)json_integer_value(p);
            }
        }
        json_decref(st);
        free(text);
    }
    ms_disconnect(client);
    return pid;
}

void ms__demo_daemon_stop(pid_t daemon_pid, const pid_t *workers, int nworkers, const char *dir)
{
    pid_t asked[64];
    int nasked = 0;
    if (daemon_pid <= 0 && dir && dir[0])
        daemon_pid = ask_daemon(asked, (int)MS__ARRAY_LEN(asked), &nasked);
    if (daemon_pid > 0 && !stop(daemon_pid, SIGTERM, 10000))
        stop(daemon_pid, SIGKILL, 5000);

    /* Workers die with their daemon (parent-death signal); make sure of it. */
    for (int i = 0; i < nworkers + nasked; i++) {
        pid_t w = i < nworkers ? workers[i] : asked[i - nworkers];
        if (w > 0 && alive(w) && runs(w, "modelshare-worker") && !stop(w, SIGTERM, 3000))
            stop(w, SIGKILL, 2000);
    }
    if (dir && dir[0])
        remove_tree(dir, 3);
}
