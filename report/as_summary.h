/* as_summary: everything the report and `attnscope compare` show about one trace, gathered
 * from the analysis modules' C APIs (as_attn, as_entropy, as_rank, as_bottleneck,
 * as_sparsity, as_spectrum) into plain arrays. No plotting here and no second implementation
 * of any analysis: this module only calls the library and aggregates (means, quantiles).
 *
 * Arrays hold NaN where a value is unavailable. A family of quantities whose module is not
 * part of this build is marked absent (have_* = 0) and the report says so. */
#ifndef AS_SUMMARY_H
#define AS_SUMMARY_H

#include <stdint.h>

#include "as_error.h"
#include "as_trace.h"

#define AS_SUM_MAX_METHODS 8
#define AS_SUM_MAX_LEVELS 16
#define AS_SUM_PROFILE_BINS 512

typedef struct {
    int layer;                       /* index as in the trace */
    int64_t hq, hkv, t, n, d;
    double scale;
    /* where attention goes: mean weight of each key-position bin over heads and queries,
     * normalised by bin width (a density over positions: sums to 1 over positions) */
    int nbins;
    double bin_width;                /* positions per bin */
    double *profile;                 /* [nbins] */
    double *sink_mass;               /* [hq] mean weight on position 0 */
    /* issue 4: per query head x query */
    double *entropy_norm;            /* [hq * t]  H / ln n */
    double *entropy_bits;            /* [hq * t] */
    double *k90_frac, *k99_frac;     /* [hq * t]  k / n */
    double *erank_k;                 /* [hkv]     effective rank of keys (Roy & Vetterli) */
    double *collision_dim;           /* [hq]      n - rank([V^T; 1^T]), mean over queries */
    double *collision_frac;          /* [hq]      mean of (n - rank) / n */
    double *value_rank;              /* [hq]      rank([V^T; 1^T]), mean over queries */
    double *tv_witness;              /* [hq]      TV distance reached by the witness (of the
                                      *           last query, or the mean; see opts.witness) */
    int n_absorb;                    /* budgets of the absorption ratio */
    double absorb_budget[16];        /* fractions of n */
    double *absorption;              /* [hq * n_absorb] mean over queries */
    /* issue 5: error of each method at each sparsity level, per query head: median over
     * queries of relative output error and of the relative bound */
    double *rel_err;                 /* [methods][levels][hq] */
    double *rel_bound;               /* [methods][levels][hq] */
    double *tol_1, *tol_5;           /* [methods][hq] largest sparsity with rel. error < 1%/5% */
    /* issue 6: positional spectrum per query head */
    int nfreq;
    double *spec_period;             /* [nfreq] period in positions */
    double *spec_power;              /* [hq * nfreq] */
    double *periodicity;             /* [hq] peak-to-mean power ratio */
    double *dominant_period;         /* [hq] */
} as_sum_layer;

typedef struct {
    size_t n_layers;
    as_sum_layer *layers;
    int have_entropy, have_rank, have_bottleneck, have_sparsity, have_spectrum;
    int n_methods, n_levels;
    const char *method_names[AS_SUM_MAX_METHODS];
    double levels[AS_SUM_MAX_LEVELS]; /* sparsity factors N / k */
    /* model-level per method (as_sp_agg's summary, layer -1) */
    double m_sparsity_1[AS_SUM_MAX_METHODS], m_sparsity_5[AS_SUM_MAX_METHODS]; /* median */
    double m_slack[AS_SUM_MAX_METHODS];     /* median bound / error */
    int64_t m_records[AS_SUM_MAX_METHODS], m_violations[AS_SUM_MAX_METHODS];
    int64_t m_dense_heads[AS_SUM_MAX_METHODS]; /* heads no sparsity serves at 5% */
    int64_t m_draws[AS_SUM_MAX_METHODS], m_exceed[AS_SUM_MAX_METHODS]; /* sampling methods */
    int m_sampling[AS_SUM_MAX_METHODS];
    char missing[5][160];             /* why a family is absent (empty when present) */
    /* analyses left out of some layers because the trace is too small for them (e.g. the
     * positional spectrum needs 4 keys): one line for the reader, empty when none */
    char left_out[256];
    /* layers whose positional spectrum is left out (the first 8 listed; left_out says so) */
    int n_spec_skipped, spec_skipped[8];
} as_summary;

typedef struct {
    int layer;                       /* -1: all */
    int witness;                     /* bottleneck TV witness (one LP per query): 0 none,
                                      * 1 the last decode query of each head (default),
                                      * 2 every query */
    void (*progress)(void *ctx, uint64_t done, uint64_t total);
    void *ctx;
    /* every record of the sparsity sweep as it is made (an as_sp_record, analysis/as_sparsity.h;
     * may be NULL): the MPI engine gathers them to compute the model-level sparsity over the
     * layers of several ranks (as_summary_model_sparsity). Nonzero return stops the run. */
    int (*sp_record)(void *sp_ctx, const void *as_sp_record);
    void *sp_ctx;
    int threads; /* the sparsity sweep's workers (analysis/as_sweep.h); 0: every core */
} as_summary_opts;

void as_summary_opts_init(as_summary_opts *o);
as_summary *as_summary_compute(const as_trace *tr, const as_summary_opts *o, char *err);
/* The same, with the status of a failure in *st (AS_ERR_VALUE/USAGE: the input; NOMEM, ...). */
as_summary *as_summary_compute_st(const as_trace *tr, const as_summary_opts *o, as_status *st,
                                  char *err);
void as_summary_free(as_summary *s);

/* ---- a summary put together from parts computed apart (the MPI engine, issue 19) ---------- */
/* The sweep the sparsity family runs: its methods and budgets (as_sp_method, as_budget of
 * analysis/as_sparsity.h); returns the number of methods, budgets in *n_budgets (at most
 * AS_SUM_MAX_LEVELS). NULL arrays: counts only. */
int as_summary_sp_sweep(int *methods, void *budgets, size_t *n_budgets);
/* The model-level sparsity (m_* fields) from a finished as_sp_agg over every layer's records
 * (in layer order, as one run makes them); a summary of some layers computed with sp_record
 * has only its own layers' values there. */
void as_summary_model_sparsity(as_summary *s, const void *as_sp_agg);
/* Append part's layers to into (ownership moves; part is freed). into's family flags,
 * methods, levels and notes are taken from the first part joined to an empty summary
 * (as_summary_empty). */
as_summary *as_summary_empty(void);
void as_summary_join(as_summary *into, as_summary *part);

/* The per-layer aggregates `compare` prints and the comparison page plots. */
#define AS_SUM_NQ 10
extern const char *const as_sum_qnames[AS_SUM_NQ];   /* "sink_mass", "entropy_norm", ... */
extern const char *const as_sum_qtitles[AS_SUM_NQ];  /* axis titles with units */
void as_summary_layer_quantities(const as_summary *s, const as_sum_layer *L,
                                 double q[AS_SUM_NQ]);

/* Mean of the finite values of x[0..n), NaN if none. */
double as_sum_mean(const double *x, int64_t n);
/* Quantile of the finite values (copied and sorted), NaN if none. */
double as_sum_quantile(const double *x, int64_t n, double q);

#endif
