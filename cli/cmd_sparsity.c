/* attnscope sparsity: error against bound for every selection method, on real traces. This
 * file parses the command line, opens the inputs, runs the analysis one layer at a time and
 * writes --export-index; the records and tables are made in cmd_sparsity_out.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_help.h"
#include "cli_job.h"
#include "cmd_sparsity.h"

const char as_help_sparsity[] =
    "usage: attnscope sparsity TRACE [--method M[,M...]|all] [--budget B[,B...] | --sparsity X[,X...]]\n"
    "                          [--index FILE] [--layer L] [--head H] [--query I]\n"
    "                          [--sinks S] [--page-size P] [--heavy-frac F]\n"
    "                          [--delta D] [--seed S] [--trials R] [--eps E] [--out-tol T]\n"
    "                          [--mem MIB] [--export-index FILE [--export-outputs]]\n"
    "                          [--json|--csv] [--summary-only] [--quiet]\n\n"
    "Approximate every query's attention output with a sparse method and compare it with the\n"
    "exact float64 output and with the theoretical bound (docs/theory.md).\n\n"
    "Methods (default: all but index and page-sample; index too when --index is given;\n"
    "--method all adds page-sample):\n"
    "  topk         oracle top-k: the k largest weights\n"
    "  sink-window  StreamingLLM: the first S positions (--sinks, default 4) and the last k-S\n"
    "  page         Quest: pages of P keys (--page-size, default 16) ranked by the upper bound\n"
    "               of q.k from per-page element-wise key min/max; floor(k/P) pages (at least 1)\n"
    "  uniform      uniform sample of k keys without replacement, importance-reweighted\n"
    "  topk-sample  vAttention-style: top round(F*k) keys (--heavy-frac, default 0.5) plus a\n"
    "               uniform sample of the rest, numerator and denominator estimated separately\n"
    "  page-sample  pages + sampling: the Quest pages within round(F*k) keys as the heavy\n"
    "               set, a uniform sample of the rest, estimated as topk-sample\n"
    "  index        the keys listed in a user's index file (--index; docs/trace-format.md);\n"
    "               if the file holds the kernel's outputs, their error is checked too\n\n"
    "Budgets: a fraction of each query's visible keys (0.02, 2%, 1/50), a key count (128), or\n"
    "--sparsity 50x (keep 1/50); comma-separated lists. Default: the sweep 2x..100x\n"
    "(2,3,4,5,8,10,16,20,32,50,64,100).\n\n"
    "Checks: subset methods must satisfy o - o_S = (1-P_S)(o_rest - o_S) and\n"
    "||o - o_S|| <= (1-P_S) max_{i not in S} ||v_i - o_S|| on every query (beyond float64\n"
    "tolerance: exit 1). Sampling methods report the (epsilon, delta) guarantee as 'bound';\n"
    "each query is drawn --trials times (default 1) and the run fails if the exceedances are\n"
    "improbable under delta (binomial tail below 1e-6). --eps (default 0.05) reports the\n"
    "samples the guarantee needs for that relative error.\n\n"
    "Records (docs/cli.md): 'sparsity' per layer x head x query x budget x method (JSON/CSV\n"
    "only; --summary-only leaves them out); tables: 'head_budget', 'head_sweep' (budget where\n"
    "each head crosses 1%/5%/10% relative error), 'layer_summary', 'model_summary',\n"
    "'coverage', 'check'.\n\n"
    "--export-index FILE writes the selection of one subset method at one budget as an index\n"
    "file (with --export-outputs also the float64 sparse outputs), e.g. to test a kernel.\n";

enum {
    OPT_METHOD = 1,
    OPT_BUDGET,
    OPT_SPARSITY,
    OPT_INDEX,
    OPT_QUERY,
    OPT_SINKS,
    OPT_PAGE,
    OPT_HEAVY,
    OPT_DELTA,
    OPT_SEED,
    OPT_TRIALS,
    OPT_EPS,
    OPT_OUTTOL,
    OPT_MEM,
    OPT_EXPORT,
    OPT_EXPORT_OUT,
    OPT_SUMMARY_ONLY
};

#define MAX_BUDGETS 256

/* The command line beyond the common options. */
typedef struct {
    as_sp_config cfg; /* methods and budgets point into the arrays below */
    as_sp_method methods[AS_SP_N_METHODS];
    size_t n_methods;
    as_budget budgets[MAX_BUDGETS];
    size_t n_budgets;
    const char *index_path, *export_path;
    int export_out, method_all, have_budget, summary_only, all_given;
} sp_cli;

static const char *const cmd = "sparsity";

/* --method M[,M...] or all */
static int parse_methods(sp_cli *s, const char *arg)
{
    s->method_all = s->all_given = strcmp(arg, "all") == 0;
    s->n_methods = 0;
    if (s->method_all) return 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", arg);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        as_sp_method m;
        if (as_sp_method_parse(tok, &m) != 0)
            return as_cli_usage(cmd, "unknown method '%s' (topk, sink-window, page, "
                                     "uniform, topk-sample, page-sample, index, all)",
                                tok);
        int dup = 0;
        for (size_t i = 0; i < s->n_methods; i++) dup |= s->methods[i] == m;
        if (!dup) s->methods[s->n_methods++] = m;
    }
    return s->n_methods == 0 ? as_cli_usage(cmd, "empty --method") : 0;
}

/* An integer option's value: 0, or 2 (message printed) when not in [lo, hi]. */
static int int_opt(const char *name, const char *arg, long lo, long hi, long *v)
{
    return as_cli_parse_int(cmd, name, arg, lo, hi, v) ? 2 : 0;
}

static int sp_opt(void *ctx, int opt, const char *arg)
{
    sp_cli *s = ctx;
    as_sp_config *cfg = &s->cfg;
    char err[AS_ERR_LEN];
    long v = 0;
    int r = 0;
    switch (opt) {
    case OPT_METHOD: return parse_methods(s, arg);
    case OPT_BUDGET:
    case OPT_SPARSITY:
        if (s->have_budget) return as_cli_usage(cmd, "give one --budget or --sparsity list");
        if (as_budget_parse_list(arg, opt == OPT_SPARSITY, s->budgets, MAX_BUDGETS,
                                 &s->n_budgets, err) != AS_OK)
            return as_cli_usage(cmd, "%s", err);
        s->have_budget = 1;
        return 0;
    case OPT_INDEX: s->index_path = arg; return 0;
    case OPT_QUERY:
        if (!(r = int_opt("query", arg, 0, 1L << 40, &v))) cfg->query = v;
        return r;
    case OPT_SINKS:
        if (!(r = int_opt("sinks", arg, 0, 1L << 30, &v))) cfg->params.sinks = (int)v;
        return r;
    case OPT_PAGE:
        if (!(r = int_opt("page-size", arg, 1, 1L << 20, &v))) cfg->params.page_size = (int)v;
        return r;
    case OPT_TRIALS:
        if (!(r = int_opt("trials", arg, 1, 1000000, &v))) cfg->trials = (int)v;
        return r;
    case OPT_MEM:
        if (!(r = int_opt("mem", arg, 1, 1L << 24, &v))) cfg->mem_limit = (size_t)v << 20;
        return r;
    case OPT_SEED: return as_cli_parse_u64(cmd, "seed", arg, &cfg->params.seed) ? 2 : 0;
    case OPT_HEAVY:
        return as_cli_parse_real(cmd, "heavy-frac", arg, 0, 1, 0, &cfg->params.heavy_frac) ? 2 : 0;
    case OPT_DELTA:
        return as_cli_parse_real(cmd, "delta", arg, 0, 1, AS_OPEN_LO | AS_OPEN_HI,
                                 &cfg->params.delta) ? 2 : 0;
    case OPT_EPS: /* samples_needed is the sample size for a relative error eps > 0 */
        return as_cli_parse_real(cmd, "eps", arg, 0, INFINITY, AS_OPEN_LO, &cfg->eps_rel) ? 2 : 0;
    case OPT_OUTTOL:
        return as_cli_parse_real(cmd, "out-tol", arg, 0, INFINITY, 0, &cfg->out_tol) ? 2 : 0;
    case OPT_EXPORT: s->export_path = arg; return 0;
    case OPT_EXPORT_OUT: s->export_out = 1; return 0;
    case OPT_SUMMARY_ONLY: s->summary_only = 1; return 0;
    default: return -1;
    }
}

/* After parsing: the methods of --method all (or the default), the default sweep, the
 * export's one method and one budget, the selection of layers and heads. 0 or exit code 2. */
static int settle(sp_cli *s, const as_cli_common *c)
{
    if (s->method_all) {
        for (int m = 0; m < AS_SP_N_METHODS; m++) /* page-sample only with --method all */
            if ((m != AS_SP_INDEX || s->index_path) && (m != AS_SP_PAGE_SAMPLE || s->all_given))
                s->methods[s->n_methods++] = (as_sp_method)m;
    }
    int uses_index = 0;
    for (size_t i = 0; i < s->n_methods; i++) uses_index |= s->methods[i] == AS_SP_INDEX;
    if (uses_index && !s->index_path) return as_cli_usage(cmd, "method 'index' needs --index FILE");
    if (!s->have_budget) s->n_budgets = as_budget_default_sweep(s->budgets, MAX_BUDGETS);
    if (s->export_path &&
        (s->n_methods != 1 || (s->methods[0] != AS_SP_INDEX && s->n_budgets != 1)))
        return as_cli_usage(cmd, "--export-index needs exactly one --method and one budget");
    s->cfg.methods = s->methods;
    s->cfg.n_methods = s->n_methods;
    s->cfg.budgets = s->budgets;
    s->cfg.n_budgets = s->n_budgets;
    s->cfg.layer = c->layer;
    s->cfg.head = c->head;
    return 0;
}

/* ---- the run --------------------------------------------------------------------------- */
/* A unit (one layer) gives its per-query 'sparsity' records (JSON/CSV without --summary-only)
 * and its as_sp_records, kept until the unit is over and then added to the aggregation in
 * order: nothing but those two leaves a unit. */
typedef struct {
    const sp_cli *s;
    as_sp_agg *agg;
    int per_query;
    as_out *out;          /* the running unit's records */
    as_sp_record *recs;   /* the running unit's records for the aggregation */
    size_t n_recs, cap;
    int no_memory;        /* a record could not be kept: the run stopped */
} run_ctx;

static int on_record(void *ctx, const as_sp_record *r)
{
    run_ctx *c = ctx;
    if (c->per_query) as_out_add(c->out, as_cli_sp_query_record(r));
    if (c->n_recs == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 1024;
        as_sp_record *t = realloc(c->recs, nc * sizeof *t);
        if (!t) return c->no_memory = 1;
        c->recs = t;
        c->cap = nc;
    }
    c->recs[c->n_recs++] = *r;
    return 0;
}

/* One layer: every selected head, query, method and budget. */
static int sparsity_unit(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o)
{
    run_ctx *rc = ctx;
    rc->out = o;
    rc->n_recs = 0;
    as_sp_config cfg = rc->s->cfg;
    cfg.layer = u->layer->index;
    cfg.progress = as_cli_job_progress;
    cfg.progress_ctx = j;
    char err[AS_ERR_LEN];
    as_status st = as_sp_run(j->tr, &cfg, on_record, rc, err);
    if (st == AS_OK && rc->no_memory)
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < rc->n_recs && st == AS_OK; i++)
        if (as_sp_agg_add(rc->agg, &rc->recs[i]) != 0)
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    if (st != AS_OK) {
        fprintf(stderr, "attnscope sparsity: %s: %s\n", j->c.trace, err);
        return as_status_exit_code(st);
    }
    return 0;
}

/* ---- --export-index -------------------------------------------------------------------- */
/* One layer's rows of the index file (with --export-outputs, the float64 sparse outputs). */
static int export_layer(const as_layer *l, as_sp_method m, as_budget b, const as_sp_params *p,
                        int with_out, as_sp_sel *sel, as_index_layer_data *e)
{
    char err[AS_ERR_LEN];
    int64_t K = as_sp_layer_width(l, m, b, p);
    e->layer = l->index;
    e->h = l->hq;
    e->t = l->t;
    e->k = K > 0 ? K : 1;
    e->d = l->d;
    int32_t *idx = malloc((size_t)(e->h * e->t * e->k) * sizeof *idx);
    double *out = with_out ? calloc((size_t)(e->h * e->t * e->d), sizeof *out) : NULL;
    e->idx = idx;
    e->out = out;
    if (!idx || (with_out && !out)) return as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < e->h * e->t * e->k; i++) idx[i] = -1;
    for (int64_t h = 0; h < l->hq; h++)
        for (int64_t qi = 0; qi < l->t; qi++) {
            as_status st = as_sp_select(l, h, qi, m, b, p, 0, NULL, sel, err);
            if (st == AS_OK && sel->n_det + sel->n_samp > e->k)
                st = as_err_set(err, AS_ERR_CHECK, "selection wider than the index row");
            if (st != AS_OK) return as_cli_fail(cmd, st, err);
            int64_t *all = malloc((size_t)(sel->n_det + sel->n_samp + 1) * sizeof *all);
            if (!all) return as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
            int64_t k = as_select_merge(sel->det, sel->n_det, sel->samp, sel->n_samp, all);
            int32_t *row = idx + (h * e->t + qi) * e->k;
            for (int64_t jj = 0; jj < k; jj++) row[jj] = (int32_t)all[jj];
            if (with_out) {
                as_sp_eval ev;
                st = as_sp_check_subset(l, h, qi, all, k, NULL, 0, &ev,
                                        out + (h * e->t + qi) * e->d, err);
            }
            free(all);
            if (st != AS_OK) return as_cli_fail(cmd, st, err);
        }
    return 0;
}

/* Export the selection of one method at one budget as an index file. */
static int export_index(const as_trace *tr, const as_sp_config *cfg, const char *path,
                        int with_out, const char *trace_path)
{
    char err[AS_ERR_LEN];
    as_sp_method m = cfg->methods[0];
    as_budget b = m == AS_SP_INDEX ? (as_budget){1.0, 0} : cfg->budgets[0];
    size_t nl = as_trace_n_layers(tr);
    as_index_layer_data *L = calloc(nl, sizeof *L);
    if (!L) return as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
    int rc = 0;
    size_t used = 0;
    as_sp_sel sel;
    as_sp_sel_init(&sel);
    for (size_t li = 0; li < nl && rc == 0; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (cfg->layer >= 0 && l->index != cfg->layer) continue;
        rc = export_layer(l, m, b, &cfg->params, with_out, &sel, &L[used++]);
    }
    as_sp_sel_free(&sel);
    if (rc == 0) {
        char bud[64];
        if (b.count > 0)
            snprintf(bud, sizeof bud, "%lld", (long long)b.count);
        else
            snprintf(bud, sizeof bud, "%.17g", b.frac);
        as_meta meta[3] = {{"method", (char *)as_sp_method_name(m)},
                           {"budget", bud},
                           {"trace", (char *)trace_path}};
        as_status st = as_index_write(path, L, used, meta, 3, err);
        if (st != AS_OK) {
            fprintf(stderr, "attnscope sparsity: %s\n", err);
            rc = as_status_exit_code(st);
        }
    }
    for (size_t i = 0; i < used; i++) {
        free((void *)L[i].idx);
        free((void *)L[i].out);
    }
    free(L);
    return rc;
}

/* ---- the command ----------------------------------------------------------------------- */
/* The trace (checked against --layer, --head, --query), the index file, the export's path. */
static int open_inputs(as_cli_job *j, as_index **ix, sp_cli *s, const as_cli_common *c)
{
    int code = as_cli_job_open(j, cmd, c, s->cfg.query, AS_CLI_UNITS_LAYER);
    if (code != 0) return code;
    *ix = NULL;
    if (s->index_path) {
        char err[AS_ERR_LEN];
        as_status st;
        *ix = as_index_open(s->index_path, &st, err);
        if (!*ix) {
            as_cli_job_close(j);
            fprintf(stderr, "attnscope sparsity: %s\n", err);
            return as_status_exit_code(st);
        }
        s->cfg.params.index = *ix;
    }
    /* an export that cannot be written is refused now, not after the analysis */
    if (s->export_path && (code = as_cli_check_output(cmd, s->export_path)) != 0) {
        as_index_free(*ix);
        as_cli_job_close(j);
    }
    return code;
}

int as_cmd_sparsity(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"method", required_argument, 0, OPT_METHOD},
                                         {"budget", required_argument, 0, OPT_BUDGET},
                                         {"sparsity", required_argument, 0, OPT_SPARSITY},
                                         {"index", required_argument, 0, OPT_INDEX},
                                         {"query", required_argument, 0, OPT_QUERY},
                                         {"sinks", required_argument, 0, OPT_SINKS},
                                         {"page-size", required_argument, 0, OPT_PAGE},
                                         {"heavy-frac", required_argument, 0, OPT_HEAVY},
                                         {"delta", required_argument, 0, OPT_DELTA},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"trials", required_argument, 0, OPT_TRIALS},
                                         {"eps", required_argument, 0, OPT_EPS},
                                         {"out-tol", required_argument, 0, OPT_OUTTOL},
                                         {"mem", required_argument, 0, OPT_MEM},
                                         {"export-index", required_argument, 0, OPT_EXPORT},
                                         {"export-outputs", no_argument, 0, OPT_EXPORT_OUT},
                                         {"summary-only", no_argument, 0, OPT_SUMMARY_ONLY},
                                         {0, 0, 0, 0}};
    sp_cli s;
    memset(&s, 0, sizeof s);
    as_sp_config_init(&s.cfg);
    s.cfg.eps_rel = 0.05;
    s.method_all = 1;
    as_cli_common c;
    int rc = as_cli_parse_trace(cmd, argc, argv, opts, NULL, sp_opt, &s, &c);
    if (rc != AS_CLI_GO) return rc;
    if ((rc = settle(&s, &c)) != 0) return rc;
    as_cli_job j;
    as_index *ix;
    if ((rc = open_inputs(&j, &ix, &s, &c)) != 0) return rc;

    as_out *o = as_out_new(c.fmt, cmd, c.trace);
    run_ctx run = {&s, as_sp_agg_new(&s.cfg), c.fmt != AS_FMT_TABLE && !s.summary_only, o,
                   NULL, 0, 0, 0};
    rc = as_cli_job_run(&j, cmd, sparsity_unit, &run, o);
    free(run.recs);
    char err[AS_ERR_LEN];
    as_status st = rc == 0 ? as_sp_agg_finish(run.agg, err) : AS_OK;
    if (st != AS_OK) {
        fprintf(stderr, "attnscope sparsity: %s: %s\n", c.trace, err);
        rc = as_status_exit_code(st);
    }
    as_cli_sp_check chk = {0, 0, 0};
    if (rc == 0) as_cli_sp_aggregates(o, run.agg, s.cfg.params.delta, &chk);
    /* the export first: a run that fails prints nothing */
    if (rc == 0 && s.export_path)
        rc = export_index(j.tr, &s.cfg, s.export_path, s.export_out, c.trace);
    rc = as_out_done(o, rc);
    as_sp_agg_free(run.agg);
    as_index_free(ix);
    as_cli_job_close(&j);
    if (rc != 0) return rc;
    if (chk.violations || chk.identity_failures || chk.coverage_failures) {
        fprintf(stderr,
                "attnscope sparsity: %s: check failed: %lld bound violations, %lld identity "
                "failures, %lld coverage failures\n",
                c.trace, (long long)chk.violations, (long long)chk.identity_failures,
                (long long)chk.coverage_failures);
        return 1;
    }
    return 0;
}
