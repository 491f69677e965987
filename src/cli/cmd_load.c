/* `modelshare load` and `modelshare unload`: a model's life without a lease. */
#include "cli.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

const char ms__usage_load[] =
    "usage: modelshare load TAG --spec JSON\n"
    "       modelshare load TAG --backend dense --weights FILE [--device D] [--keep-alive S]\n"
    "                           [--output linear|softmax]\n"
    "\n"
    "Loads a model under TAG in its own worker process and returns once it is ready. It stays\n"
    "loaded for its keep-alive (default 300 s) after its last lease ends, or until unloaded.\n"
    "\n"
    "  --spec JSON          the whole spec, e.g. '{\"backend\":\"dense\",\"weights\":\"m.st\"}'\n"
    "  --backend NAME       backend (dense)\n"
    "  --weights FILE       safetensors weights (dense)\n"
    "  --device D           cpu (default), cuda:N or auto (the freest GPU)\n"
    "  --keep-alive S       seconds to stay loaded with no lease (0: unload at once)\n"
    "  --output KIND        linear (default) or softmax (dense)\n"
    "  -h, --help           this help\n";

const char ms__usage_unload[] = "usage: modelshare unload TAG [--force]\n"
                                "\n"
                                "Stops the worker process of the model TAG: every byte it held "
                                "goes back to the system.\n"
                                "\n"
                                "  --force     unload even while processes hold leases (their "
                                "next calls fail)\n"
                                "  -h, --help  this help\n";

/* What `load` was given. */
typedef struct load_opts {
    const char *tag, *spec, *backend, *weights, *device, *keep_alive, *output;
} load_opts;

/* Checks the separate flags (no --spec); *ka is --keep-alive. Returns 0, or the exit status
 * after printing a usage error. */
static int check_flags(const char *verb, const load_opts *o, double *ka)
{
    if (!o->backend && !o->weights)
        return ms__cli_usage_error(verb, ms__usage_load,
                                   "missing --spec JSON or --backend dense --weights FILE");
    if (!o->weights && (!o->backend || !strcmp(o->backend, "dense")))
        return ms__cli_usage_error(verb, ms__usage_load, "the dense backend needs --weights FILE");
    if (o->keep_alive && !ms__cli_parse_double(o->keep_alive, 0, 1e9, ka))
        return ms__cli_usage_error(verb, ms__usage_load,
                                   "--keep-alive: expected seconds (a number >= 0), got \"%s\"",
                                   o->keep_alive);
    if (o->output && strcmp(o->output, "linear") && strcmp(o->output, "softmax"))
        return ms__cli_usage_error(verb, ms__usage_load,
                                   "--output: expected linear or softmax, got \"%s\"", o->output);
    return 0;
}

/* The spec object of checked separate flags, as text (caller frees); NULL when out of memory. */
static char *spec_from_flags(const load_opts *o, double ka)
{
    json_t *obj = json_object();
    json_object_set_new(obj, "backend", json_string(o->backend ? o->backend : "dense"));
    if (o->weights) {
        /* Resolved here so that the daemon and anyone reading `status` see a full path. */
        char abs[PATH_MAX];
        json_object_set_new(obj, "weights",
                            json_string(realpath(o->weights, abs) ? abs : o->weights));
    }
    if (o->device)
        json_object_set_new(obj, "device", json_string(o->device));
    if (o->keep_alive) {
        if (ka == (double)(long long)ka)
            json_object_set_new(obj, "keep_alive", json_integer((json_int_t)ka));
        else
            json_object_set_new(obj, "keep_alive", json_real(ka));
    }
    if (o->output)
        json_object_set_new(obj, "output", json_string(o->output));
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

/* Spec text from the options: --spec as given, else an object built from the separate flags.
 * Returns NULL after printing a usage error (*rc set). Caller frees. */
static char *build_spec(const char *verb, const load_opts *o, int *rc)
{
    if (o->spec) {
        if (o->backend || o->weights || o->device || o->keep_alive || o->output) {
            *rc = ms__cli_usage_error(verb, ms__usage_load,
                                      "--spec cannot be combined with --backend, --weights, "
                                      "--device, --keep-alive or --output");
            return NULL;
        }
        char *copy = strdup(o->spec);
        if (!copy)
            *rc = ms__cli_error("out of memory");
        return copy;
    }
    double ka = 0;
    int r = check_flags(verb, o, &ka);
    if (r != 0) {
        *rc = r;
        return NULL;
    }
    char *text = spec_from_flags(o, ka);
    if (!text)
        *rc = ms__cli_error("out of memory");
    return text;
}

/* Reads the command line into *o. Returns -1 to go on, else the exit status. */
static int load_args(int argc, char **argv, load_opts *o)
{
    const ms__cli_opt opts[] = {MS__CLI_OPT_TEXT("spec", 0, &o->spec),
                                MS__CLI_OPT_TEXT("backend", 0, &o->backend),
                                MS__CLI_OPT_TEXT("weights", 0, &o->weights),
                                MS__CLI_OPT_TEXT("device", 0, &o->device),
                                MS__CLI_OPT_TEXT("keep-alive", 0, &o->keep_alive),
                                MS__CLI_OPT_TEXT("output", 0, &o->output),
                                MS__CLI_OPT_END};
    static const char *const names[] = {"TAG", NULL};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_load, names, &o->tag);
    if (r >= 0)
        return r;
    if (!ms__tag_valid(o->tag))
        return ms__cli_usage_error(argv[0], ms__usage_load,
                                   "invalid tag \"%s\": expected 1 to %d characters of "
                                   "[A-Za-z0-9._:/@+-]",
                                   o->tag, MS__TAG_MAX);
    return -1;
}

int ms__cmd_load(int argc, char **argv)
{
    load_opts o = {0};
    int ret = load_args(argc, argv, &o);
    if (ret >= 0)
        return ret;
    ret = MS__EXIT_OK;
    char *spec_json = build_spec(argv[0], &o, &ret);
    if (!spec_json)
        return ret;

    ms_client *client = NULL;
    int rc = ms_connect(NULL, &client);
    if (rc < 0) {
        free(spec_json);
        return ms__cli_error("cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
    }
    ms__cli_progress *progress = ms__cli_progress_start(o.tag);
    rc = ms_load(client, o.tag, spec_json);
    ms__cli_progress_stop(progress);
    if (rc < 0)
        ret = ms__cli_error("cannot load \"%s\": %s", o.tag, ms__cli_errtext(client, rc));
    else
        printf("loaded %s\n", o.tag);
    ms_disconnect(client);
    free(spec_json);
    return ret;
}

int ms__cmd_unload(int argc, char **argv)
{
    bool force = false;
    const char *tag = NULL;
    const ms__cli_opt opts[] = {MS__CLI_OPT_FLAG("force", 'f', &force), MS__CLI_OPT_END};
    static const char *const names[] = {"TAG", NULL};
    int r = ms__cli_parse(argc, argv, opts, ms__usage_unload, names, &tag);
    if (r >= 0)
        return r;

    /* Nothing to unload when no daemon runs: do not start one to find out. */
    setenv("MODELSHARE_NO_AUTOSTART", "1", 1);
    ms_client *client = NULL;
    int rc = ms_connect(NULL, &client);
    if (rc == MS_E_NO_DAEMON)
        return ms__cli_error("cannot unload \"%s\": %s (no daemon running)", tag,
                             ms_strerror(MS_E_UNKNOWN_TAG));
    if (rc < 0)
        return ms__cli_error("cannot connect to the daemon: %s", ms__cli_errtext(NULL, rc));
    int ret = MS__EXIT_OK;
    rc = ms_unload(client, tag, force);
    if (rc == MS_E_BUSY && !force)
        ret = ms__cli_error("cannot unload \"%s\": %s (use --force to unload it anyway)", tag,
                            ms__cli_errtext(client, rc));
    else if (rc < 0)
        ret = ms__cli_error("cannot unload \"%s\": %s", tag, ms__cli_errtext(client, rc));
    else
        printf("unloaded %s\n", tag);
    ms_disconnect(client);
    return ret;
}
