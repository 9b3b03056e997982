/* as_testutil: helpers shared by the Criterion tests — a private temp dir, synthetic traces
 * written through the real writer, and running the built CLI. */
#ifndef AS_TESTUTIL_H
#define AS_TESTUTIL_H

#include <stdint.h>

#include "as_dtype.h"

/* Per-process temporary directory (created on first use, removed at exit). */
const char *as_test_tmpdir(void);
/* Newly allocated "tmpdir/name"; caller frees. */
char *as_test_path(const char *name);
/* Files in the temporary directory whose name contains ".tmp" (the atomic writers' temporary
 * files, PATH.tmpXXXXXX). */
int as_test_count_tmp_files(void);

/* Value generator: which is 'q', 'k' or 'v'; returns the element at [head][row][col]. */
typedef double (*as_test_gen)(void *ctx, int layer, char which, int64_t head, int64_t row,
                              int64_t col);

typedef struct {
    int n_layers;          /* layers 0..n_layers-1 */
    int64_t hq, hkv, t, n, d;
    as_dtype dtype;        /* q/k/v dtype */
    int causal;            /* write q_pos = n - t .. n - 1 */
    uint64_t seed;         /* for the default generator (standard normal) */
    as_test_gen gen;       /* NULL: standard normal from seed */
    void *ctx;
    const char *model;     /* metadata "model" (default "synthetic") */
    double scale;          /* 0: omit (default 1/sqrt(d)) */
} as_test_trace_spec;

/* Write a safetensors trace; returns 0 on success (prints the error otherwise). */
int as_test_write_trace(const char *path, const as_test_trace_spec *spec);
/* Write the trace of spec as tmpdir/name and open it; NULL on failure (the error printed). */
struct as_trace;
struct as_trace *as_test_open_new_trace(const char *name, const as_test_trace_spec *spec);

/* Deterministic standard normal stream (splitmix64 + Box-Muller), for tests without GSL. */
double as_test_normal(uint64_t *state);
double as_test_uniform(uint64_t *state);

/* Run `$AS_BIN args` through the shell, capturing stdout (caller frees *out, may be NULL).
 * Returns the exit status (or -1 if it could not run). */
int as_test_run_cli(const char *args, char **out);

#endif
