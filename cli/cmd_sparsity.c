/* attnscope sparsity: error against bound for every selection method, on real traces. This
 * file parses the command line, opens the inputs, runs the analysis (the layers of every
 * trace as units on the ranks: cli/cli_par.h; inside a layer the shared sweep over threads:
 * analysis/as_sweep.h) and writes --export-index; the records and tables are made in
 * cmd_sparsity_out.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_sweep.h"
#include "cli_help.h"
#include "cli_job.h"
#include "cli_par.h"
#include "cmd_sparsity.h"

const char as_help_sparsity[] =
    "usage: attnscope sparsity TRACE... [--method M[,M...]|all] [--budget B[,B...] | --sparsity X[,X...]]\n"
    "                          [--index FILE] [--layer L] [--head H] [--query I]\n"
    "                          [--sinks S] [--page-size P] [--page-bounds exact|f32|bf16]\n"
    "                          [--heavy-frac F] [--is-score center|bound] [--is-temp T]\n"
    "                          [--is-mix B] [--is-draw poisson|replace] [--delta D] [--seed S]\n"
    "                          [--trials R] [--eps E]\n"
    "                          [--out-tol T] [--mem MIB] [--threads N]\n"
    "                          [--export-index FILE [--export-outputs]]\n"
    "                          [--json|--csv] [--summary-only] [--quiet]\n\n"
    "Approximate every query's attention output with a sparse method and compare it with the\n"
    "exact float64 output and with the theoretical bound (docs/theory.md).\n\n"
    "Methods (default: all but index, page-sample and page-is; index too when --index is given;\n"
    "--method all adds page-sample; page-is only when named):\n"
    "  topk         oracle top-k: the k largest weights\n"
    "  sink-window  StreamingLLM: the first S positions (--sinks, default 4) and the last k-S\n"
    "  page         Quest: pages of P keys (--page-size, default 16) ranked by the upper bound\n"
    "               of q.k from per-page element-wise key min/max; floor(k/P) pages (at least 1);\n"
    "               --page-bounds f32 or bf16 stores the min/max in that format, rounded\n"
    "               outward (min down, max up: still an upper bound), as a GPU cache might\n"
    "               (default exact: the keys' own values; page-sample uses it too)\n"
    "  uniform      uniform sample of k keys without replacement, importance-reweighted\n"
    "  topk-sample  vAttention-style: top round(F*k) keys (--heavy-frac, default 0.5) plus a\n"
    "               uniform sample of the rest, numerator and denominator estimated separately\n"
    "  page-sample  pages + sampling: the Quest pages within round(F*k) keys as the heavy\n"
    "               set, a uniform sample of the rest, estimated as topk-sample\n"
    "  page-is      pages + importance sampling: page-sample's heavy set, then a sample of the\n"
    "               keys outside it from a proposal q: a page in proportion to |p| exp(T x_p),\n"
    "               x_p the score of the centre of the page's key box, (U_p + L_p)/2\n"
    "               (--is-score center, the default) or its Quest bound U_p (bound); --is-temp T\n"
    "               (default 1); mixed with a share B of uniform draws (--is-mix, default 0.1);\n"
    "               a key uniform in the page. --is-draw poisson (default): each key kept with\n"
    "               probability pi_j = min(1, c q_j), sum pi_j = k - |H| (k keys on average),\n"
    "               weight 1/pi_j; replace: k - |H| draws with replacement, weight 1/(m q_j)\n"
    "               (runs outside the shared sweep)\n"
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
    "Every method but index and page-is runs on the shared sweep (one selection per query for\n"
    "all budgets, one pass over V for every method and budget; docs/benchmarks.md) over\n"
    "--threads workers (default: every core; under mpirun with several ranks the node's cores\n"
    "shared by its ranks; each gets its share of --mem); records reach the output in order.\n\n"
    "--export-index FILE writes the selection of one subset method at one budget as an index\n"
    "file (with --export-outputs also the float64 sparse outputs), e.g. to test a kernel.\n\n"
    "Several traces (A B C ...; a study's models, prompts, lengths): each is analysed as if\n"
    "alone, its records carry its path in 'trace', and 'trace_summary' records (table 'Across\n"
    "traces') put their model summaries side by side. Under mpirun the layers of all traces\n"
    "share the ranks (docs/scale.md).\n";

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
    OPT_SUMMARY_ONLY,
    OPT_THREADS,
    OPT_PAGE_BOUNDS,
    OPT_IS_TEMP,
    OPT_IS_MIX,
    OPT_IS_SCORE,
    OPT_IS_DRAW
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
    int threads; /* --threads; 0: every online core */
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
                                     "uniform, topk-sample, page-sample, page-is, index, all)",
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
    case OPT_PAGE_BOUNDS: {
        as_sp_bounds f;
        if (as_sp_bounds_parse(arg, &f) != 0)
            return as_cli_usage(cmd, "--page-bounds '%s': expected exact, f32 or bf16", arg);
        cfg->params.page_bounds = (int)f;
        return 0;
    }
    case OPT_TRIALS:
        if (!(r = int_opt("trials", arg, 1, 1000000, &v))) cfg->trials = (int)v;
        return r;
    case OPT_MEM:
        if (!(r = int_opt("mem", arg, 1, 1L << 24, &v))) cfg->mem_limit = (size_t)v << 20;
        return r;
    case OPT_SEED: return as_cli_parse_u64(cmd, "seed", arg, &cfg->params.seed) ? 2 : 0;
    case OPT_HEAVY:
        return as_cli_parse_real(cmd, "heavy-frac", arg, 0, 1, 0, &cfg->params.heavy_frac) ? 2 : 0;
    case OPT_IS_TEMP:
        return as_cli_parse_real(cmd, "is-temp", arg, 0, 1e6, 0, &cfg->params.is_temp) ? 2 : 0;
    case OPT_IS_MIX:
        return as_cli_parse_real(cmd, "is-mix", arg, 0, 1, AS_OPEN_LO, &cfg->params.is_mix) ? 2
                                                                                       : 0;
    case OPT_IS_SCORE:
        if (strcmp(arg, "center") == 0 || strcmp(arg, "centre") == 0)
            cfg->params.is_score = AS_SP_IS_CENTER;
        else if (strcmp(arg, "bound") == 0)
            cfg->params.is_score = AS_SP_IS_BOUND;
        else
            return as_cli_usage(cmd, "--is-score '%s': expected center or bound", arg);
        return 0;
    case OPT_IS_DRAW:
        if (strcmp(arg, "poisson") == 0)
            cfg->params.is_draw = AS_SP_IS_POISSON;
        else if (strcmp(arg, "replace") == 0)
            cfg->params.is_draw = AS_SP_IS_REPLACE;
        else
            return as_cli_usage(cmd, "--is-draw '%s': expected poisson or replace", arg);
        return 0;
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
    case OPT_THREADS:
        if (!(r = int_opt("threads", arg, 1, 1024, &v))) s->threads = (int)v;
        return r;
    default: return -1;
    }
}

/* After parsing: the methods of --method all (or the default), the default sweep, the
 * export's one method and one budget, the selection of layers and heads. 0 or exit code 2. */
static int settle(sp_cli *s, const as_cli_common *c)
{
    if (s->method_all) {
        /* page-sample only with --method all, page-is only when named */
        for (int m = 0; m < AS_SP_N_METHODS; m++)
            if ((m != AS_SP_INDEX || s->index_path) && (m != AS_SP_PAGE_SAMPLE || s->all_given) &&
                m != AS_SP_PAGE_IS)
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
/* One trace's run: its per-query 'sparsity' records (JSON/CSV without --summary-only) go to
 * out, every record to its aggregation. Records arrive on rank 0 in the order of one run. */
typedef struct {
    as_out *out;
    as_sp_agg *agg;
    int per_query;
    const char *tag; /* several traces: the trace's path, a field of every record */
} run_ctx;

static int on_record(void *ctx, size_t trace, const as_sp_record *r)
{
    run_ctx *c = (run_ctx *)ctx + trace;
    if (c->per_query) as_out_add(c->out, as_cli_sp_query_record(r, c->tag));
    return as_sp_agg_add(c->agg, r);
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    as_progress_update(ctx, done);
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
enum { MAX_TRACES = 64 };

/* The traces (each checked against --layer, --head, --query), the index file, the export's
 * path. On failure nothing is left open. */
static int open_inputs(as_cli_job *jobs, size_t ntr, const char *const *tpath, as_index **ix,
                       sp_cli *s, const as_cli_common *c)
{
    int code = 0;
    size_t opened = 0;
    *ix = NULL;
    for (; opened < ntr && code == 0; opened++) {
        as_cli_common ct = *c;
        ct.trace = tpath[opened];
        code = as_cli_job_open(&jobs[opened], cmd, &ct, s->cfg.query, AS_CLI_UNITS_NONE);
        if (code != 0) break;
    }
    if (code == 0 && s->index_path) {
        char err[AS_ERR_LEN];
        as_status st;
        *ix = as_index_open(s->index_path, &st, err);
        if (!*ix) {
            fprintf(stderr, "attnscope sparsity: %s\n", err);
            code = as_status_exit_code(st);
        }
        s->cfg.params.index = *ix;
    }
    /* an export that cannot be written is refused now, not after the analysis */
    if (code == 0 && s->export_path) code = as_cli_check_output(cmd, s->export_path);
    if (code != 0) {
        as_index_free(*ix);
        *ix = NULL;
        for (size_t t = 0; t < opened; t++) as_cli_job_close(&jobs[t]);
    }
    return code;
}

/* Every trace's layers on the ranks (one rank: each trace in turn, as one as_sp_run or
 * as_sweep_run would); rank 0's aggregations get every record. */
static as_status run_all(as_cli_job *jobs, size_t ntr, const sp_cli *s, const as_cli_common *c,
                         run_ctx *ctxs, char *err)
{
    as_trace *trs[MAX_TRACES];
    uint64_t total = 0;
    size_t combos = 0;
    for (size_t i = 0; i < s->n_methods; i++)
        combos += s->methods[i] == AS_SP_INDEX ? 1 : s->n_budgets;
    for (size_t t = 0; t < ntr; t++) {
        trs[t] = jobs[t].tr;
        for (size_t li = 0; li < as_trace_n_layers(trs[t]); li++) {
            const as_layer *l = as_trace_layer(trs[t], li);
            if (c->layer >= 0 && l->index != c->layer) continue;
            total += (uint64_t)((c->head >= 0 ? 1 : l->hq) * (s->cfg.query >= 0 ? 1 : l->t)) *
                     combos;
        }
    }
    as_progress *prog = as_progress_new(cmd, total, c->quiet || as_mpi_rank() != 0);
    as_sp_config cfg = s->cfg;
    cfg.progress = on_progress;
    cfg.progress_ctx = prog;
    as_status st = as_par_sp_run(trs, ntr, &cfg, s->threads, on_record, ctxs, NULL, err);
    as_progress_free(prog);
    return st;
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
                                         {"page-bounds", required_argument, 0, OPT_PAGE_BOUNDS},
                                         {"heavy-frac", required_argument, 0, OPT_HEAVY},
                                         {"is-temp", required_argument, 0, OPT_IS_TEMP},
                                         {"is-mix", required_argument, 0, OPT_IS_MIX},
                                         {"is-score", required_argument, 0, OPT_IS_SCORE},
                                         {"is-draw", required_argument, 0, OPT_IS_DRAW},
                                         {"delta", required_argument, 0, OPT_DELTA},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"trials", required_argument, 0, OPT_TRIALS},
                                         {"eps", required_argument, 0, OPT_EPS},
                                         {"out-tol", required_argument, 0, OPT_OUTTOL},
                                         {"mem", required_argument, 0, OPT_MEM},
                                         {"export-index", required_argument, 0, OPT_EXPORT},
                                         {"export-outputs", no_argument, 0, OPT_EXPORT_OUT},
                                         {"summary-only", no_argument, 0, OPT_SUMMARY_ONLY},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {0, 0, 0, 0}};
    sp_cli s;
    memset(&s, 0, sizeof s);
    as_sp_config_init(&s.cfg);
    s.cfg.eps_rel = 0.05;
    s.method_all = 1;
    as_cli_common c;
    int rc = as_cli_parse_opts(cmd, argc, argv, opts, NULL, sp_opt, &s, &c);
    if (rc != AS_CLI_GO) return rc;
    /* several traces: each one's records carry its path, each one gets its aggregates, and a
     * cross-trace summary follows; their layers share the ranks */
    if (optind > argc - 1) return as_cli_usage(cmd, "expects a TRACE (or several)");
    const size_t ntr = (size_t)(argc - optind);
    const char *const *tpath = (const char *const *)argv + optind;
    if (ntr > 1 && (s.index_path || s.export_path))
        return as_cli_usage(cmd, "--index and --export-index take one TRACE");
    if (ntr > MAX_TRACES) return as_cli_usage(cmd, "at most %d traces in one run", MAX_TRACES);
    c.trace = tpath[0];
    if ((rc = settle(&s, &c)) != 0) return rc;
    as_cli_job jobs[MAX_TRACES];
    as_index *ix;
    if ((rc = open_inputs(jobs, ntr, tpath, &ix, &s, &c)) != 0) return rc;

    char names[8200];
    int nl = 0;
    for (size_t t = 0; t < ntr && nl >= 0 && (size_t)nl < sizeof names; t++)
        nl += snprintf(names + nl, sizeof names - (size_t)nl, "%s%s", t ? " | " : "", tpath[t]);
    as_out *o = as_mpi_rank() == 0 ? as_out_new(c.fmt, cmd, names) : NULL;
    run_ctx ctxs[MAX_TRACES];
    for (size_t t = 0; t < ntr; t++)
        ctxs[t] = (run_ctx){o, as_sp_agg_new(&s.cfg), c.fmt != AS_FMT_TABLE && !s.summary_only,
                            ntr > 1 ? tpath[t] : NULL};
    char err[AS_ERR_LEN];
    size_t failed_t = 0;
    as_status st = (rc = as_mpi_agree(0)) != 0 ? AS_ERR_USAGE
                   : run_all(jobs, ntr, &s, &c, ctxs, err);
    for (size_t t = 0; t < ntr && st == AS_OK && o; t++) {
        st = as_sp_agg_finish(ctxs[t].agg, err);
        failed_t = t;
    }
    if (st != AS_OK && rc == 0) {
        if (o) fprintf(stderr, "attnscope sparsity: %s: %s\n", tpath[failed_t], err);
        rc = as_status_exit_code(st);
    }
    /* rank 0 writes; the others only took part in the run */
    as_cli_sp_check chk[MAX_TRACES];
    memset(chk, 0, sizeof chk);
    if (rc == 0 && o) {
        for (size_t t = 0; t < ntr; t++)
            as_cli_sp_aggregates(o, ctxs[t].agg, s.cfg.params.delta, ctxs[t].tag, &chk[t]);
        if (ntr > 1) {
            const as_sp_agg *aggs[MAX_TRACES];
            as_trace *trs[MAX_TRACES];
            for (size_t t = 0; t < ntr; t++) aggs[t] = ctxs[t].agg, trs[t] = jobs[t].tr;
            as_cli_sp_across(o, trs, tpath, aggs, ntr, c.layer);
        }
        as_cli_sp_tables(o, ntr > 1);
    }
    /* the export first: a run that fails prints nothing */
    if (rc == 0 && o && s.export_path)
        rc = export_index(jobs[0].tr, &s.cfg, s.export_path, s.export_out, c.trace);
    rc = o ? as_out_done(o, rc) : rc;
    for (size_t t = 0; t < ntr; t++) {
        as_sp_agg_free(ctxs[t].agg);
        as_cli_job_close(&jobs[t]);
    }
    as_index_free(ix);
    if (rc != 0) return rc;
    int pass = 1;
    for (size_t t = 0; t < ntr; t++)
        if (chk[t].violations || chk[t].identity_failures || chk[t].coverage_failures) {
            pass = 0;
            fprintf(stderr,
                    "attnscope sparsity: %s: check failed: %lld bound violations, %lld identity "
                    "failures, %lld coverage failures\n",
                    tpath[t], (long long)chk[t].violations, (long long)chk[t].identity_failures,
                    (long long)chk[t].coverage_failures);
        }
    return pass ? 0 : 1;
}
