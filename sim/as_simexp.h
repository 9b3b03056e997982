/* as_simexp: Monte-Carlo and synthetic-trace experiments whose answers theory knows.
 *
 * Each experiment fills a table of records (cJSON objects with a "record" kind, as the CLI's
 * record emitter expects): measured values beside the theoretical answer, the tolerance the
 * comparison uses and "ok" (within tolerance). docs/theory.md derives every answer:
 *   topk-mass   oracle top-k mass of Zipf(s) attention over n keys = H(k,s) / H(n,s), measured
 *               on generated traces through the dense float64 attention;
 *   rank        erank / stable rank / r90 / r99 of keys with planted singular values equal the
 *               closed forms of the planted spectrum (as_rank on generated traces);
 *   bottleneck  collision-space dimension n - rank([V^T; 1^T]) = max(0, n - d - 1) for random
 *               V; the largest TV distance to a distribution with the same output (as_bottleneck)
 *               is 0 iff that dimension is 0 and grows with n/d; the probability that two
 *               distributions on a random split S, S^c of the keys can have the same output is
 *               1 - C(n, d+1)/2^n (Cover 1965), measured by an LP over Monte-Carlo trials;
 *   coverage    the sampling estimator's failure rate P(||o - o_hat|| > eps(m, delta)) <= delta
 *               (as_sparsity's guarantee), over many independent draws;
 *   spectrum    a planted periodic head's spectrum peaks at its period, and the harmonic
 *               amplitude ratio is I_2(A)/I_1(A) (modified Bessel functions).
 * Runtimes are seconds by default (quick: smaller grids, for tests). */
#ifndef AS_SIMEXP_H
#define AS_SIMEXP_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "as_error.h"

typedef struct {
    uint64_t seed;       /* default 1 */
    long trials;         /* Monte-Carlo trials (0: the experiment's default) */
    int quick;           /* smaller grid */
    const char *trace;   /* bottleneck: also measure this real trace (NULL: none) */
    int quiet;
    const char *tmpdir;  /* where generated traces go (NULL: $TMPDIR or /tmp) */
} as_simexp_opts;

void as_simexp_opts_init(as_simexp_opts *o);

typedef struct {
    const char *kind, *title;
    const char *const *cols; /* NULL-terminated field names */
    const char *const *fmts; /* printf formats, same length */
} as_simexp_kind;

#define AS_SIMEXP_MAX_KINDS 6

typedef struct {
    cJSON *records;  /* array of records (owned) */
    cJSON *summary;  /* object or NULL (owned) */
    int failed;      /* records with "ok": false */
    int n_kinds;
    as_simexp_kind kinds[AS_SIMEXP_MAX_KINDS];
} as_simexp_table;

void as_simexp_table_free(as_simexp_table *t);

/* 1 if name is an experiment ("topk-mass", "rank", "bottleneck", "coverage", "spectrum"). */
int as_simexp_known(const char *name);
/* "topk-mass, rank, bottleneck, coverage, spectrum". */
const char *as_simexp_names(void);

/* Run an experiment; on AS_OK *t holds the records (free with as_simexp_table_free). A result
 * outside its tolerance is not an error: t->failed counts them. */
as_status as_simexp_run(const char *name, const as_simexp_opts *o, as_simexp_table *t,
                        char *err);

#endif
