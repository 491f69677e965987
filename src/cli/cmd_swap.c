/* `modelshare swap`: a tag moves to a new version of its model while it serves (ms_swap). */
#include "cli.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char ms__usage_swap[] =
    "usage: modelshare swap TAG (--weights FILE | --spec JSON) [--version V] [--drain-first]\n"
    "\n"
    "Loads a new version of the model TAG in new worker processes while the old one serves,\n"
    "then moves new requests to it; requests the old one took finish there, and its workers\n"
    "exit. Clients keep their leases and handles. A new version that fails to load leaves the\n"
    "old one serving (the error is printed, exit status 1).\n"
    "\n"
    "  --weights FILE   the new version's safetensors weights (dense)\n"
    "  --spec JSON      the spec fields that change, e.g. '{\"weights\":\"v2.st\",\"output\":\n"
    "                   \"softmax\"}' (backend, device and instances cannot)\n"
    "  --version V      the new version's label, shown by status\n"
    "  --drain-first    when both versions do not fit the memory budget at once: unload the\n"
    "                   old one first (requests wait until the new one serves)\n"
    "  -h, --help       this help\n";

typedef struct swap_opts {
    const char *tag, *weights, *spec, *version;
    unsigned flags;
} swap_opts;

/* Options into *o. Returns -1 to go on, or the exit status. */
static int parse(int argc, char **argv, swap_opts *o)
{
    bool drain_first = false;
    const ms__cli_opt opts[] = {
        MS__CLI_OPT_TEXT("weights", 'w', &o->weights), MS__CLI_OPT_TEXT("spec", 's', &o->spec),
        MS__CLI_OPT_TEXT("version", 'v', &o->version),
        MS__CLI_OPT_FLAG("drain-first", 'd', &drain_first), MS__CLI_OPT_END};
    static const char *const names[] = {"TAG", NULL};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_swap, names, &o->tag);
    if (r >= 0)
        return r;
    if (drain_first)
        o->flags |= MS_SWAP_DRAIN_FIRST;
    if (!o->weights && !o->spec && !o->version)
        return ms__cli_usage_error(argv[0], ms__usage_swap,
                                   "missing --weights FILE or --spec JSON (what changes)");
    return -1;
}

/* The changes as JSON text (caller frees), or NULL after printing why. */
static char *changes_of(const swap_opts *o)
{
    json_error_t jerr;
    json_t *obj = o->spec ? json_loads(o->spec, JSON_REJECT_DUPLICATES, &jerr) : json_object();
    if (!json_is_object(obj)) {
        ms__cli_usage_error("swap", ms__usage_swap, "--spec: expected a JSON object, got %s",
                            o->spec);
        json_decref(obj);
        return NULL;
    }
    if (o->weights) {
        char abs[PATH_MAX];
        json_object_set_new(obj, "weights",
                            json_string(realpath(o->weights, abs) ? abs : o->weights));
    }
    if (o->version)
        json_object_set_new(obj, "version", json_string(o->version));
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

int ms__cmd_swap(int argc, char **argv)
{
    swap_opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    char *changes = changes_of(&o);
    if (changes == NULL)
        return MS__EXIT_USAGE;
    /* Nothing to swap when no daemon runs: do not start one to find out. */
    setenv("MODELSHARE_NO_AUTOSTART", "1", 1);
    ms_client *client = NULL;
    rc = ms_connect(NULL, &client);
    if (rc < 0) {
        free(changes);
        return ms__cli_error("cannot swap \"%s\": %s", o.tag,
                             rc == MS_E_NO_DAEMON ? "no daemon running, so nothing is loaded"
                                                  : ms__cli_errtext(NULL, rc));
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = ms_swap(client, o.tag, changes, o.flags);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int ret = MS__EXIT_OK;
    if (rc < 0)
        ret = ms__cli_error("cannot swap \"%s\": %s (%s)", o.tag, ms__cli_errtext(client, rc),
                            ms_errname(rc));
    else
        printf("swapped %s%s%s in %.3f s\n", o.tag, o.version ? " to version " : "",
               o.version ? o.version : "",
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    ms_disconnect(client);
    free(changes);
    return ret;
}
