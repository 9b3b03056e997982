/* attnscope sparsity: error against bound for every selection method, on real traces. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_sparsity.h"
#include "as_sweep.h"
#include "cli_help.h"
#include "cli_util.h"

const char as_help_sparsity[] =
    "usage: attnscope sparsity TRACE [--method M[,M...]|all] [--budget B[,B...] | --sparsity X[,X...]]\n"
    "                          [--index FILE] [--layer L] [--head H] [--query I]\n"
    "                          [--sinks S] [--page-size P] [--heavy-frac F]\n"
    "                          [--delta D] [--seed S] [--trials R] [--eps E] [--out-tol T]\n"
    "                          [--mem MIB] [--threads N] [--export-index FILE [--export-outputs]]\n"
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
    "Every method but index runs on the shared sweep (one selection per query for all budgets,\n"
    "one pass over V for every method and budget; docs/benchmarks.md) over --threads workers\n"
    "(default: every core; each gets its share of --mem); records reach the output in order.\n\n"
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
    OPT_SUMMARY_ONLY,
    OPT_THREADS
};

#define MAX_BUDGETS 256

typedef struct {
    as_out *out;
    as_sp_agg *agg;
    as_progress *prog;
    int per_query; /* emit the per-query 'sparsity' records (JSON/CSV without --summary-only) */
} run_ctx;

/* 1 / budget, printed as the sweep's nominal value (1 / (1/3) is 3.0000000000000009 in
 * binary floating point; readers compare sparsities by value). */
static double nominal_sparsity(double budget)
{
    if (!(budget > 0)) return NAN;
    const double v = 1.0 / budget, r = round(v * 1e6) / 1e6;
    return fabs(v - r) <= 1e-12 * v ? r : v;
}

static int on_record(void *ctx, const as_sp_record *r)
{
    run_ctx *c = ctx;
    if (!c->per_query) return as_sp_agg_add(c->agg, r);
    const as_sp_eval *ev = &r->ev;
    int sampling = as_sp_method_is_sampling(r->method);
    cJSON *j = as_rec_new("sparsity", r->layer, r->head);
    cJSON_AddNumberToObject(j, "kv_head", (double)r->kv_head);
    cJSON_AddNumberToObject(j, "query", (double)r->query);
    cJSON_AddStringToObject(j, "method", as_sp_method_name(r->method));
    cJSON_AddNumberToObject(j, "budget", r->budget);
    cJSON_AddNumberToObject(j, "k", (double)ev->k);
    cJSON_AddNumberToObject(j, "n", (double)ev->n);
    cJSON_AddNumberToObject(j, "captured_mass", ev->captured_mass);
    cJSON_AddNumberToObject(j, "abs_error", ev->abs_error);
    cJSON_AddNumberToObject(j, "rel_error", ev->rel_error);
    cJSON_AddNumberToObject(j, "bound", ev->bound);
    cJSON_AddNumberToObject(j, "rel_bound", ev->rel_bound);
    cJSON_AddBoolToObject(j, "violated", ev->violated);
    cJSON_AddStringToObject(j, "bound_kind", sampling ? "probabilistic" : "deterministic");
    cJSON_AddNumberToObject(j, "slack", ev->abs_error > 0 ? ev->bound / ev->abs_error : NAN);
    cJSON_AddNumberToObject(j, "norm", ev->norm_o);
    cJSON_AddNumberToObject(j, "identity_error", ev->identity_error);
    cJSON_AddBoolToObject(j, "identity_ok", ev->identity_ok);
    if (sampling) {
        cJSON_AddNumberToObject(j, "delta", r->delta);
        cJSON_AddNumberToObject(j, "samples", (double)ev->samples);
        if (ev->samples_needed >= 0)
            cJSON_AddNumberToObject(j, "samples_needed", (double)ev->samples_needed);
        cJSON_AddNumberToObject(j, "trials", r->trials);
        cJSON_AddNumberToObject(j, "exceed", r->exceed);
        cJSON_AddNumberToObject(j, "subset_bound", ev->subset_bound);
        cJSON_AddBoolToObject(j, "subset_violated", ev->subset_violated);
    }
    if (r->has_kernel) cJSON_AddBoolToObject(j, "kernel_output", 1);
    as_out_add(c->out, j);
    return as_sp_agg_add(c->agg, r);
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    as_progress_update(ctx, done);
}

static void num_or_null(cJSON *j, const char *k, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(j, k);
    else
        cJSON_AddNumberToObject(j, k, v);
}

static const char *const tnames[AS_SP_N_THRESH] = {"1pct", "5pct", "10pct"};

/* Export the selection of one method at one budget as an index file. */
static int export_index(const as_trace *tr, const as_sp_config *cfg, const char *path,
                        int with_out, const char *trace_path)
{
    char err[AS_ERR_LEN];
    as_sp_method m = cfg->methods[0];
    as_budget b = m == AS_SP_INDEX ? (as_budget){1.0, 0} : cfg->budgets[0];
    size_t nl = as_trace_n_layers(tr);
    as_index_layer_data *L = calloc(nl, sizeof *L);
    int rc = 0;
    size_t used = 0;
    as_sp_sel sel;
    as_sp_sel_init(&sel);
    for (size_t li = 0; li < nl && rc == 0; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (cfg->layer >= 0 && l->index != cfg->layer) continue;
        int64_t K = as_sp_layer_width(l, m, b, &cfg->params);
        as_index_layer_data *e = &L[used++];
        e->layer = l->index;
        e->h = l->hq;
        e->t = l->t;
        e->k = K > 0 ? K : 1;
        e->d = l->d;
        int32_t *idx = malloc((size_t)(e->h * e->t * e->k) * sizeof *idx);
        double *out = with_out ? calloc((size_t)(e->h * e->t * e->d), sizeof *out) : NULL;
        e->idx = idx;
        e->out = out;
        if (!idx || (with_out && !out)) {
            rc = as_cli_fail("sparsity", AS_ERR_NOMEM, "out of memory");
            break;
        }
        for (int64_t i = 0; i < e->h * e->t * e->k; i++) idx[i] = -1;
        for (int64_t h = 0; h < l->hq && rc == 0; h++)
            for (int64_t qi = 0; qi < l->t && rc == 0; qi++) {
                as_status st = as_sp_select(l, h, qi, m, b, &cfg->params, 0, NULL, &sel, err);
                if (st == AS_OK && sel.n_det + sel.n_samp > e->k)
                    st = as_err_set(err, AS_ERR_CHECK, "selection wider than the index row");
                if (st != AS_OK) {
                    rc = as_cli_fail("sparsity", st, err);
                    break;
                }
                int64_t *all = malloc((size_t)(sel.n_det + sel.n_samp + 1) * sizeof *all);
                if (!all) {
                    rc = as_cli_fail("sparsity", AS_ERR_NOMEM, "out of memory");
                    break;
                }
                int64_t k = as_select_merge(sel.det, sel.n_det, sel.samp, sel.n_samp, all);
                int32_t *row = idx + (h * e->t + qi) * e->k;
                for (int64_t j = 0; j < k; j++) row[j] = (int32_t)all[j];
                if (with_out) {
                    as_sp_eval ev;
                    st = as_sp_check_subset(l, h, qi, all, k, NULL, 0, &ev,
                                            out + (h * e->t + qi) * e->d, err);
                    if (st != AS_OK) rc = as_cli_fail("sparsity", st, err);
                }
                free(all);
            }
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
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {0, 0, 0, 0}};
    const char *cmd = "sparsity";
    as_cli_common c;
    as_cli_common_init(&c);
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    cfg.eps_rel = 0.05;
    as_sp_method methods[AS_SP_N_METHODS];
    size_t n_methods = 0;
    static as_budget budgets[MAX_BUDGETS];
    size_t n_budgets = 0;
    const char *index_path = NULL, *export_path = NULL;
    int threads = 0; /* 0: every online core */
    int export_out = 0, method_all = 1, have_budget = 0, summary_only = 0, all_given = 0;
    char err[AS_ERR_LEN];
    int opt, r;
    long v;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(&c, cmd, opt, optarg)) == 1) continue;
        if (r == 2) return 0;
        if (r < 0) return 2;
        switch (opt) {
        case OPT_METHOD:
            method_all = all_given = strcmp(optarg, "all") == 0;
            n_methods = 0;
            if (!method_all) {
                char buf[256];
                snprintf(buf, sizeof buf, "%s", optarg);
                for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                    as_sp_method m;
                    if (as_sp_method_parse(tok, &m) != 0)
                        return as_cli_usage(cmd, "unknown method '%s' (topk, sink-window, page, "
                                                 "uniform, topk-sample, page-sample, index, all)",
                                            tok);
                    int dup = 0;
                    for (size_t i = 0; i < n_methods; i++) dup |= methods[i] == m;
                    if (!dup) methods[n_methods++] = m;
                }
                if (n_methods == 0) return as_cli_usage(cmd, "empty --method");
            }
            break;
        case OPT_BUDGET:
        case OPT_SPARSITY:
            if (have_budget) return as_cli_usage(cmd, "give one --budget or --sparsity list");
            if (as_budget_parse_list(optarg, opt == OPT_SPARSITY, budgets, MAX_BUDGETS, &n_budgets,
                                     err) != AS_OK)
                return as_cli_usage(cmd, "%s", err);
            have_budget = 1;
            break;
        case OPT_INDEX: index_path = optarg; break;
        case OPT_QUERY:
            if (as_cli_parse_int(cmd, "query", optarg, 0, 1L << 40, &v)) return 2;
            cfg.query = v;
            break;
        case OPT_SINKS:
            if (as_cli_parse_int(cmd, "sinks", optarg, 0, 1L << 30, &v)) return 2;
            cfg.params.sinks = (int)v;
            break;
        case OPT_PAGE:
            if (as_cli_parse_int(cmd, "page-size", optarg, 1, 1L << 20, &v)) return 2;
            cfg.params.page_size = (int)v;
            break;
        case OPT_TRIALS:
            if (as_cli_parse_int(cmd, "trials", optarg, 1, 1000000, &v)) return 2;
            cfg.trials = (int)v;
            break;
        case OPT_MEM:
            if (as_cli_parse_int(cmd, "mem", optarg, 1, 1L << 24, &v)) return 2;
            cfg.mem_limit = (size_t)v << 20;
            break;
        case OPT_SEED: {
            uint64_t sv;
            if (as_cli_parse_u64(cmd, "seed", optarg, &sv)) return 2;
            cfg.params.seed = sv;
            break;
        }
        case OPT_HEAVY:
            if (as_cli_parse_real(cmd, "heavy-frac", optarg, 0, 1, 0, &cfg.params.heavy_frac))
                return 2;
            break;
        case OPT_DELTA:
            if (as_cli_parse_real(cmd, "delta", optarg, 0, 1, AS_OPEN_LO | AS_OPEN_HI,
                                  &cfg.params.delta))
                return 2;
            break;
        case OPT_EPS: /* samples_needed is the sample size for a relative error eps > 0 */
            if (as_cli_parse_real(cmd, "eps", optarg, 0, INFINITY, AS_OPEN_LO, &cfg.eps_rel))
                return 2;
            break;
        case OPT_OUTTOL:
            if (as_cli_parse_real(cmd, "out-tol", optarg, 0, INFINITY, 0, &cfg.out_tol)) return 2;
            break;
        case OPT_EXPORT: export_path = optarg; break;
        case OPT_EXPORT_OUT: export_out = 1; break;
        case OPT_SUMMARY_ONLY: summary_only = 1; break;
        case OPT_THREADS:
            if (as_cli_parse_int(cmd, "threads", optarg, 1, 1024, &v)) return 2;
            threads = (int)v;
            break;
        default:
            return as_cli_bad_option(cmd, opt, argv);
        }
    }
    if (optind != argc - 1) return as_cli_usage(cmd, "expects exactly one TRACE");
    c.trace = argv[optind];
    if (method_all) {
        for (int m = 0; m < AS_SP_N_METHODS; m++) /* page-sample only with --method all */
            if ((m != AS_SP_INDEX || index_path) && (m != AS_SP_PAGE_SAMPLE || all_given))
                methods[n_methods++] = (as_sp_method)m;
    }
    int uses_index = 0;
    for (size_t i = 0; i < n_methods; i++) uses_index |= methods[i] == AS_SP_INDEX;
    if (uses_index && !index_path) return as_cli_usage(cmd, "method 'index' needs --index FILE");
    if (!have_budget) n_budgets = as_budget_default_sweep(budgets, MAX_BUDGETS);
    if (export_path) {
        if (n_methods != 1 || (methods[0] != AS_SP_INDEX && n_budgets != 1))
            return as_cli_usage(cmd, "--export-index needs exactly one --method and one budget");
    }
    cfg.methods = methods;
    cfg.n_methods = n_methods;
    cfg.budgets = budgets;
    cfg.n_budgets = n_budgets;
    cfg.layer = c.layer;
    cfg.head = c.head;

    int code;
    as_trace *tr = as_cli_open_trace(cmd, c.trace, 1, &code);
    if (!tr) return code;
    as_index *ix = NULL;
    if (index_path) {
        as_status st;
        ix = as_index_open(index_path, &st, err);
        if (!ix) {
            as_trace_free(tr);
            fprintf(stderr, "attnscope sparsity: %s\n", err);
            return as_status_exit_code(st);
        }
        cfg.params.index = ix;
    }
    if (c.layer >= 0 && !as_trace_find_layer(tr, c.layer)) {
        as_index_free(ix);
        as_trace_free(tr);
        return as_cli_usage(cmd, "%s has no layer %d", c.trace, c.layer);
    }
    /* an export that cannot be written is refused now, not after the analysis */
    if (export_path && (code = as_cli_check_output(cmd, export_path)) != 0) {
        as_index_free(ix);
        as_trace_free(tr);
        return code;
    }

    run_ctx rc_ctx;
    rc_ctx.out = as_out_new(c.fmt, cmd, c.trace);
    rc_ctx.agg = as_sp_agg_new(&cfg);
    rc_ctx.per_query = c.fmt != AS_FMT_TABLE && !summary_only;
    uint64_t total = 0;
    size_t combos = 0;
    for (size_t i = 0; i < n_methods; i++) combos += methods[i] == AS_SP_INDEX ? 1 : n_budgets;
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (c.layer >= 0 && l->index != c.layer) continue;
        total += (uint64_t)((c.head >= 0 ? 1 : l->hq) * (cfg.query >= 0 ? 1 : l->t)) * combos;
    }
    rc_ctx.prog = as_progress_new("sparsity", total, c.quiet);
    cfg.progress = on_progress;
    cfg.progress_ctx = rc_ctx.prog;
    as_status st = as_sweep_supports(&cfg) ? as_sweep_run(tr, &cfg, threads, on_record, &rc_ctx, err)
                                           : as_sp_run(tr, &cfg, on_record, &rc_ctx, err);
    as_progress_free(rc_ctx.prog);
    if (st == AS_OK) st = as_sp_agg_finish(rc_ctx.agg, err);
    if (st != AS_OK) {
        as_out_free(rc_ctx.out);
        as_sp_agg_free(rc_ctx.agg);
        as_index_free(ix);
        as_trace_free(tr);
        fprintf(stderr, "attnscope sparsity: %s: %s\n", c.trace, err);
        return as_status_exit_code(st);
    }
    as_out *o = rc_ctx.out;

    /* aggregates */
    const as_sp_head_budget *hb;
    size_t nhb = as_sp_agg_head_budgets(rc_ctx.agg, &hb);
    for (size_t i = 0; i < nhb; i++) {
        cJSON *j = as_rec_new("head_budget", hb[i].layer, hb[i].head);
        cJSON_AddStringToObject(j, "method", as_sp_method_name(hb[i].method));
        cJSON_AddNumberToObject(j, "budget", hb[i].budget);
        cJSON_AddNumberToObject(j, "sparsity", nominal_sparsity(hb[i].budget));
        cJSON_AddNumberToObject(j, "queries", (double)hb[i].n_queries);
        cJSON_AddNumberToObject(j, "mean_kept", hb[i].mean_kept);
        num_or_null(j, "mean_rel_error", hb[i].mean_rel_error);
        num_or_null(j, "median_rel_error", hb[i].median_rel_error);
        num_or_null(j, "max_rel_error", hb[i].max_rel_error);
        cJSON_AddNumberToObject(j, "mean_captured_mass", hb[i].mean_captured_mass);
        num_or_null(j, "mean_rel_bound", hb[i].mean_rel_bound);
        num_or_null(j, "median_slack", hb[i].median_slack);
        cJSON_AddNumberToObject(j, "violations", (double)hb[i].violations);
        if (as_sp_method_is_sampling(hb[i].method)) {
            cJSON_AddNumberToObject(j, "draws", (double)hb[i].draws);
            cJSON_AddNumberToObject(j, "exceed", (double)hb[i].exceed);
        }
        as_out_add(o, j);
    }
    const as_sp_head_sweep *hs;
    size_t nhs = as_sp_agg_head_sweeps(rc_ctx.agg, &hs);
    for (size_t i = 0; i < nhs; i++) {
        cJSON *j = as_rec_new("head_sweep", hs[i].layer, hs[i].head);
        cJSON_AddStringToObject(j, "method", as_sp_method_name(hs[i].method));
        for (int t = 0; t < AS_SP_N_THRESH; t++) {
            char k1[32], k2[32], k3[32];
            snprintf(k1, sizeof k1, "budget_%s", tnames[t]);
            snprintf(k2, sizeof k2, "sparsity_%s", tnames[t]);
            snprintf(k3, sizeof k3, "censored_%s", tnames[t]);
            num_or_null(j, k1, hs[i].budget_at[t]);
            cJSON_AddNumberToObject(j, k2, hs[i].sparsity_at[t]);
            cJSON_AddBoolToObject(j, k3, hs[i].censored[t]);
        }
        as_out_add(o, j);
    }
    const as_sp_summary *sm;
    size_t nsm = as_sp_agg_summaries(rc_ctx.agg, &sm);
    int64_t viol = 0, idf = 0, covfail = 0;
    for (size_t i = 0; i < nsm; i++) {
        int model = sm[i].layer < 0;
        cJSON *j = model ? cJSON_CreateObject() : as_rec_new("layer_summary", sm[i].layer, -1);
        if (model) cJSON_AddStringToObject(j, "record", "model_summary");
        cJSON_AddStringToObject(j, "method", as_sp_method_name(sm[i].method));
        cJSON_AddNumberToObject(j, "heads", (double)sm[i].n_heads);
        for (int t = 0; t < AS_SP_N_THRESH; t++) {
            char k[48];
            snprintf(k, sizeof k, "median_sparsity_%s", tnames[t]);
            num_or_null(j, k, sm[i].median_sparsity[t]);
            snprintf(k, sizeof k, "min_sparsity_%s", tnames[t]);
            num_or_null(j, k, sm[i].min_sparsity[t]);
            snprintf(k, sizeof k, "dense_heads_%s", tnames[t]);
            cJSON_AddNumberToObject(j, k, (double)sm[i].dense_heads[t]);
        }
        num_or_null(j, "median_rel_error", sm[i].median_rel_error);
        num_or_null(j, "median_slack", sm[i].median_slack);
        cJSON_AddNumberToObject(j, "records", (double)sm[i].records);
        cJSON_AddNumberToObject(j, "violations", (double)sm[i].violations);
        cJSON_AddNumberToObject(j, "identity_failures", (double)sm[i].identity_failures);
        as_out_add(o, j);
        if (model) {
            viol += sm[i].violations;
            idf += sm[i].identity_failures;
            if (as_sp_method_is_sampling(sm[i].method)) {
                cJSON *cv = cJSON_CreateObject();
                cJSON_AddStringToObject(cv, "record", "coverage");
                cJSON_AddStringToObject(cv, "method", as_sp_method_name(sm[i].method));
                cJSON_AddNumberToObject(cv, "delta", cfg.params.delta);
                cJSON_AddNumberToObject(cv, "draws", (double)sm[i].draws);
                cJSON_AddNumberToObject(cv, "exceed", (double)sm[i].exceed);
                cJSON_AddNumberToObject(cv, "exceed_frac",
                                        sm[i].draws ? (double)sm[i].exceed / (double)sm[i].draws : 0);
                cJSON_AddNumberToObject(cv, "expected", cfg.params.delta * (double)sm[i].draws);
                cJSON_AddNumberToObject(cv, "p_value", sm[i].coverage_p);
                int pass = !(sm[i].coverage_p < 1e-6);
                cJSON_AddBoolToObject(cv, "pass", pass);
                covfail += !pass;
                as_out_add(o, cv);
            }
        }
    }
    cJSON *chk = cJSON_CreateObject();
    cJSON_AddStringToObject(chk, "record", "check");
    cJSON_AddNumberToObject(chk, "violations", (double)viol);
    cJSON_AddNumberToObject(chk, "identity_failures", (double)idf);
    cJSON_AddNumberToObject(chk, "coverage_failures", (double)covfail);
    int pass = viol == 0 && idf == 0 && covfail == 0;
    cJSON_AddBoolToObject(chk, "pass", pass);
    as_out_add(o, chk);

    {
        static const char *const c1[] = {"layer", "head", "method", "budget", "sparsity",
                                         "queries", "mean_rel_error", "max_rel_error",
                                         "mean_captured_mass", "mean_rel_bound", "median_slack",
                                         "violations", NULL};
        static const char *const h1[] = {"layer", "head", "method", "budget", "sparsity",
                                         "queries", "rel err", "max rel err", "mass",
                                         "rel bound", "slack", "viol", NULL};
        static const char *const f1[] = {"%d", "%d", "%s", "%.4f", "%.1fx", "%d", "%.4f",
                                         "%.4f", "%.4f", "%.4f", "%.2f", "%d", NULL};
        as_out_table(o, "head_budget", "Error and bound per head and budget (means over queries)",
                     c1, h1, f1);
        static const char *const c2[] = {"layer", "head", "method", "sparsity_1pct",
                                         "sparsity_5pct", "sparsity_10pct", NULL};
        static const char *const h2[] = {"layer", "head", "method", "sparsity@1%",
                                         "sparsity@5%", "sparsity@10%", NULL};
        static const char *const f2[] = {"%d", "%d", "%s", "%.1fx", "%.1fx", "%.1fx", NULL};
        as_out_table(o, "head_sweep",
                     "Sparsity each head tolerates (mean relative error at or below 1/5/10%; "
                     "1.0x = needs dense)",
                     c2, h2, f2);
        static const char *const c3[] = {"layer", "method", "heads", "median_sparsity_1pct",
                                         "median_sparsity_5pct", "median_sparsity_10pct",
                                         "min_sparsity_5pct", "dense_heads_5pct",
                                         "median_slack", "violations", NULL};
        static const char *const h3[] = {"layer", "method", "heads", "med@1%", "med@5%",
                                         "med@10%", "min@5%", "dense@5%", "slack", "viol", NULL};
        static const char *const f3[] = {"%d", "%s", "%d", "%.1fx", "%.1fx", "%.1fx", "%.1fx",
                                         "%d", "%.2f", "%d", NULL};
        as_out_table(o, "layer_summary", "Sparsity each layer tolerates (median over heads)", c3,
                     h3, f3);
        static const char *const c4[] = {"method", "heads", "median_sparsity_1pct",
                                         "median_sparsity_5pct", "median_sparsity_10pct",
                                         "dense_heads_5pct", "median_rel_error", "median_slack",
                                         "records", "violations", "identity_failures", NULL};
        static const char *const h4[] = {"method", "heads", "med@1%", "med@5%", "med@10%",
                                         "dense@5%", "med rel err", "med slack", "records",
                                         "viol", "id fail", NULL};
        static const char *const f4[] = {"%s", "%d", "%.1fx", "%.1fx", "%.1fx", "%d", "%.4f",
                                         "%.2f", "%d", "%d", "%d", NULL};
        as_out_table(o, "model_summary", "Model summary (median over all heads)", c4, h4, f4);
        static const char *const c5[] = {"method", "delta", "draws", "exceed", "exceed_frac",
                                         "p_value", "pass", NULL};
        static const char *const f5[] = {"%s", "%.3f", "%d", "%d", "%.5f", "%.3g", "%s", NULL};
        as_out_table(o, "coverage", "Sampling guarantee: draws whose error exceeded epsilon",
                     c5, NULL, f5);
        static const char *const c6[] = {"violations", "identity_failures", "coverage_failures",
                                         "pass", NULL};
        static const char *const f6[] = {"%d", "%d", "%d", "%s", NULL};
        as_out_table(o, "check", "Checks", c6, NULL, f6);
    }
    /* the export first: a run that fails prints nothing */
    int rc = export_path ? export_index(tr, &cfg, export_path, export_out, c.trace) : 0;
    if (rc == 0) {
        rc = as_out_finish(o, stdout);
    } else {
        FILE *devnull = fopen("/dev/null", "w");
        as_out_finish(o, devnull ? devnull : stderr);
        if (devnull) fclose(devnull);
    }
    as_sp_agg_free(rc_ctx.agg);
    as_index_free(ix);
    as_trace_free(tr);
    if (rc != 0) return rc;
    if (!pass) {
        fprintf(stderr,
                "attnscope sparsity: %s: check failed: %lld bound violations, %lld identity "
                "failures, %lld coverage failures\n",
                c.trace, (long long)viol, (long long)idf, (long long)covfail);
        return 1;
    }
    return 0;
}
