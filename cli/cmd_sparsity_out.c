/* attnscope sparsity: the records and tables of a run (cmd_sparsity.h). */
#include <math.h>
#include <stdio.h>

#include "cmd_sparsity.h"

/* 1 / budget, printed as the sweep's nominal value (1 / (1/3) is 3.0000000000000009 in
 * binary floating point; readers compare sparsities by value). */
static double nominal_sparsity(double budget)
{
    if (!(budget > 0)) return NAN;
    const double v = 1.0 / budget, r = round(v * 1e6) / 1e6;
    return fabs(v - r) <= 1e-12 * v ? r : v;
}

static void num_or_null(cJSON *j, const char *k, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(j, k);
    else
        cJSON_AddNumberToObject(j, k, v);
}

static const char *const tnames[AS_SP_N_THRESH] = {"1pct", "5pct", "10pct"};

/* A record {"record": kind, ["trace": tag,] "layer": L, "head": H}: layer < -1 and head < 0
 * are left out (tag: the trace's path when a run has several). */
static cJSON *rec_new(const char *kind, const char *tag, int layer, int64_t head)
{
    if (!tag && layer >= -1) return as_rec_new(kind, layer, head);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "record", kind);
    if (tag) cJSON_AddStringToObject(r, "trace", tag);
    if (layer >= -1) cJSON_AddNumberToObject(r, "layer", layer);
    if (head >= 0) cJSON_AddNumberToObject(r, "head", (double)head);
    return r;
}

cJSON *as_cli_sp_query_record(const as_sp_record *r, const char *tag)
{
    const as_sp_eval *ev = &r->ev;
    int sampling = as_sp_method_is_sampling(r->method);
    cJSON *j = rec_new("sparsity", tag, r->layer, r->head);
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
    return j;
}

static void head_budget_records(as_out *o, const as_sp_agg *agg, const char *tag)
{
    const as_sp_head_budget *hb;
    size_t nhb = as_sp_agg_head_budgets(agg, &hb);
    for (size_t i = 0; i < nhb; i++) {
        cJSON *j = rec_new("head_budget", tag, hb[i].layer, hb[i].head);
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
}

static void head_sweep_records(as_out *o, const as_sp_agg *agg, const char *tag)
{
    const as_sp_head_sweep *hs;
    size_t nhs = as_sp_agg_head_sweeps(agg, &hs);
    for (size_t i = 0; i < nhs; i++) {
        cJSON *j = rec_new("head_sweep", tag, hs[i].layer, hs[i].head);
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
}

/* The 'coverage' record of a sampling method's model summary; returns 1 if it passes. */
static int coverage_record(as_out *o, const as_sp_summary *sm, double delta, const char *tag)
{
    cJSON *cv = rec_new("coverage", tag, -2, -1);
    cJSON_AddStringToObject(cv, "method", as_sp_method_name(sm->method));
    cJSON_AddNumberToObject(cv, "delta", delta);
    cJSON_AddNumberToObject(cv, "draws", (double)sm->draws);
    cJSON_AddNumberToObject(cv, "exceed", (double)sm->exceed);
    cJSON_AddNumberToObject(cv, "exceed_frac",
                            sm->draws ? (double)sm->exceed / (double)sm->draws : 0);
    cJSON_AddNumberToObject(cv, "expected", delta * (double)sm->draws);
    cJSON_AddNumberToObject(cv, "p_value", sm->coverage_p);
    int pass = !(sm->coverage_p < 1e-6);
    cJSON_AddBoolToObject(cv, "pass", pass);
    as_out_add(o, cv);
    return pass;
}

/* 'layer_summary' and 'model_summary' records (a model summary's sampling method: then its
 * 'coverage'); the model summaries' counts go into *chk. */
static void summary_records(as_out *o, const as_sp_agg *agg, double delta, const char *tag,
                            as_cli_sp_check *chk)
{
    const as_sp_summary *sm;
    size_t nsm = as_sp_agg_summaries(agg, &sm);
    for (size_t i = 0; i < nsm; i++) {
        int model = sm[i].layer < 0;
        cJSON *j = model ? rec_new("model_summary", tag, -2, -1)
                         : rec_new("layer_summary", tag, sm[i].layer, -1);
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
        if (!model) continue;
        chk->violations += sm[i].violations;
        chk->identity_failures += sm[i].identity_failures;
        if (as_sp_method_is_sampling(sm[i].method) && !coverage_record(o, &sm[i], delta, tag))
            chk->coverage_failures++;
    }
}

/* as_out_table, with a first column 'trace' when a run has several traces */
static void table(as_out *o, int multi, const char *kind, const char *title,
                  const char *const *cols, const char *const *heads, const char *const *fmts)
{
    if (!multi) {
        as_out_table(o, kind, title, cols, heads, fmts);
        return;
    }
    const char *c[24], *h[24], *f[24];
    int n = 0;
    c[0] = h[0] = "trace";
    f[0] = "%s";
    for (; cols[n] && n < 22; n++) {
        c[n + 1] = cols[n];
        h[n + 1] = heads ? heads[n] : cols[n];
        f[n + 1] = fmts ? fmts[n] : "%g";
    }
    c[n + 1] = h[n + 1] = f[n + 1] = NULL;
    as_out_table(o, kind, title, c, h, f);
}

void as_cli_sp_tables(as_out *o, int multi)
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
    table(o, multi, "head_budget", "Error and bound per head and budget (means over queries)",
                 c1, h1, f1);
    static const char *const c2[] = {"layer", "head", "method", "sparsity_1pct",
                                     "sparsity_5pct", "sparsity_10pct", NULL};
    static const char *const h2[] = {"layer", "head", "method", "sparsity@1%",
                                     "sparsity@5%", "sparsity@10%", NULL};
    static const char *const f2[] = {"%d", "%d", "%s", "%.1fx", "%.1fx", "%.1fx", NULL};
    table(o, multi, "head_sweep",
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
    table(o, multi, "layer_summary", "Sparsity each layer tolerates (median over heads)", c3,
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
    table(o, multi, "model_summary", "Model summary (median over all heads)", c4, h4, f4);
    static const char *const c5[] = {"method", "delta", "draws", "exceed", "exceed_frac",
                                     "p_value", "pass", NULL};
    static const char *const f5[] = {"%s", "%.3f", "%d", "%d", "%.5f", "%.3g", "%s", NULL};
    table(o, multi, "coverage", "Sampling guarantee: draws whose error exceeded epsilon",
                 c5, NULL, f5);
    static const char *const c6[] = {"violations", "identity_failures", "coverage_failures",
                                     "pass", NULL};
    static const char *const f6[] = {"%d", "%d", "%d", "%s", NULL};
    table(o, multi, "check", "Checks", c6, NULL, f6);
}

void as_cli_sp_aggregates(as_out *o, const as_sp_agg *agg, double delta, const char *tag,
                          as_cli_sp_check *chk)
{
    *chk = (as_cli_sp_check){0, 0, 0};
    head_budget_records(o, agg, tag);
    head_sweep_records(o, agg, tag);
    summary_records(o, agg, delta, tag, chk);
    cJSON *j = rec_new("check", tag, -2, -1);
    cJSON_AddNumberToObject(j, "violations", (double)chk->violations);
    cJSON_AddNumberToObject(j, "identity_failures", (double)chk->identity_failures);
    cJSON_AddNumberToObject(j, "coverage_failures", (double)chk->coverage_failures);
    cJSON_AddBoolToObject(j, "pass", chk->violations == 0 && chk->identity_failures == 0 &&
                                         chk->coverage_failures == 0);
    as_out_add(o, j);
}

void as_cli_sp_across(as_out *o, as_trace *const *tr, const char *const *tpath,
                      const as_sp_agg *const *agg, size_t ntr, int layer)
{
    for (size_t t = 0; t < ntr; t++) {
        const as_sp_summary *sm;
        size_t nsm = as_sp_agg_summaries(agg[t], &sm);
        int64_t layers = 0, n = 0;
        for (size_t li = 0; li < as_trace_n_layers(tr[t]); li++) {
            const as_layer *l = as_trace_layer(tr[t], li);
            if (layer >= 0 && l->index != layer) continue;
            layers++;
            if (l->n > n) n = l->n;
        }
        const char *prompt = as_trace_meta(tr[t], "prompt_name");
        for (size_t i = 0; i < nsm; i++) {
            if (sm[i].layer >= 0) continue;
            cJSON *j = rec_new("trace_summary", tpath[t], -2, -1);
            cJSON_AddStringToObject(j, "model", as_trace_model(tr[t]));
            if (prompt)
                cJSON_AddStringToObject(j, "prompt", prompt);
            else
                cJSON_AddNullToObject(j, "prompt");
            cJSON_AddNumberToObject(j, "layers", (double)layers);
            cJSON_AddNumberToObject(j, "n", (double)n);
            cJSON_AddStringToObject(j, "method", as_sp_method_name(sm[i].method));
            cJSON_AddNumberToObject(j, "heads", (double)sm[i].n_heads);
            for (int k = 0; k < AS_SP_N_THRESH; k++) {
                char key[48];
                snprintf(key, sizeof key, "median_sparsity_%s", tnames[k]);
                num_or_null(j, key, sm[i].median_sparsity[k]);
            }
            cJSON_AddNumberToObject(j, "dense_heads_5pct", (double)sm[i].dense_heads[1]);
            num_or_null(j, "median_rel_error", sm[i].median_rel_error);
            cJSON_AddNumberToObject(j, "records", (double)sm[i].records);
            cJSON_AddNumberToObject(j, "violations",
                                    (double)(sm[i].violations + sm[i].identity_failures));
            as_out_add(o, j);
        }
    }
    static const char *const c7[] = {"trace", "model", "prompt", "n", "method", "heads",
                                     "median_sparsity_1pct", "median_sparsity_5pct",
                                     "median_sparsity_10pct", "dense_heads_5pct",
                                     "median_rel_error", "violations", NULL};
    static const char *const h7[] = {"trace", "model", "prompt", "n", "method", "heads",
                                     "med@1%", "med@5%", "med@10%", "dense@5%", "med rel err",
                                     "viol", NULL};
    static const char *const f7[] = {"%s", "%s", "%s", "%d", "%s", "%d", "%.1fx", "%.1fx",
                                     "%.1fx", "%d", "%.4f", "%d", NULL};
    as_out_table(o, "trace_summary", "Across traces (model summary of each trace)", c7, h7, f7);
}
