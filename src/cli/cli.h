/*
 * The `modelshare` command line: one file per verb, this header and cli_util.c between them.
 *
 * Exit status (a contract that outside tests drive): 0 success, 1 error (a line
 * "modelshare: <message>" on stderr), 2 usage error (the verb's short usage on stderr).
 * Each verb's entry point takes the arguments after the verb name with argv[0] set to the verb
 * ("load", ...) and returns the exit status.
 */
#ifndef MS_CLI_H
#define MS_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "modelshare.h"

enum { MS__EXIT_OK = 0, MS__EXIT_ERROR = 1, MS__EXIT_USAGE = 2 };

/* Verbs. */
int ms__cmd_status(int argc, char **argv);
int ms__cmd_load(int argc, char **argv);
int ms__cmd_unload(int argc, char **argv);
int ms__cmd_swap(int argc, char **argv);
int ms__cmd_infer(int argc, char **argv);
int ms__cmd_make_dense(int argc, char **argv);
int ms__cmd_demo(int argc, char **argv);
int ms__cmd_bench(int argc, char **argv);
int ms__cmd_top(int argc, char **argv);

/* Each verb's usage text ("usage: modelshare load TAG ...\n\n...options..."), printed by
 * --help (stdout) and after a usage error (stderr). */
extern const char ms__usage_status[];
extern const char ms__usage_load[];
extern const char ms__usage_unload[];
extern const char ms__usage_swap[];
extern const char ms__usage_infer[];
extern const char ms__usage_make_dense[];
extern const char ms__usage_demo[];
extern const char ms__usage_bench[];
extern const char ms__usage_top[];

/* A string field of a JSON object (dflt when absent), an integer field (0 when absent). */
const char *ms__cli_jstr(const json_t *obj, const char *key, const char *dflt);
long long ms__cli_jint(const json_t *obj, const char *key);

/* The daemon's status, without starting a daemon: 0 with *out (caller owns), MS_E_NO_DAEMON
 * when none runs (nothing printed), or another code after printing the error. */
int ms__cli_fetch_status(json_t **out);

/* {"backend":"dense","weights":ABSOLUTE-PATH} for --weights FILE. Caller frees; NULL when out of
 * memory. */
char *ms__cli_weights_spec(const char *weights);

/* Prints "modelshare: <message>\n" on stderr and returns MS__EXIT_ERROR. */
int ms__cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "modelshare VERB: <message>\n" and the usage text on stderr; returns MS__EXIT_USAGE. */
int ms__cli_usage_error(const char *verb, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The message for a failed call on client (ms_errmsg), or ms_strerror(code) when it is empty. */
const char *ms__cli_errtext(const ms_client *client, int code);

/* One option of a verb. Each verb lists its options in one table (NULL name ends it), from which
 * ms__cli_parse builds getopt_long's, reads the values into their destinations and checks numbers
 * against their range with one wording for all verbs. */
typedef enum ms__cli_kind {
    MS__CLI_FLAG,  /* no value; dst: bool *, set to true */
    MS__CLI_TEXT,  /* dst: const char **, pointing into argv */
    MS__CLI_INT,   /* dst: int64_t *, a whole integer in [lo, hi] */
    MS__CLI_NUMBER /* dst: double *, a finite number in [lo, hi] */
} ms__cli_kind;

typedef struct ms__cli_opt {
    const char *name; /* the long name, without "--"; NULL ends the table */
    char letter;      /* its one-letter form (-f), 0 for none */
    ms__cli_kind kind;
    void *dst;      /* where the value goes (see the kinds); not owned */
    double lo, hi;  /* MS__CLI_INT and MS__CLI_NUMBER: the accepted range */
    const char *of; /* numbers: what the value is ("seconds"); NULL: "an integer" / "a number" */
} ms__cli_opt;

/* Table rows: a flag, a text, an integer in [lo, hi], a number in [lo, hi] that is what `of` says
 * ("seconds"), and the end of the table. */
#define MS__CLI_OPT_FLAG(n, l, d)                                                                  \
    {                                                                                              \
        .name = (n), .letter = (l), .kind = MS__CLI_FLAG, .dst = (d)                               \
    }
#define MS__CLI_OPT_TEXT(n, l, d)                                                                  \
    {                                                                                              \
        .name = (n), .letter = (l), .kind = MS__CLI_TEXT, .dst = (d)                               \
    }
#define MS__CLI_OPT_INT(n, d, min, max)                                                            \
    {                                                                                              \
        .name = (n), .kind = MS__CLI_INT, .dst = (d), .lo = (min), .hi = (max)                     \
    }
#define MS__CLI_OPT_NUMBER(n, d, min, max, what)                                                   \
    {                                                                                              \
        .name = (n), .kind = MS__CLI_NUMBER, .dst = (d), .lo = (min), .hi = (max), .of = (what)    \
    }
#define MS__CLI_OPT_END                                                                            \
    {                                                                                              \
        .name = NULL                                                                               \
    }

/* At most this many options in one verb's table, --help not counted. */
#define MS__CLI_OPTS_MAX 16

/* Reads a verb's command line (argv[0] the verb) with its option table, then its positional
 * arguments: names lists those it requires in order ("TAG"; NULL-terminated; NULL for none),
 * stored in pos[0..] (pointing into argv); one more than listed is "unexpected". --help and -h
 * print usage on stdout. Every mistake (an unknown option, a missing value, a number out of
 * range, a missing or extra argument) prints "modelshare VERB: <what was expected>" and the usage
 * on stderr. Returns -1 to go on, else the exit status (MS__EXIT_OK after --help,
 * MS__EXIT_USAGE after a mistake). */
int ms__cli_parse(int argc, char **argv, const ms__cli_opt *opts, const char *usage,
                  const char *const *names, const char **pos);

/* Strict number parsing of a whole string. false when text is not a number in [min, max]. */
bool ms__cli_parse_i64(const char *text, int64_t min, int64_t max, int64_t *out);
bool ms__cli_parse_double(const char *text, double min, double max, double *out);

/* "1,2,3" -> sizes. Each 1..1,000,000, at least 2 of them, at most max. On error returns false
 * with a message in err. */
#define MS__CLI_LAYERS_MAX 64
bool ms__cli_parse_layers(const char *text, int64_t *sizes, int max, int *count, char *err,
                          size_t errlen);

/* A model's state from its status object: "ready", "ready, stuck 12.4 s" when an instance has run
 * one batch or not turned its loop for a second or more (stuck_s), or while it loads its phase
 * and bytes read ("loading: reading weights 12.0 MiB of 1.0 GiB (1%)", "loading: constructing"). */
void ms__cli_fmt_state(const json_t *m, char *buf, size_t buflen);

/* `load`'s progress line (load_progress.c): on a terminal (stderr), the phase and bytes read of
 * model tag, rewritten until stopped and then erased; NULL (nothing shown) when stderr is not a
 * terminal. stop(NULL) is a no-op. */
#define MS__CLI_TAG_CELL 129
typedef struct ms__cli_progress ms__cli_progress;
ms__cli_progress *ms__cli_progress_start(const char *tag);
void ms__cli_progress_stop(ms__cli_progress *p);

/* Human-readable sizes: binary "1.2 GiB" (status) and decimal "1.02 GB" (demo). */
void ms__cli_fmt_bytes_bin(uint64_t bytes, char *buf, size_t buflen);
void ms__cli_fmt_bytes_dec(uint64_t bytes, char *buf, size_t buflen);

/* Deterministic PRNG (splitmix64): the same seed gives the same stream on every machine. */
typedef struct ms__cli_rng {
    uint64_t state;
} ms__cli_rng;
void ms__cli_rng_seed(ms__cli_rng *rng, uint64_t seed);
uint64_t ms__cli_rng_next(ms__cli_rng *rng);
/* Fills n floats uniform in [lo, hi). */
void ms__cli_rng_fill_uniform(ms__cli_rng *rng, float *out, size_t n, float lo, float hi);

/* The dense MLP that make-dense writes: sizes[0] > sizes[1] > ... > sizes[n-1]. */
typedef struct ms__cli_dense_info {
    uint64_t params;     /* weights and biases */
    uint64_t data_bytes; /* params * 4 */
} ms__cli_dense_info;
/* Counts the parameters; false on overflow. */
bool ms__cli_dense_count(const int64_t *sizes, int n, ms__cli_dense_info *info);
/* Generates the model (uniform in [-1/sqrt(in), 1/sqrt(in)] from a PRNG seeded by seed) and
 * writes it to path as safetensors: "0.weight" [sizes[1], sizes[0]], "0.bias" [sizes[1]],
 * "2.weight", ... (nn.Sequential numbering, ReLU between). Written to a temporary file beside path
 * and renamed, so that path is either the whole model or absent. Returns 0 or an MS_E_* code with
 * a message in err. */
int ms__cli_dense_write(const char *path, const int64_t *sizes, int n, uint64_t seed, char *err,
                        size_t errlen);
/* Whether path is a safetensors file whose tensors are exactly those of this MLP (names, shapes,
 * float32). Reads only the header. */
bool ms__cli_dense_matches(const char *path, const int64_t *sizes, int n);

#endif
