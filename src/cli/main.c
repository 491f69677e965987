/* `modelshare`: the command line. Dispatches to one function per verb (cmd_*.c). */
#include "cli.h"

#include <string.h>

static const char usage_main[] =
    "usage: modelshare VERB [OPTIONS]\n"
    "\n"
    "Share ML models between the processes of one machine: one daemon (modelshared) holds\n"
    "each model once, in its own worker process, for every process that asks for its tag.\n"
    "\n"
    "verbs:\n"
    "  status [--json]                 models loaded, their leases, workers and memory\n"
    "  load TAG --weights FILE ...     load a model (it stays for its keep-alive)\n"
    "  unload TAG [--force]            stop a model's worker; its memory goes back\n"
    "  swap TAG --weights FILE ...     move a tag to a new version while it serves\n"
    "  infer TAG --input X.npy ...     run a model on a .npy array\n"
    "  bench TAG --spec JSON ...       measure latency and throughput from N client processes\n"
    "  top [--interval S]              models' requests/s, rows/s, batch sizes, busy share\n"
    "  make-dense OUT --layers A,B,C   write a random dense MLP as safetensors\n"
    "  demo                            see several processes share one 1 GB model\n"
    "  version                         print the version\n"
    "\n"
    "'modelshare VERB --help' describes a verb. The daemon's socket is $MODELSHARE_SOCKET,\n"
    "else $XDG_RUNTIME_DIR/modelshare/modelshared.sock, else /tmp/modelshare-$UID/.\n";

typedef struct verb {
    const char *name;
    int (*run)(int argc, char **argv);
} verb;

static const verb verbs[] = {
    {"status", ms__cmd_status}, {"load", ms__cmd_load}, {"unload", ms__cmd_unload},
    {"infer", ms__cmd_infer},   {"demo", ms__cmd_demo}, {"make-dense", ms__cmd_make_dense},
    {"bench", ms__cmd_bench},   {"top", ms__cmd_top},   {"swap", ms__cmd_swap},
};

static int cmd_version(void)
{
    unsigned v = ms_version();
    printf("modelshare %s (library %u.%u.%u, protocol %d)\n", MS_VERSION_STRING, (v >> 16) & 0xff,
           (v >> 8) & 0xff, v & 0xff, MS_PROTOCOL_VERSION);
    return MS__EXIT_OK;
}

/* `modelshare help [VERB]`, --help, -h. */
static int cmd_help(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "help") == 0) {
        /* "modelshare help VERB" is "modelshare VERB --help". */
        char *sub[] = {argv[2], "--help", NULL};
        for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
            if (!strcmp(argv[2], verbs[i].name))
                return verbs[i].run(2, sub);
    }
    fputs(usage_main, stdout);
    return MS__EXIT_OK;
}

/* `modelshare version`, --version, -V (only --help after it). */
static int cmd_version_args(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[2], "--help") && strcmp(argv[2], "-h")) {
        fprintf(stderr, "modelshare version: unexpected argument \"%s\"\n\n", argv[2]);
        fputs("usage: modelshare version\n", stderr);
        return MS__EXIT_USAGE;
    }
    if (argc > 2) {
        fputs("usage: modelshare version\n\nPrints the version of modelshare.\n", stdout);
        return MS__EXIT_OK;
    }
    return cmd_version();
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_main, stderr);
        return MS__EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help"))
        return cmd_help(argc, argv);
    if (!strcmp(name, "version") || !strcmp(name, "--version") || !strcmp(name, "-V"))
        return cmd_version_args(argc, argv);
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (!strcmp(name, verbs[i].name))
            return verbs[i].run(argc - 1, argv + 1);

    fprintf(stderr, "modelshare: unknown verb \"%s\"\n\n", name);
    fputs(usage_main, stderr);
    return MS__EXIT_USAGE;
}
