/* attnscope compare: two traces (two models, or two prompts) side by side, layer by layer,
 * from the same per-layer summary the report shows (report/as_summary.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_summary.h"
#include "cli_help.h"
#include "cli_util.h"

const char as_help_compare[] =
    "usage: attnscope compare A B [--layer L] [--json|--csv] [--quiet]\n\n"
    "Summarise two traces (two models, or two prompts to one model) with the numbers of\n"
    "'attnscope report' and put them side by side. Layers are matched by index.\n"
    "Records (docs/cli.md):\n"
    "  'trace'         per input: trace (a|b), path, model, n_layers\n"
    "  'layer_summary' per input and layer: trace, layer, hq, hkv, t, n, d and the\n"
    "                  per-layer aggregates (see 'compare' quantities)\n"
    "  'compare'       per layer present in both and quantity: layer, quantity, a, b,\n"
    "                  delta (b - a), ratio (b / a)\n"
    "Quantities: sink_mass (mean weight on position 0), entropy_norm (mean H / ln n),\n"
    "k90_frac and k99_frac (median k / n), erank_k (mean effective rank of keys),\n"
    "collision_frac (mean collision-space dimension / n), tv_witness (mean), tol_1 and\n"
    "tol_5 (median over heads of the largest sparsity N / k with relative output error\n"
    "under 1% / 5% for oracle top-k; 1 = dense attention needed), max_periodicity.\n"
    "A quantity whose analysis module is not in this build is null.\n";

/* The per-layer aggregates: one definition shared by both record kinds. */
enum { NQ = 10 };
static const char *const qnames[NQ] = {"sink_mass",  "entropy_norm",   "k90_frac", "k99_frac",
                                       "erank_k",    "collision_frac", "tv_witness", "tol_1",
                                       "tol_5",      "max_periodicity"};

static double median_tol(const as_sum_layer *L, const double *tol)
{
    if (!tol) return NAN;
    double *v = malloc(sizeof(double) * (size_t)(L->hq ? L->hq : 1));
    if (!v) return NAN;
    for (int64_t h = 0; h < L->hq; h++)
        v[h] = isnan(tol[h]) ? 1 : tol[h]; /* method 0; no sparsity of the sweep: 1 (dense) */
    double m = L->hq > 0 ? as_sum_quantile(v, L->hq, 0.5) : NAN;
    free(v);
    return m;
}

static void layer_quantities(const as_summary *s, const as_sum_layer *L, double q[NQ])
{
    int64_t hqt = L->hq * L->t;
    q[0] = as_sum_mean(L->sink_mass, L->hq);
    q[1] = s->have_entropy ? as_sum_mean(L->entropy_norm, hqt) : NAN;
    q[2] = s->have_entropy ? as_sum_quantile(L->k90_frac, hqt, 0.5) : NAN;
    q[3] = s->have_entropy ? as_sum_quantile(L->k99_frac, hqt, 0.5) : NAN;
    q[4] = s->have_rank ? as_sum_mean(L->erank_k, L->hkv) : NAN;
    q[5] = s->have_bottleneck && L->n > 0 ? as_sum_mean(L->collision_dim, L->hq) / (double)L->n
                                          : NAN;
    q[6] = s->have_bottleneck ? as_sum_mean(L->tv_witness, L->hq) : NAN;
    q[7] = s->have_sparsity ? median_tol(L, L->tol_1) : NAN;
    q[8] = s->have_sparsity ? median_tol(L, L->tol_5) : NAN;
    q[9] = NAN;
    if (s->have_spectrum && L->periodicity)
        for (int64_t h = 0; h < L->hq; h++)
            if (isfinite(L->periodicity[h]) && !(L->periodicity[h] <= q[9]))
                q[9] = L->periodicity[h];
}

static void add_num(cJSON *r, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(r, k, v);
    else
        cJSON_AddNullToObject(r, k);
}

static struct {
    as_progress *bar;
    uint64_t base;
} prog;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    as_progress_update(prog.bar, prog.base + 500 * done / (total ? total : 1));
}

int as_cmd_compare(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS, {0, 0, 0, 0}};
    as_cli_common c;
    as_cli_common_init(&c);
    int opt, r;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(&c, "compare", opt, optarg)) == 1) continue;
        if (r == 2) return 0;
        if (r < 0) return 2;
        return as_cli_usage("compare", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind != argc - 2) return as_cli_usage("compare", "expects two traces A and B");
    if (c.head >= 0) return as_cli_usage("compare", "--head is not supported (use --layer)");
    const char *path[2] = {argv[optind], argv[optind + 1]};
    as_trace *tr[2] = {NULL, NULL};
    as_summary *s[2] = {NULL, NULL};
    int code = 0;
    char err[AS_ERR_LEN];
    prog.bar = as_progress_new("compare", 1000, c.quiet);
    for (int i = 0; i < 2 && code == 0; i++) {
        tr[i] = as_cli_open_trace("compare", path[i], 1, &code);
        if (!tr[i]) break;
        if (c.layer >= 0 && !as_trace_find_layer(tr[i], c.layer)) {
            code = as_cli_usage("compare", "%s has no layer %d", path[i], c.layer);
            break;
        }
        as_summary_opts so;
        as_summary_opts_init(&so);
        so.layer = c.layer;
        so.progress = on_progress;
        prog.base = 500 * (uint64_t)i;
        s[i] = as_summary_compute(tr[i], &so, err);
        if (!s[i]) {
            char msg[AS_ERR_LEN + 4200];
            snprintf(msg, sizeof msg, "%s: %s", path[i], err);
            code = as_cli_fail("compare", AS_ERR_NUMERIC, msg);
        }
    }
    as_progress_free(prog.bar);
    if (code != 0) {
        for (int i = 0; i < 2; i++) {
            as_summary_free(s[i]);
            as_trace_free(tr[i]);
        }
        return code;
    }

    char both[8200];
    snprintf(both, sizeof both, "%s | %s", path[0], path[1]);
    as_out *o = as_out_new(c.fmt, "compare", both);
    static const char *const tag[2] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "record", "trace");
        cJSON_AddStringToObject(rec, "trace", tag[i]);
        cJSON_AddStringToObject(rec, "path", path[i]);
        cJSON_AddStringToObject(rec, "model", as_trace_model(tr[i]));
        const char *pn = as_trace_meta(tr[i], "prompt_name");
        if (pn)
            cJSON_AddStringToObject(rec, "prompt", pn);
        else
            cJSON_AddNullToObject(rec, "prompt");
        cJSON_AddNumberToObject(rec, "n_layers", (double)s[i]->n_layers);
        as_out_add(o, rec);
    }
    for (int i = 0; i < 2; i++)
        for (size_t li = 0; li < s[i]->n_layers; li++) {
            const as_sum_layer *L = &s[i]->layers[li];
            cJSON *rec = as_rec_new("layer_summary", L->layer, -1);
            cJSON_AddStringToObject(rec, "trace", tag[i]);
            cJSON_AddNumberToObject(rec, "hq", (double)L->hq);
            cJSON_AddNumberToObject(rec, "hkv", (double)L->hkv);
            cJSON_AddNumberToObject(rec, "t", (double)L->t);
            cJSON_AddNumberToObject(rec, "n", (double)L->n);
            cJSON_AddNumberToObject(rec, "d", (double)L->d);
            double q[NQ];
            layer_quantities(s[i], L, q);
            for (int k = 0; k < NQ; k++) add_num(rec, qnames[k], q[k]);
            as_out_add(o, rec);
        }
    int matched = 0;
    for (size_t la = 0; la < s[0]->n_layers; la++) {
        const as_sum_layer *A = &s[0]->layers[la], *B = NULL;
        for (size_t lb = 0; lb < s[1]->n_layers; lb++)
            if (s[1]->layers[lb].layer == A->layer) B = &s[1]->layers[lb];
        if (!B) continue;
        matched++;
        double qa[NQ], qb[NQ];
        layer_quantities(s[0], A, qa);
        layer_quantities(s[1], B, qb);
        for (int k = 0; k < NQ; k++) {
            cJSON *rec = as_rec_new("compare", A->layer, -1);
            cJSON_AddStringToObject(rec, "quantity", qnames[k]);
            add_num(rec, "a", qa[k]);
            add_num(rec, "b", qb[k]);
            add_num(rec, "delta", qb[k] - qa[k]);
            add_num(rec, "ratio", qa[k] != 0 ? qb[k] / qa[k] : NAN);
            as_out_add(o, rec);
        }
    }
    static const char *const tcols[] = {"trace", "path", "model", "prompt", "n_layers", NULL};
    static const char *const tfmts[] = {"%s", "%s", "%s", "%s", "%d", NULL};
    as_out_table(o, "trace", "Traces", tcols, NULL, tfmts);
    static const char *const ccols[] = {"layer", "quantity", "a", "b", "delta", "ratio", NULL};
    static const char *const cfmts[] = {"%d", "%s", "%.4g", "%.4g", "%+.3g", "%.3g", NULL};
    as_out_table(o, "compare", "Side by side (a = first trace, b = second; layers matched by index)",
                 ccols, NULL, cfmts);
    if (matched == 0 && c.fmt == AS_FMT_TABLE)
        fprintf(stderr, "attnscope compare: the traces share no layer index\n");
    for (int i = 0; i < 2; i++) {
        as_summary_free(s[i]);
        as_trace_free(tr[i]);
    }
    return as_out_finish(o, stdout);
}
