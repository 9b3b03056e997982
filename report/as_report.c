/* as_report: assemble the HTML report from a trace's summary. */
#include "as_report.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_digest.h"
#include "as_html.h"
#include "as_plot.h"

/* Figures are drawn into the page as they are made; a failed figure becomes a note (the
 * report still renders), counted so the caller can tell. Ids carry the page's prefix (idp:
 * a trace's part of the page of several traces). */
typedef as_report_page ctx;

/* id with the page's prefix, into buf */
static const char *pid(const ctx *c, const char *id, char *buf, size_t n)
{
    if (!c->idp) return id;
    snprintf(buf, n, "%s%s", c->idp, id);
    return buf;
}

static void put_figure(ctx *c, const char *id, char *svg, const char *caption, const char *err)
{
    if (svg) {
        char idb[96];
        as_html_figure(c->b, pid(c, id, idb, sizeof idb), svg, caption);
        c->figures++;
        free(svg);
    } else {
        char msg[AS_ERR_LEN + 160];
        snprintf(msg, sizeof msg, "figure %s could not be drawn: %s", id, err);
        as_html_note(c->b, msg);
        c->failed++;
    }
}

static int any_finite(const double *x, int64_t n)
{
    for (int64_t i = 0; x && i < n; i++)
        if (isfinite(x[i])) return 1;
    return 0;
}

/* Layer names for axes ("0", "10", ...). */
typedef struct {
    char (*buf)[24];
    const char **names;
} names_t;

static int layer_names(const as_summary *s, names_t *nm, const char *prefix)
{
    size_t n = s->n_layers ? s->n_layers : 1;
    nm->buf = calloc(n, sizeof *nm->buf);
    nm->names = calloc(n, sizeof *nm->names);
    if (!nm->buf || !nm->names) return -1;
    for (size_t i = 0; i < s->n_layers; i++) {
        snprintf(nm->buf[i], sizeof nm->buf[i], "%s%d", prefix, s->layers[i].layer);
        nm->names[i] = nm->buf[i];
    }
    return 0;
}

static void names_free(names_t *nm)
{
    free(nm->buf);
    free(nm->names);
}

static int64_t max_hq(const as_summary *s)
{
    int64_t m = 0;
    for (size_t i = 0; i < s->n_layers; i++)
        if (s->layers[i].hq > m) m = s->layers[i].hq;
    return m;
}

static int64_t max_hkv(const as_summary *s)
{
    int64_t m = 0;
    for (size_t i = 0; i < s->n_layers; i++)
        if (s->layers[i].hkv > m) m = s->layers[i].hkv;
    return m;
}

/* Height of a layer x head heatmap: ~ 26 px per row, within bounds. */
static int heat_height(size_t rows)
{
    int h = 110 + 26 * (int)rows;
    return h < 260 ? 260 : h > 900 ? 900 : h;
}

/* layer x head matrix of a per-head (or per head x query, averaged) quantity */
static double *layer_head_matrix(const as_summary *s, int64_t ncols, int kv,
                                 double *(*get)(const as_sum_layer *), int per_query)
{
    double *z = malloc(sizeof(double) * s->n_layers * (size_t)(ncols ? ncols : 1));
    if (!z) return NULL;
    for (size_t i = 0; i < s->n_layers; i++) {
        const as_sum_layer *L = &s->layers[i];
        int64_t nh = kv ? L->hkv : L->hq;
        const double *v = get(L);
        for (int64_t h = 0; h < ncols; h++) {
            double x = NAN;
            if (v && h < nh) x = per_query ? as_sum_mean(v + h * L->t, L->t) : v[h];
            z[i * (size_t)ncols + (size_t)h] = x;
        }
    }
    return z;
}

static double *get_entropy(const as_sum_layer *L) { return L->entropy_norm; }
static double *get_erank(const as_sum_layer *L) { return L->erank_k; }
static double *get_tv(const as_sum_layer *L) { return L->tv_witness; }
static double *get_sink(const as_sum_layer *L) { return L->sink_mass; }
static double *get_collision(const as_sum_layer *L) { return L->collision_dim; }

/* Titles of the selection methods (as_sp_method_name -> what a paper calls them). */
static const char *method_title(const char *m)
{
    static const char *const map[][2] = {
        {"topk", "oracle top-k"},
        {"sink-window", "sink + window (StreamingLLM)"},
        {"page", "page top-k (Quest)"},
        {"uniform", "uniform sampling (reweighted)"},
        {"topk-sample", "top-k + sampling (vAttention)"},
        {"index", "user's index file"}};
    for (size_t i = 0; m && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], m) == 0) return map[i][1];
    return m ? m : "?";
}

/* "2.5x", "> 100x", "< 2x" for a tolerated sparsity */
static void put_tol(as_buf *b, double v, const as_summary *s)
{
    if (isnan(v)) {
        as_buf_puts(b, "&lt; ");
        as_buf_num(b, s->n_levels ? s->levels[0] : 1, 3);
        as_buf_puts(b, "x");
    } else if (s->n_levels && v >= s->levels[s->n_levels - 1]) {
        as_buf_puts(b, "&ge; ");
        as_buf_num(b, v, 3);
        as_buf_puts(b, "x");
    } else {
        as_buf_num(b, v, 3);
        as_buf_puts(b, "x");
    }
}

/* ---------------------------------------------------------------- sections */
/* Open a section; when its analysis is absent from this build or this run (have = 0), show
 * why (missing) and close it again: returns 0, and the caller has nothing to add. */
static void sec(ctx *c, const char *id, const char *title, const char *intro)
{
    char idb[96];
    as_html_section(c->b, pid(c, id, idb, sizeof idb), title, intro);
}

static int section_open(ctx *c, const char *id, const char *title, const char *intro, int have,
                        const char *missing)
{
    sec(c, id, title, intro);
    if (have) return 1;
    as_html_note(c->b, missing);
    as_html_section_end(c->b);
    return 0;
}

static void section_overview(ctx *c, const as_trace *tr, const as_summary *s)
{
    as_buf *b = c->b;
    sec(c, "trace", "The trace",
                    "Decode queries (after RoPE) and the KV cache they attend to, per captured "
                    "layer. All numbers below are computed in float64 from this file.");
    as_buf_puts(b, "<table><tr><th>layer</th><th>query heads</th><th>kv heads</th>"
                   "<th>queries T</th><th>keys N</th><th>head dim d</th><th>scale</th>"
                   "<th>causal</th></tr>\n");
    for (size_t i = 0; i < s->n_layers; i++) {
        const as_sum_layer *L = &s->layers[i];
        const as_layer *l = as_trace_find_layer(tr, L->layer);
        as_buf_printf(b,
                      "<tr><td>%d</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td>"
                      "<td>%lld</td><td>%.4g</td><td>%s</td></tr>\n",
                      L->layer, (long long)L->hq, (long long)L->hkv, (long long)L->t,
                      (long long)L->n, (long long)L->d, L->scale,
                      l && as_layer_is_causal(l) ? "yes" : "no");
    }
    as_buf_puts(b, "</table>\n");
    as_html_section_end(b);
}

/* Parse "a-b[,c-d...]" spans from metadata (e.g. prompt_fact_spans); first span only. */
static int first_span(const char *v, double *lo, double *hi)
{
    if (!v) return 0;
    char *end;
    double a = strtod(v, &end);
    if (end == v || *end != '-') return 0;
    const char *q = end + 1;
    double z = strtod(q, &end);
    if (end == q || !(z >= a)) return 0;
    *lo = a, *hi = z;
    return 1;
}

/* Mean attention weight by key position, one line per layer (up to 7, spread over depth). */
static void profile_figure(ctx *c, const as_trace *tr, const as_summary *s, const char *id,
                           const char *title)
{
    char err[AS_ERR_LEN];
    /* up to 7 layers as lines, spread over the trace's layers */
    int nsel = s->n_layers < AS_PLOT_NCOLORS ? (int)s->n_layers : AS_PLOT_NCOLORS;
    as_series ser[AS_PLOT_NCOLORS];
    char nm[AS_PLOT_NCOLORS][32];
    double *xs[AS_PLOT_NCOLORS] = {0};
    int ns = 0;
    for (int k = 0; k < nsel; k++) {
        size_t i = nsel == 1 ? 0 : (size_t)k * (s->n_layers - 1) / (size_t)(nsel - 1);
        const as_sum_layer *L = &s->layers[i];
        if (!L->profile || L->nbins <= 0) continue;
        xs[ns] = malloc(sizeof(double) * (size_t)L->nbins);
        if (!xs[ns]) continue;
        for (int j = 0; j < L->nbins; j++) xs[ns][j] = (j + 0.5) * L->bin_width;
        snprintf(nm[ns], sizeof nm[ns], "layer %d", L->layer);
        ser[ns] = (as_series){nm[ns], L->nbins, xs[ns], L->profile, NULL, NULL, ns, 0, 0, 1.4};
        ns++;
    }
    if (ns > 0) {
        double blo = 0, bhi = 0;
        int band = first_span(as_trace_meta(tr, "prompt_fact_spans"), &blo, &bhi);
        as_lineplot lp = {{680, 420, title, "key position (tokens)",
                           "mean weight per position"},
                          ns, ser, 0, 1, 0, 0, 0, 0, 0, NULL, NULL,
                          0, NULL, 0, NULL, 0, NULL, 0,
                          band ? blo : 0, band ? bhi + 1 : 0,
                          band ? "planted fact" : NULL};
        lp.legend_pos = 4;
        char cap[256];
        snprintf(cap, sizeof cap,
                 "Positions are binned (%.3g per bin) when N > %d.%s", s->layers[0].bin_width,
                 AS_SUM_PROFILE_BINS,
                 band ? " The shaded band is the span of the fact the prompt asks about "
                        "(trace metadata prompt_fact_spans)."
                      : "");
        put_figure(c, id, as_plot_lines(&lp, err), cap, err);
    }
    for (int k = 0; k < ns; k++) free(xs[k]);

}

static void section_profile(ctx *c, const as_trace *tr, const as_summary *s)
{
    as_buf *b = c->b;
    char err[AS_ERR_LEN];
    sec(c, "where", "Where attention goes",
                    "Mean attention weight per key position (averaged over query heads and "
                    "decode queries; a density: it sums to 1 over positions), and the weight "
                    "each head puts on the first token (the attention sink).");
    as_html_grid_begin(b, 2);
    profile_figure(c, tr, s, "profile", "Attention weight by key position");
    int64_t hq = max_hq(s);
    double *z = layer_head_matrix(s, hq, 0, get_sink, 0);
    names_t rn = {0};
    if (z && layer_names(s, &rn, "") == 0) {
        as_heatmap h = {{680, heat_height(s->n_layers), "Attention on the first token (sink)",
                         "query head", "layer"},
                        (int)s->n_layers, (int)hq, z, rn.names, NULL, 0, 1,
                        "mean weight on position 0", "%.2f", 0};
        put_figure(c, "sink", as_plot_heatmap(&h, err),
                   "Mean over decode queries of the weight on position 0.", err);
    }
    names_free(&rn);
    free(z);
    as_html_grid_end(b);
    as_html_section_end(b);
}

static void section_entropy(ctx *c, const as_summary *s)
{
    as_buf *b = c->b;
    char err[AS_ERR_LEN];
    sec(c, "entropy", "Entropy and effective rank",
                    "Normalised attention entropy H(a) / ln n (0: all weight on one key, 1: "
                    "uniform over the n visible keys), mean over decode queries; and the "
                    "effective rank exp(-sum p_i ln p_i), p_i = s_i / sum s, of each kv head's "
                    "key matrix (Roy & Vetterli, 2007). Definitions: docs/theory.md.");
    if (!s->have_entropy && !s->have_rank) {
        as_html_note(b, s->missing[0]);
        as_html_note(b, s->missing[1]);
        as_html_section_end(b);
        return;
    }
    names_t rn = {0};
    if (layer_names(s, &rn, "") != 0) return;
    as_html_grid_begin(b, 2);
    if (s->have_entropy) {
        int64_t hq = max_hq(s);
        double *z = layer_head_matrix(s, hq, 0, get_entropy, 1);
        if (z) {
            as_heatmap h = {{680, heat_height(s->n_layers), "Mean normalised entropy",
                             "query head", "layer"},
                            (int)s->n_layers, (int)hq, z, rn.names, NULL, 0, 1,
                            "H / ln n  (1 = uniform)", "%.2f", 0};
            put_figure(c, "entropy-heatmap", as_plot_heatmap(&h, err),
                       "Low values (dark) are focused heads: few keys carry the weight.", err);
            free(z);
        }
    } else {
        as_html_note(b, s->missing[0]);
    }
    if (s->have_rank) {
        int64_t hkv = max_hkv(s);
        double *z = layer_head_matrix(s, hkv, 1, get_erank, 0);
        if (z) {
            char zl[64];
            snprintf(zl, sizeof zl, "effective rank (of d = %lld)", (long long)s->layers[0].d);
            as_heatmap h = {{680, heat_height(s->n_layers), "Effective rank of keys", "kv head",
                             "layer"},
                            (int)s->n_layers, (int)hkv, z, rn.names, NULL, 0, 0, zl, "%.1f", 0};
            put_figure(c, "erank-heatmap", as_plot_heatmap(&h, err),
                       "Keys living in few dimensions make the score matrix low rank.", err);
            free(z);
        }
    } else {
        as_html_note(b, s->missing[1]);
    }
    as_html_grid_end(b);
    names_free(&rn);
    as_html_section_end(b);
}

static void section_distributions(ctx *c, const as_summary *s)
{
    as_buf *b = c->b;
    char err[AS_ERR_LEN];
    if (!section_open(c, "distributions", "Per-layer distributions",
                      "Over all query heads and decode queries of a layer: normalised entropy, "
                      "and the fraction of the visible keys the largest weights need to hold 90% "
                      "and 99% of the attention mass (k90 / n, k99 / n). Boxes: quartiles and "
                      "median; whiskers: 1.5 IQR; dots: the rest.",
                      s->have_entropy, s->missing[0]))
        return;
    names_t gn = {0};
    if (layer_names(s, &gn, "") != 0) return;
    int ng = (int)s->n_layers;
    const double **v = calloc((size_t)ng * 2, sizeof *v);
    int *cnt = calloc((size_t)ng * 2, sizeof *cnt);
    if (v && cnt) {
        as_html_grid_begin(b, ng > 12 ? 1 : 2); /* many layers: full-width boxes */
        for (int g = 0; g < ng; g++) {
            v[g] = s->layers[g].entropy_norm;
            cnt[g] = (int)(s->layers[g].hq * s->layers[g].t);
        }
        int w = ng > 12 ? 1300 : 680;
        as_boxplot bp = {{w, 420, "Normalised entropy by layer", "layer", "H / ln n"},
                         ng, 1, gn.names, NULL, v, cnt, 0, 0, 1.02};
        put_figure(c, "entropy-box", as_plot_boxes(&bp, err),
                   "One sample per (query head, decode query).", err);
        for (int g = 0; g < ng; g++) {
            v[2 * g] = s->layers[g].k90_frac;
            v[2 * g + 1] = s->layers[g].k99_frac;
            cnt[2 * g] = cnt[2 * g + 1] = (int)(s->layers[g].hq * s->layers[g].t);
        }
        static const char *const sn[] = {"90% of the mass", "99% of the mass"};
        as_boxplot bk = {{w, 420, "Top-k mass: keys needed", "layer",
                          "k / n (fraction of visible keys)"},
                         ng, 2, gn.names, sn, v, cnt, 1, 0, 0};
        put_figure(c, "topk-box", as_plot_boxes(&bk, err),
                   "The smallest k whose largest weights hold 90% / 99% of the mass, as a "
                   "fraction of the keys the query sees (log scale).",
                   err);
        as_html_grid_end(b);
    }
    free(v);
    free(cnt);
    names_free(&gn);
    as_html_section_end(b);
}

/* Error-versus-sparsity curves of method m over all heads: median, quartiles, median bound
 * (all: scratch of total-heads doubles; outputs n_levels each). */
static void sparsity_curves(const as_summary *s, int m, double *all, double *med, double *q1,
                            double *q3, double *bnd)
{
    int nl = s->n_levels;
    for (int which = 0; which < 2; which++)
        for (int li = 0; li < nl; li++) {
            int64_t k = 0;
            for (size_t i = 0; i < s->n_layers; i++) {
                const as_sum_layer *L = &s->layers[i];
                const double *src = which ? L->rel_bound : L->rel_err;
                for (int64_t h = 0; h < L->hq; h++)
                    all[k++] = src ? src[((size_t)m * nl + li) * L->hq + h] : NAN;
            }
            if (which) {
                bnd[li] = as_sum_quantile(all, k, 0.5);
            } else {
                med[li] = as_sum_quantile(all, k, 0.5);
                if (q1) q1[li] = as_sum_quantile(all, k, 0.25);
                if (q3) q3[li] = as_sum_quantile(all, k, 0.75);
            }
        }
}

static int64_t total_heads(const as_summary *s)
{
    int64_t t = 0;
    for (size_t i = 0; i < s->n_layers; i++) t += s->layers[i].hq;
    return t;
}

static void section_sparsity(ctx *c, const as_summary *s)
{
    as_buf *b = c->b;
    char err[AS_ERR_LEN];
    if (!section_open(c, "sparsity", "Error versus sparsity",
                      "Relative output error ||o - o_S|| / ||o|| of each selection method as the "
                      "kept fraction shrinks (sparsity N / k), with the theoretical bound beside "
                      "it (dashed): for any kept set S, ||o - o_S|| <= (1 - P_S) "
                      "max_{i not in S} ||v_i - o_S|| (docs/theory.md). Lines: median over all "
                      "heads of the per-head median over queries; band: interquartile range "
                      "over heads.",
                      s->have_sparsity && s->n_methods > 0 && s->n_levels > 0, s->missing[3]))
        return;
    int nl = s->n_levels;
    int64_t tot_heads = 0;
    for (size_t i = 0; i < s->n_layers; i++) tot_heads += s->layers[i].hq;
    double *all = malloc(sizeof(double) * (size_t)(tot_heads ? tot_heads : 1));
    double *med = malloc(sizeof(double) * (size_t)nl * 5);
    if (!all || !med) {
        free(all);
        free(med);
        return;
    }
    double *q1 = med + nl, *q3 = med + 2 * nl, *bnd = med + 3 * nl;
    as_buf_puts(b, "<p class=\"sub\">Solid line with dots: measured relative error; shaded: "
                   "its interquartile range over heads; dashed: the bound (for the sampling "
                   "methods, the epsilon of the (epsilon, delta) guarantee); dotted: 1% and 5%."
                   "</p>\n");
    as_html_grid_begin(b, s->n_methods > 2 ? 3 : 2);
    for (int m = 0; m < s->n_methods; m++) {
        sparsity_curves(s, m, all, med, q1, q3, bnd);
        as_series ser[2] = {
            {NULL, nl, s->levels, med, q1, q3, m, 0, 1, 2},
            {NULL, nl, s->levels, bnd, NULL, NULL, m, 1, 0, 2},
        };
        static const double hl[2] = {0.01, 0.05};
        static const char *const hn[2] = {"1%", "5%"};
        static const double ticks[] = {2, 5, 10, 20, 50, 100, 200, 500, 1000};
        as_lineplot lp = {{520, 400, method_title(s->method_names[m]), "sparsity N / k",
                           "relative output error"},
                          any_finite(bnd, nl) ? 2 : 1, ser, 1, 1, 0, 0, 0, 0, 2, hl, hn, 2,
                          NULL, 0, ticks, (int)(sizeof ticks / sizeof ticks[0]), "x", 1,
                          0, 0, NULL};
        char id[64];
        snprintf(id, sizeof id, "sparsity-%d", m);
        put_figure(c, id, as_plot_lines(&lp, err), NULL, err);
    }
    as_html_grid_end(b);
    free(all);
    free(med);
    as_buf_puts(b, "<h3>Per method, over all heads</h3>\n<table><tr><th class=\"l\">method</th>"
                   "<th>median sparsity, error &lt; 1%</th><th>median sparsity, error &lt; 5%</th>"
                   "<th>heads needing dense (5%)</th><th>median bound / error</th>"
                   "<th>bound checks</th><th class=\"l\">violations</th></tr>\n");
    for (int m = 0; m < s->n_methods; m++) {
        as_buf_puts(b, "<tr><td class=\"l\">");
        as_buf_esc(b, method_title(s->method_names[m]));
        as_buf_puts(b, "</td><td>");
        put_tol(b, s->m_sparsity_1[m] > 1 ? s->m_sparsity_1[m] : NAN, s);
        as_buf_puts(b, "</td><td>");
        put_tol(b, s->m_sparsity_5[m] > 1 ? s->m_sparsity_5[m] : NAN, s);
        as_buf_printf(b, "</td><td>%lld</td><td>", (long long)s->m_dense_heads[m]);
        as_buf_num(b, s->m_slack[m], 3);
        as_buf_printf(b, "</td><td>%lld</td><td class=\"l\">%lld", (long long)s->m_records[m],
                      (long long)s->m_violations[m]);
        if (s->m_sampling[m])
            as_buf_printf(b, " (epsilon exceeded in %lld of %lld draws)", (long long)s->m_exceed[m],
                          (long long)s->m_draws[m]);
        as_buf_puts(b, "</td></tr>\n");
    }
    as_buf_puts(b, "</table>\n");
    as_html_section_end(b);
}

static void section_bottleneck(ctx *c, const as_summary *s)
{
    as_buf *b = c->b;
    char err[AS_ERR_LEN];
    if (!section_open(c, "bottleneck", "The d-dimensional bottleneck",
                      "The output o = V^T a lies in R^d while a lies on the (n-1)-simplex: "
                      "n - rank([V^T; 1^T]) directions of a change nothing in o (the collision "
                      "space). The witness is a second distribution a' with V^T a' = V^T a as "
                      "far from a as possible in total variation (a linear program): a large TV "
                      "distance means the output cannot tell very different attention patterns "
                      "apart.",
                      s->have_bottleneck, s->missing[2]))
        return;
    names_t rn = {0};
    if (layer_names(s, &rn, "") != 0) return;
    int64_t hq = max_hq(s);
    as_html_grid_begin(b, 2);
    double *z = layer_head_matrix(s, hq, 0, get_collision, 0);
    if (z) {
        /* the rank of [V^T; 1^T] is what varies (or not) between heads */
        double rlo = INFINITY, rhi = -INFINITY;
        int64_t nlo = INT64_MAX, nhi = 0;
        for (size_t i = 0; i < s->n_layers; i++) {
            const as_sum_layer *L = &s->layers[i];
            for (int64_t h = 0; h < L->hq; h++)
                if (isfinite(L->value_rank[h]))
                    rlo = fmin(rlo, L->value_rank[h]), rhi = fmax(rhi, L->value_rank[h]);
            if (L->n < nlo) nlo = L->n;
            if (L->n > nhi) nhi = L->n;
        }
        char cap[320];
        if (rlo == rhi)
            snprintf(cap, sizeof cap,
                     "rank [V^T; 1^T] = %.0f%s for every head and query: the collision space "
                     "has n - %.0f dimensions (keys up to %lld). Mean over decode queries.",
                     rlo, rlo == (double)s->layers[0].d + 1 ? " (= d + 1: full)" : "", rlo,
                     (long long)nhi);
        else
            snprintf(cap, sizeof cap,
                     "Dimension of the collision space (keys), mean over decode queries; "
                     "rank [V^T; 1^T] ranges over %.0f..%.0f.", rlo, rhi);
        as_heatmap h = {{680, heat_height(s->n_layers), "Collision-space dimension", "query head",
                         "layer"},
                        (int)s->n_layers, (int)hq, z, rn.names, NULL, 0, 0,
                        "n - rank[V^T; 1^T]  (keys)", "%.0f", 0};
        put_figure(c, "collision-heatmap", as_plot_heatmap(&h, err), cap, err);
        free(z);
    }
    z = layer_head_matrix(s, hq, 0, get_tv, 0);
    if (z && !any_finite(z, (int64_t)s->n_layers * hq)) {
        as_html_note(b, "TV witness not computed (report made with --witness none, or the "
                        "library was built without GLPK).");
        free(z);
        z = NULL;
    }
    if (z) {
        as_heatmap h = {{680, heat_height(s->n_layers), "TV witness", "query head", "layer"},
                        (int)s->n_layers, (int)hq, z, rn.names, NULL, 0, 1,
                        "total variation ||a - a'||_TV", "%.2f", 0};
        put_figure(c, "tv-heatmap", as_plot_heatmap(&h, err),
                   "TV distance between the true attention and a distribution with the same "
                   "output found by the linear programs (a lower bound on the largest; 1 = "
                   "disjoint supports), for the last decode query of each head unless the "
                   "report was made with --witness all (then the mean over queries).",
                   err);
        free(z);
    }
    as_html_grid_end(b);
    /* absorption: how much of the change oracle top-k makes to the weights reaches o */
    int nsel = s->n_layers < AS_PLOT_NCOLORS ? (int)s->n_layers : AS_PLOT_NCOLORS;
    as_series ser[AS_PLOT_NCOLORS];
    double ys[AS_PLOT_NCOLORS][16];
    double xs[AS_PLOT_NCOLORS][16];
    char nm[AS_PLOT_NCOLORS][32];
    int ns = 0;
    for (int k = 0; k < nsel; k++) {
        size_t i = nsel == 1 ? 0 : (size_t)k * (s->n_layers - 1) / (size_t)(nsel - 1);
        const as_sum_layer *L = &s->layers[i];
        if (!L->absorption || L->n_absorb <= 0) continue;
        double col[4096];
        int nh = L->hq < 4096 ? (int)L->hq : 4096;
        for (int bi = 0; bi < L->n_absorb && bi < 16; bi++) {
            for (int h = 0; h < nh; h++) col[h] = L->absorption[(size_t)h * L->n_absorb + bi];
            xs[ns][bi] = 100 * L->absorb_budget[bi];
            ys[ns][bi] = as_sum_quantile(col, nh, 0.5);
        }
        snprintf(nm[ns], sizeof nm[ns], "layer %d", L->layer);
        ser[ns] = (as_series){nm[ns], L->n_absorb < 16 ? L->n_absorb : 16, xs[ns], ys[ns],
                              NULL, NULL, ns, 0, 1, 2};
        ns++;
    }
    if (ns > 0) {
        as_lineplot lp = {.f = {680, 420, "Absorption of top-k's change by V^T",
                                "kept keys (% of n, oracle top-k)",
                                "||V^T (a - a_k)|| / (||a - a_k||_1 max ||v_i||)"},
                          .nseries = ns, .s = ser, .logx = 1, .legend_pos = 4};
        as_html_grid_begin(b, 2);
        put_figure(c, "absorption", as_plot_lines(&lp, err),
                   "||V^T (a - a_k)|| / (||a - a_k||_1 max ||v_i||): median over heads of the "
                   "mean over queries. "
                   "Small values: most of the change that sparsification makes to the weights "
                   "is hidden by the d-dimensional projection onto the values.",
                   err);
        as_html_grid_end(b);
    }
    names_free(&rn);
    as_html_section_end(b);
}

static void section_spectrum(ctx *c, const as_summary *s)
{
    as_buf *b = c->b;
    char err[AS_ERR_LEN];
    if (!section_open(c, "spectrum", "Positional spectrum",
                      "Power spectrum of attention weight as a function of relative position "
                      "(averaged over queries, Hann window) for the most periodic heads: those "
                      "whose strongest peak, among periods that repeat at least 8 times in the "
                      "context, holds the largest share of the power. The shaded line marks that "
                      "period. RoPE's rotation frequencies make some heads attend periodically.",
                      s->have_spectrum, s->missing[4]))
        return;
    enum { TOP = 6 };
    size_t tl[TOP];
    int64_t th[TOP];
    double tv[TOP];
    int nt = 0;
    for (size_t i = 0; i < s->n_layers; i++) {
        const as_sum_layer *L = &s->layers[i];
        for (int64_t h = 0; L->periodicity && L->spec_power && h < L->hq; h++) {
            double v = L->periodicity[h];
            if (!isfinite(v)) continue;
            int pos = nt;
            while (pos > 0 && tv[pos - 1] < v) pos--;
            if (pos >= TOP) continue;
            int last = nt < TOP ? nt : TOP - 1;
            for (int k = last; k > pos; k--) tl[k] = tl[k - 1], th[k] = th[k - 1], tv[k] = tv[k - 1];
            tl[pos] = i, th[pos] = h, tv[pos] = v;
            if (nt < TOP) nt++;
        }
    }
    if (s->left_out[0]) as_html_note(b, s->left_out);
    if (nt == 0) {
        as_html_note(b, "no head has a finite spectrum");
        as_html_section_end(b);
        return;
    }
    as_html_grid_begin(b, 3);
    for (int k = 0; k < nt; k++) {
        const as_sum_layer *L = &s->layers[tl[k]];
        double per = L->dominant_period[th[k]];
        char title[96], cap[160];
        snprintf(title, sizeof title, "layer %d, head %lld: period %.3g", L->layer,
                 (long long)th[k], per);
        snprintf(cap, sizeof cap, "Strongest peak: period %.4g tokens, %.1f%% of the power.",
                 per, 100 * tv[k]);
        as_series ser = {NULL, L->nfreq, L->spec_period, L->spec_power + th[k] * L->nfreq,
                         NULL, NULL, k, 0, 0, 1.1};
        as_lineplot lp = {{440, 320, title, "period (tokens of relative position)",
                           "share of power"},
                          1, &ser, 1, 1, 0, 0, 0, 0, 0, NULL, NULL, 0,
                          NULL, 0, NULL, 0, NULL, 0, per * 0.985, per * 1.015, NULL};
        char id[32];
        snprintf(id, sizeof id, "spectrum-%d", k);
        put_figure(c, k == 0 ? "spectrum" : id, as_plot_lines(&lp, err), cap, err);
    }
    as_html_grid_end(b);
    as_html_section_end(b);
}

static void section_summary(ctx *c, const as_summary *s)
{
    as_buf *b = c->b;
    sec(c, "summary", "Summary per layer",
                    "Per layer: the sparsity N / k at which the relative output error stays "
                    "under 1% and 5% for each method: the median over the layer's heads of the "
                    "largest sparsity of the sweep (2x to 100x) from which on every denser "
                    "budget keeps the mean error over queries under the threshold; and the "
                    "heads that need dense attention (not even 2x keeps their error under 5%).");
    int nm = s->have_sparsity ? s->n_methods : 0;
    const char *rs = nm ? " rowspan=\"2\"" : "";
    as_buf_printf(b, "<table><tr><th%s>layer</th><th%s>mean H / ln n</th><th%s>median k90 / n</th>"
                     "<th%s>median k99 / n</th><th%s>mean erank K</th><th%s>mean TV witness</th>",
                  rs, rs, rs, rs, rs, rs);
    for (int m = 0; m < nm; m++) {
        as_buf_puts(b, "<th colspan=\"2\" class=\"c\">");
        as_buf_esc(b, method_title(s->method_names[m]));
        as_buf_puts(b, "</th>");
    }
    if (nm) as_buf_printf(b, "<th%s class=\"l\">heads needing dense attention<br>(%s)</th>", rs,
                          method_title(s->method_names[0]));
    as_buf_puts(b, "</tr>\n");
    if (nm) {
        as_buf_puts(b, "<tr>");
        for (int m = 0; m < nm; m++)
            as_buf_puts(b, "<th class=\"nw\">&lt; 1%</th><th class=\"nw\">&lt; 5%</th>");
        as_buf_puts(b, "</tr>\n");
    }
    for (size_t i = 0; i < s->n_layers; i++) {
        const as_sum_layer *L = &s->layers[i];
        int64_t hqt = L->hq * L->t;
        as_buf_printf(b, "<tr><td>%d</td><td>", L->layer);
        as_buf_num(b, as_sum_mean(L->entropy_norm, hqt), 3);
        as_buf_puts(b, "</td><td>");
        as_buf_num(b, as_sum_quantile(L->k90_frac, hqt, 0.5), 3);
        as_buf_puts(b, "</td><td>");
        as_buf_num(b, as_sum_quantile(L->k99_frac, hqt, 0.5), 3);
        as_buf_puts(b, "</td><td>");
        as_buf_num(b, as_sum_mean(L->erank_k, L->hkv), 3);
        as_buf_puts(b, "</td><td>");
        as_buf_num(b, as_sum_mean(L->tv_witness, L->hq), 3);
        as_buf_puts(b, "</td>");
        for (int m = 0; m < nm; m++) {
            for (int t = 0; t < 2; t++) {
                const double *tol = t ? L->tol_5 : L->tol_1;
                /* heads whose error never gets under the threshold count as "< min level":
                 * take the median with those as 0 */
                double *v = malloc(sizeof(double) * (size_t)(L->hq ? L->hq : 1));
                double med = NAN;
                if (v && tol) {
                    for (int64_t h = 0; h < L->hq; h++) {
                        double x = tol[(size_t)m * L->hq + h];
                        v[h] = isnan(x) ? 0 : x;
                    }
                    med = as_sum_quantile(v, L->hq, 0.5);
                    if (med == 0) med = NAN;
                }
                free(v);
                as_buf_puts(b, "<td>");
                put_tol(b, med, s);
                as_buf_puts(b, "</td>");
            }
        }
        if (nm) {
            as_buf_puts(b, "<td class=\"l\">");
            int any = 0;
            for (int64_t h = 0; L->tol_5 && h < L->hq; h++)
                if (isnan(L->tol_5[h])) { /* method 0: the oracle's error is the least */
                    as_buf_printf(b, "%sh%lld", any ? ", " : "", (long long)h);
                    any = 1;
                }
            as_buf_puts(b, any ? "</td>" : "none</td>");
        }
        as_buf_puts(b, "</tr>\n");
    }
    as_buf_puts(b, "</table>\n");
    if (!s->have_entropy) as_html_note(b, s->missing[0]);
    if (!s->have_sparsity) as_html_note(b, s->missing[3]);
    as_html_section_end(b);
}

/* ---------------------------------------------------------------- GPU results */
static double num_field(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str_field(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Rows of `attnscope gpu bench --json` ("records") or of gpu/bench/bench.py ("rows"). */
static const cJSON *gpu_rows(const cJSON *doc)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(doc, "records");
    if (!cJSON_IsArray(r)) r = cJSON_GetObjectItemCaseSensitive(doc, "rows");
    if (!cJSON_IsArray(r) && cJSON_IsArray(doc)) r = doc;
    return cJSON_IsArray(r) ? r : NULL;
}

/* Dense baselines, preferred first: the fastest dense decode of another library (FlashInfer's
 * CUDA-core fi_dense and tensor-core fi_dense_tc, PyTorch SDPA: the fastest at each shape), then
 * attnscope's. */
static int baseline_rank(const char *m)
{
    if (!m) return -1;
    if (strcmp(m, "fi_dense") == 0 || strcmp(m, "fi_dense_tc") == 0 ||
        strcmp(m, "flashinfer_dense") == 0 || strcmp(m, "sdpa") == 0)
        return 0;
    if (strcmp(m, "dense") == 0) return 1;
    return -1;
}

/* Rows that are sparse decodes worth a speedup (not baselines, copies or selection alone). */
static int is_sparse_row(const char *m)
{
    if (!m || baseline_rank(m) >= 0 || strcmp(m, "copy") == 0 || strcmp(m, "read") == 0 ||
        strncmp(m, "select", 6) == 0 || strstr(m, "topk_rows") || strcmp(m, "torch_topk") == 0)
        return 0;
    if (strstr(m, "dense") || strcmp(m, "sdpa") == 0) return 0;
    return 1;
}

static int same_shape(const cJSON *r, double b, double n, double d)
{
    return num_field(r, "batch") == b && num_field(r, "n") == n && num_field(r, "d") == d;
}

static double baseline_us(const cJSON *rows, double b, double n, double d, const char **name)
{
    double us = NAN;
    int best = 99;
    const cJSON *r;
    cJSON_ArrayForEach(r, rows)
    {
        const int k = baseline_rank(str_field(r, "method"));
        const double u = num_field(r, "us");
        if (k < 0 || k > best || !same_shape(r, b, n, d) || !(u > 0)) continue;
        if (k < best || u < us) {
            best = k;
            us = u;
        }
    }
    if (name) *name = best == 0 ? "fastest dense (FlashInfer, SDPA)" : best == 1 ? "attnscope dense" : NULL;
    return us;
}

/* The shape shown per method: the longest context with a baseline and sparse rows, then the
 * largest batch, preferring d = 128 (*bn < 0: none). */
static void gpu_best_shape(const cJSON *recs, double *bb_out, double *bn_out, double *bd_out)
{
    double bb = -1, bn = -1, bd = -1;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        double rb = num_field(r, "batch"), rn = num_field(r, "n"), rd = num_field(r, "d");
        if (!is_sparse_row(str_field(r, "method")) || !isfinite(rn)) continue;
        if (!isfinite(baseline_us(recs, rb, rn, rd, NULL))) continue;
        int better = rn > bn || (rn == bn && rb > bb) || (rn == bn && rb == bb && rd == 128);
        if (better) bb = rb, bn = rn, bd = rd;
    }
    *bb_out = bb, *bn_out = bn, *bd_out = bd;
}

enum { GPU_MAXM = AS_PLOT_NCOLORS, GPU_MAXP = 16 };
static const double gpu_hl[1] = {10};
static const char *const gpu_hn[1] = {"10x"};
static const double gpu_ticks[] = {2, 5, 10, 20, 50, 100, 200, 500, 1000};

/* sparse decode over given indices across shapes: one line per (batch, N) */
static void gpu_shapes_figure(ctx *c, const cJSON *recs, double bb, double bd, const char *yl)
{
    char err[AS_ERR_LEN];
    double sb[GPU_MAXM], sn[GPU_MAXM];
    double sx[GPU_MAXM][GPU_MAXP], sy[GPU_MAXM][GPU_MAXP];
    int sc[GPU_MAXM] = {0}, ns = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        const char *m = str_field(r, "method");
        double rb = num_field(r, "batch"), rn = num_field(r, "n"), sp = num_field(r, "sparsity");
        double us = num_field(r, "us");
        if (!m || strcmp(m, "sparse_idx") != 0 || num_field(r, "d") != bd || rb != bb ||
            !(us > 0))
            continue;
        double bu = baseline_us(recs, rb, rn, bd, NULL);
        if (!isfinite(bu)) continue;
        int k = 0;
        while (k < ns && !(sb[k] == rb && sn[k] == rn)) k++;
        if (k == ns) {
            if (ns == GPU_MAXM) continue;
            sb[ns] = rb, sn[ns] = rn, ns++;
        }
        if (sc[k] < GPU_MAXP) sx[k][sc[k]] = sp, sy[k][sc[k]++] = bu / us;
    }
    if (ns <= 1) return;
    as_series s2[GPU_MAXM];
    char nm2[GPU_MAXM][48];
    for (int k = 0; k < ns; k++) {
        snprintf(nm2[k], sizeof nm2[k], "N = %.0fk", sn[k] / 1024);
        s2[k] = (as_series){nm2[k], sc[k], sx[k], sy[k], NULL, NULL, k, 0, 1, 1.6};
    }
    char t2[96];
    snprintf(t2, sizeof t2, "sparse_idx by context length (batch %.0f, d = %.0f)", bb, bd);
    as_lineplot l2 = {.f = {680, 420, t2, "sparsity N / k", yl},
                      .nseries = ns, .s = s2, .logx = 1, .logy = 1, .nhlines = 1,
                      .hlines = gpu_hl, .hline_names = gpu_hn, .legend_pos = 1,
                      .xtick_values = gpu_ticks, .nxtick_values = 9, .xtick_suffix = "x"};
    put_figure(c, "gpu-shapes", as_plot_lines(&l2, err),
               "Attention over given indices against the dense baseline at each N.", err);
}

/* speedup of each sparse method over the dense baseline at shape (bb, bn, bd), then the
 * shapes figure; returns 1 when the speedup figure was drawn */
static int gpu_speedup_figures(ctx *c, const cJSON *recs, double bb, double bn, double bd)
{
    as_buf *b = c->b;
    char err[AS_ERR_LEN];
    const char *base_name = NULL;
    double base = baseline_us(recs, bb, bn, bd, &base_name);
    const char *mnames[GPU_MAXM];
    double xs[GPU_MAXM][GPU_MAXP], ys[GPU_MAXM][GPU_MAXP];
    int cnt[GPU_MAXM] = {0}, nm = 0, plotted = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        const char *m = str_field(r, "method");
        double sp = num_field(r, "sparsity"), us = num_field(r, "us");
        if (!is_sparse_row(m) || !same_shape(r, bb, bn, bd) || !(sp > 0) || !(us > 0)) continue;
        int k = 0;
        while (k < nm && strcmp(mnames[k], m) != 0) k++;
        if (k == nm) {
            if (nm == GPU_MAXM) continue;
            mnames[nm++] = m;
        }
        if (cnt[k] < GPU_MAXP) xs[k][cnt[k]] = sp, ys[k][cnt[k]++] = base / us;
    }
    as_series ser[GPU_MAXM];
    for (int k = 0; k < nm; k++)
        ser[k] = (as_series){mnames[k], cnt[k], xs[k], ys[k], NULL, NULL, k, 0, 1, 2};
    char title[160], yl[96];
    snprintf(title, sizeof title, "Speedup vs sparsity (batch %.0f, N = %.0f, d = %.0f)", bb, bn,
             bd);
    snprintf(yl, sizeof yl, "speedup over %s", base_name ? base_name : "dense");
    as_lineplot lp = {.f = {680, 420, title, "sparsity N / k", yl},
                      .nseries = nm, .s = ser, .logx = 1, .logy = 1, .nhlines = 1,
                      .hlines = gpu_hl, .hline_names = gpu_hn, .legend_pos = 1,
                      .xtick_values = gpu_ticks, .nxtick_values = 9, .xtick_suffix = "x"};
    as_html_grid_begin(b, 2);
    if (nm > 0) {
        put_figure(c, "gpu-speedup", as_plot_lines(&lp, err), NULL, err);
        plotted = 1;
    }
    gpu_shapes_figure(c, recs, bb, bd, yl);
    as_html_grid_end(b);
    return plotted;
}

/* every row, collapsed */
static void gpu_rows_table(as_buf *b, const cJSON *recs)
{
    int nrec = cJSON_GetArraySize(recs);
    as_buf_puts(b, "<details><summary>all rows</summary>\n<table><tr><th class=\"l\">method</th>"
                   "<th>batch</th><th>N</th><th>d</th><th>sparsity</th><th>µs</th>"
                   "<th>GB/s</th><th>% of copy</th></tr>\n");
    int shown = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        if (shown++ >= 5000) break;
        as_buf_puts(b, "<tr><td class=\"l\">");
        as_buf_esc(b, str_field(r, "method") ? str_field(r, "method") : "?");
        as_buf_puts(b, "</td>");
        static const char *const f[] = {"batch", "n", "d", "sparsity", "us", "gbps", "pct_copy"};
        for (int k = 0; k < 7; k++) {
            as_buf_puts(b, "<td>");
            as_buf_num(b, num_field(r, f[k]), 4);
            as_buf_puts(b, "</td>");
        }
        as_buf_puts(b, "</tr>\n");
    }
    as_buf_printf(b, "</table></details>\n<p class=\"sub\">%d rows</p>\n", nrec);
}

static void section_gpu(ctx *c, const as_report_info *info)
{
    if (!info->gpu_json) return;
    as_buf *b = c->b;
    sec(c, "gpu", "GPU decode kernels",
                    "From attnscope gpu bench --json: median time of each kernel and its "
                    "speedup over dense decode at the same shape (batch, N, d): the fastest of "
                    "FlashInfer's CUDA-core and tensor-core decode and PyTorch SDPA when the run "
                    "has them, else attnscope's. sparse_idx: attention over given "
                    "indices; e2e_*: selection + attention; fi_pages: FlashInfer's own sparse "
                    "(paged) decode.");
    cJSON *doc = cJSON_Parse(info->gpu_json);
    const cJSON *recs = doc ? gpu_rows(doc) : NULL;
    if (!recs || cJSON_GetArraySize(recs) == 0) {
        as_html_note(b, doc ? "the GPU JSON has no records (or rows) array"
                            : "the GPU JSON could not be parsed");
        cJSON_Delete(doc);
        as_html_section_end(b);
        return;
    }
    const char *dev = str_field(doc, "device");
    if (dev) {
        as_buf_puts(b, "<p>Device: ");
        as_buf_esc(b, dev);
        const char *fi = str_field(doc, "flashinfer");
        if (fi) {
            as_buf_puts(b, "; FlashInfer ");
            as_buf_esc(b, fi);
        }
        as_buf_puts(b, "</p>\n");
    }
    double bb, bn, bd;
    gpu_best_shape(recs, &bb, &bn, &bd);
    int plotted = bn > 0 && gpu_speedup_figures(c, recs, bb, bn, bd);
    if (!plotted) as_html_note(b, "no sparse rows with a dense baseline at the same shape");
    gpu_rows_table(b, recs);
    cJSON_Delete(doc);
    as_html_section_end(b);
}


/* ---------------------------------------------------------------- task accuracy (eval) */
/* From `attnscope eval` (python/attnscope_eval; records in docs/cli.md): per method, accuracy
 * and KL(dense || sparse) against sparsity, one series per task and length, the dense model
 * at sparsity 1; the per-head tolerance against the model-level one when present. */
enum { EV_MAXS = AS_PLOT_NCOLORS, EV_MAXP = 32 };

typedef struct {
    char name[96];
    int n;
    double x[EV_MAXP], y[EV_MAXP], lo[EV_MAXP], hi[EV_MAXP];
} ev_series;

static void ev_sort(ev_series *s)
{
    for (int i = 1; i < s->n; i++)
        for (int j = i; j > 0 && s->x[j - 1] > s->x[j]; j--) {
            double t;
            t = s->x[j], s->x[j] = s->x[j - 1], s->x[j - 1] = t;
            t = s->y[j], s->y[j] = s->y[j - 1], s->y[j - 1] = t;
            t = s->lo[j], s->lo[j] = s->lo[j - 1], s->lo[j - 1] = t;
            t = s->hi[j], s->hi[j] = s->hi[j - 1], s->hi[j - 1] = t;
        }
}

static int rec_is(const cJSON *r, const char *kind)
{
    const char *k = str_field(r, "record");
    return k && strcmp(k, kind) == 0;
}

/* One figure per method: metric "accuracy" (with its Wilson band) or "kl_mean". */
static void eval_method_plot(ctx *c, const cJSON *recs, const char *method, int kl)
{
    char err[AS_ERR_LEN];
    ev_series ser[EV_MAXS];
    int ns = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        if (!rec_is(r, "summary")) continue;
        const char *m = str_field(r, "method"), *task = str_field(r, "task");
        double sp = num_field(r, "sparsity"), len = num_field(r, "length");
        int dense = m && strcmp(m, "dense") == 0;
        if (!m || !task || (!dense && strcmp(m, method) != 0) || !isfinite(len)) continue;
        if (!dense && !(sp > 0)) continue; /* eps configurations: no nominal sparsity */
        double y = num_field(r, kl ? "kl_mean" : "accuracy");
        if (!isfinite(y)) continue;
        if (kl && dense) continue; /* KL of dense against itself: 0, not on a log axis */
        if (kl && !(y > 0)) y = NAN;
        char nm[96];
        snprintf(nm, sizeof nm, "%s %.0fk", task, len / 1024);
        int k = 0;
        while (k < ns && strcmp(ser[k].name, nm) != 0) k++;
        if (k == ns) {
            if (ns == EV_MAXS) continue;
            memset(&ser[ns], 0, sizeof ser[ns]);
            snprintf(ser[ns].name, sizeof ser[ns].name, "%s", nm);
            ns++;
        }
        ev_series *e = &ser[k];
        if (e->n == EV_MAXP) continue;
        e->x[e->n] = dense ? 1.0 : sp;
        e->y[e->n] = y;
        e->lo[e->n] = kl ? NAN : num_field(r, "ci_low");
        e->hi[e->n] = kl ? NAN : num_field(r, "ci_high");
        e->n++;
    }
    if (ns == 0) return;
    as_series ps[EV_MAXS];
    for (int k = 0; k < ns; k++) {
        ev_sort(&ser[k]);
        ps[k] = (as_series){ser[k].name, ser[k].n, ser[k].x, ser[k].y,
                            kl ? NULL : ser[k].lo, kl ? NULL : ser[k].hi, k, 0, 1, 2};
    }
    char title[128], id[96];
    snprintf(title, sizeof title, "%s: %s vs sparsity", method_title(method),
             kl ? "KL(dense || sparse)" : "task accuracy");
    snprintf(id, sizeof id, "eval-%s-%s", kl ? "kl" : "acc", method);
    static const double ticks[] = {1, 2, 5, 10, 20, 50, 100};
    as_lineplot lp = {.f = {560, 380, title, "sparsity N / k (1 = dense)",
                            kl ? "mean KL per decode step (nats)" : "accuracy (95% Wilson CI)"},
                      .nseries = ns, .s = ps, .logx = 1, .logy = kl,
                      .xmin = 0.9, .xmax = 120, .ymin = kl ? 0 : -0.02, .ymax = kl ? 0 : 1.02,
                      .legend_pos = kl ? 1 : 3, .xtick_values = ticks, .nxtick_values = 7,
                      .xtick_suffix = "x", .ypercent = !kl};
    put_figure(c, id, as_plot_lines(&lp, err), NULL, err);
}

static void eval_perhead_plot(ctx *c, const cJSON *recs)
{
    char err[AS_ERR_LEN];
    enum { MAXPT = 64 };
    double px[EV_MAXS][MAXPT], py[EV_MAXS][MAXPT];
    const char *mn[EV_MAXS];
    int cnt[EV_MAXS] = {0}, nm = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        if (!rec_is(r, "perhead")) continue;
        const char *m = str_field(r, "method");
        double a = num_field(r, "perhead_tolerance"), b = num_field(r, "model_tolerance");
        if (!m || !(a > 0) || !(b > 0)) continue;
        int k = 0;
        while (k < nm && strcmp(mn[k], m) != 0) k++;
        if (k == nm) {
            if (nm == EV_MAXS) continue;
            mn[nm++] = m;
        }
        if (cnt[k] < MAXPT) px[k][cnt[k]] = a, py[k][cnt[k]++] = b;
    }
    if (nm == 0) return;
    /* points only: one single-point series per point (a line would suggest an order) */
    int tot = 0;
    for (int k = 0; k < nm; k++) tot += cnt[k];
    as_series *ps = calloc((size_t)tot, sizeof *ps);
    if (!ps) return;
    int i = 0;
    for (int k = 0; k < nm; k++)
        for (int j = 0; j < cnt[k]; j++)
            ps[i++] = (as_series){j == 0 ? method_title(mn[k]) : NULL, 1, &px[k][j], &py[k][j],
                                  NULL, NULL, k, 0, 1, 2};
    static const double ticks[] = {1, 2, 5, 10, 20, 50, 100};
    as_lineplot lp = {.f = {560, 380, "Per-head prediction vs model-level tolerance",
                            "median per-head sparsity under 5% output error",
                            "model-level tolerance (sparsity)"},
                      .nseries = tot, .s = ps, .logx = 1, .logy = 1, .xmin = 0.9, .xmax = 120,
                      .ymin = 0.9, .ymax = 120, .legend_pos = 3, .xtick_values = ticks,
                      .nxtick_values = 7, .xtick_suffix = "x"};
    put_figure(c, "eval-perhead", as_plot_lines(&lp, err),
               "One point per task, length and method: the tolerance attnscope sparsity "
               "predicts from the captured trace (x) against the largest sparsity whose task "
               "accuracy stays within the dense 95% CI (y).",
               err);
    free(ps);
}

static void section_eval(ctx *c, const as_report_info *info)
{
    if (!info->eval_json) return;
    as_buf *b = c->b;
    sec(c, "eval", "Task accuracy under sparse decode",
                    "From attnscope eval: the model prefilled densely, then every decode step "
                    "in the sparse layers attending only to the keys each method selects. "
                    "Accuracy (95% Wilson band) and mean KL(dense || sparse) of the next-token "
                    "distribution, teacher-forced along the dense answer, against sparsity; "
                    "sparsity 1 is the dense model.");
    cJSON *doc = cJSON_Parse(info->eval_json);
    const cJSON *recs = doc ? cJSON_GetObjectItemCaseSensitive(doc, "records") : NULL;
    const char *cmd = doc ? str_field(doc, "command") : NULL;
    if (!cJSON_IsArray(recs) || !cmd || strcmp(cmd, "eval") != 0) {
        as_html_note(b, doc ? "the eval JSON has no records array (not from attnscope eval)"
                            : "the eval JSON could not be parsed");
        cJSON_Delete(doc);
        as_html_section_end(b);
        return;
    }
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        if (!rec_is(r, "run")) continue;
        as_buf_puts(b, "<p>Model: ");
        as_buf_esc(b, str_field(r, "model_id") ? str_field(r, "model_id") : "?");
        as_buf_puts(b, "; selection per ");
        as_buf_esc(b, str_field(r, "mode") && strcmp(str_field(r, "mode"), "q") == 0
                          ? "query head" : "kv head (shared by its query group)");
        as_buf_puts(b, "</p>\n");
        break;
    }
    const char *methods[16];
    int nm = 0;
    cJSON_ArrayForEach(r, recs)
    {
        const char *m = str_field(r, "method");
        if (!rec_is(r, "summary") || !m || strcmp(m, "dense") == 0 ||
            !(num_field(r, "sparsity") > 0))
            continue;
        int k = 0;
        while (k < nm && strcmp(methods[k], m) != 0) k++;
        if (k == nm && nm < 16) methods[nm++] = m;
    }
    if (nm == 0) as_html_note(b, "no summary records with a nominal sparsity");
    for (int k = 0; k < nm; k++) {
        as_html_grid_begin(b, 2);
        eval_method_plot(c, recs, methods[k], 0);
        eval_method_plot(c, recs, methods[k], 1);
        as_html_grid_end(b);
    }
    eval_perhead_plot(c, recs);
    /* the numbers: dense first, then every configuration */
    as_buf_puts(b, "<details><summary>all summary rows</summary>\n<table><tr>"
                   "<th class=\"l\">task</th><th>length</th><th class=\"l\">config</th>"
                   "<th>samples</th><th>accuracy</th><th>CI low</th><th>CI high</th>"
                   "<th>dense</th><th>agree</th><th>top-1</th><th>KL</th><th>ppl ratio</th>"
                   "</tr>\n");
    cJSON_ArrayForEach(r, recs)
    {
        if (!rec_is(r, "summary")) continue;
        as_buf_puts(b, "<tr><td class=\"l\">");
        as_buf_esc(b, str_field(r, "task"));
        as_buf_puts(b, "</td><td>");
        as_buf_num(b, num_field(r, "length"), 6);
        as_buf_puts(b, "</td><td class=\"l\">");
        as_buf_esc(b, str_field(r, "config"));
        as_buf_puts(b, "</td>");
        static const char *const f[] = {"samples", "accuracy", "ci_low", "ci_high",
                                        "dense_accuracy", "agree_dense", "top1", "kl_mean",
                                        "ppl_ratio"};
        for (int k = 0; k < 9; k++) {
            as_buf_puts(b, "<td>");
            as_buf_num(b, num_field(r, f[k]), 3);
            as_buf_puts(b, "</td>");
        }
        as_buf_puts(b, "</tr>\n");
    }
    as_buf_puts(b, "</table></details>\n");
    cJSON_Delete(doc);
    as_html_section_end(b);
}

/* ---------------------------------------------------------------- provenance */
void as_report_versions(char *buf, size_t n)
{
    char pl[80] = "";
    plgver(pl);
    snprintf(buf, n, "PLplot %s (svg driver), %s, cJSON %d.%d.%d", pl, as_digest_library(),
             CJSON_VERSION_MAJOR, CJSON_VERSION_MINOR, CJSON_VERSION_PATCH);
}

void as_report_run_kv(as_buf *b, const as_report_info *info)
{
    char tmp[512];
    as_html_kv(b, "attnscope version", AS_VERSION);
    as_html_kv_code(b, "command", info->command);
    if (info->gpu_json_path) as_html_kv_code(b, "GPU results", info->gpu_json_path);
    if (info->eval_json_path) as_html_kv_code(b, "eval results", info->eval_json_path);
    as_report_versions(tmp, sizeof tmp);
    as_html_kv(b, "libraries", tmp);
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv)) {
        strftime(tmp, sizeof tmp, "%Y-%m-%d %H:%M:%S UTC", &tmv);
        as_html_kv(b, "generated", tmp);
    }
    if (info->seconds >= 0) {
        snprintf(tmp, sizeof tmp, "%.2f s", info->seconds);
        as_html_kv(b, "analysis time", tmp);
    }
}

static void provenance_table(ctx *c, const as_trace *tr, const as_report_info *info);

static void section_provenance(ctx *c, const as_trace *tr, const as_report_info *info)
{
    sec(c, "provenance", "Provenance", NULL);
    provenance_table(c, tr, info);
    as_html_section_end(c->b);
}

static void provenance_table(ctx *c, const as_trace *tr, const as_report_info *info)
{
    as_buf *b = c->b;
    as_html_kv_begin(b, NULL);
    as_html_kv_code(b, "trace file", as_trace_path(tr));
    char tmp[512];
    char *abs = realpath(as_trace_path(tr), NULL);
    if (abs) as_html_kv_code(b, "absolute path", abs);
    free(abs);
    snprintf(tmp, sizeof tmp, "%s, %llu bytes", as_trace_kind(tr),
             (unsigned long long)as_trace_file_bytes(tr));
    as_html_kv(b, "format", tmp);
    as_html_kv_code(b, "SHA-256", info->sha256);
    if (info->sha256_note) as_html_kv_code(b, "SHA-256 per file", info->sha256_note);
    as_html_kv(b, "model", as_trace_model(tr));
    static const char *const keys[] = {"prompt_name", "prompt_question", "model_answer",
                                       "capture_tool", "capture_device", "dtype",
                                       "transformers_version", "torch_version", NULL};
    for (int i = 0; keys[i]; i++)
        if (as_trace_meta(tr, keys[i])) as_html_kv(b, keys[i], as_trace_meta(tr, keys[i]));
    as_report_run_kv(b, info);
    as_html_kv_end(b);
    size_t nm = as_trace_n_meta(tr);
    if (nm > 0) {
        as_buf_printf(b, "<details><summary>trace metadata (%zu keys)</summary>\n", nm);
        as_html_kv_begin(b, NULL);
        for (size_t i = 0; i < nm; i++) {
            const as_meta *m = as_trace_meta_at(tr, i);
            as_html_kv(b, m->key, m->value);
        }
        as_html_kv_end(b);
        as_buf_puts(b, "</details>\n");
    }
}

/* ---------------------------------------------------------------- the page */

/* The end of every page: the footer (extra: a sentence after the common one), the closing
 * tags, and the buffer handed to the caller. what: "report" or "page", for the message. */
static as_status page_finish(as_buf *b, const char *extra, const ctx *c, const char *what,
                             char **html, size_t *len, int *n_figures, char *err)
{
    as_buf_puts(b, "<footer>Made by attnscope " AS_VERSION
                   ". Self-contained: figures are inline SVG drawn with PLplot; no scripts, "
                   "no network.");
    as_buf_puts(b, extra);
    as_buf_puts(b, "</footer>\n");
    as_html_end(b);
    size_t n;
    char *d = as_buf_take(b, &n);
    if (!d) return as_err_set(err, AS_ERR_NOMEM, "out of memory building the %s", what);
    *html = d;
    if (len) *len = n;
    if (n_figures) *n_figures = c->figures;
    return AS_OK;
}

static void header(ctx *c, const as_trace *tr, const as_summary *s, const as_report_info *info,
                   const char *title)
{
    as_buf *b = c->b;
    as_buf_puts(b, "<header>\n<h1>");
    as_buf_esc(b, title);
    as_buf_puts(b, "</h1>\n<p class=\"sub\">");
    as_buf_esc(b, as_trace_model(tr));
    const char *pn = as_trace_meta(tr, "prompt_name");
    if (pn) {
        as_buf_puts(b, " &middot; prompt ");
        as_buf_esc(b, pn);
    }
    as_buf_puts(b, " &middot; <code>");
    as_buf_esc(b, as_trace_path(tr));
    as_buf_puts(b, "</code></p>\n<nav>");
    static const char *const nav[][2] = {
        {"where", "where attention goes"}, {"entropy", "entropy & rank"},
        {"distributions", "distributions"}, {"sparsity", "error vs sparsity"},
        {"bottleneck", "bottleneck"},     {"spectrum", "spectrum"},
        {"summary", "summary"},           {"trace", "trace"},
        {"gpu", "GPU"},                   {"eval", "task accuracy"},
        {"provenance", "provenance"}};
    for (size_t i = 0; i < sizeof nav / sizeof nav[0]; i++) {
        if (strcmp(nav[i][0], "gpu") == 0 && !info->gpu_json) continue;
        if (strcmp(nav[i][0], "eval") == 0 && !info->eval_json) continue;
        as_buf_printf(b, "<a href=\"#%s%s\">%s</a>", c->idp ? c->idp : "", nav[i][0],
                      nav[i][1]);
    }
    as_buf_puts(b, "</nav>\n</header>\n<div class=\"cards\">\n");
    int64_t heads = 0, nmax = 0;
    for (size_t i = 0; i < s->n_layers; i++) {
        heads += s->layers[i].hq;
        if (s->layers[i].n > nmax) nmax = s->layers[i].n;
    }
    as_buf_printf(b, "<div class=\"card\"><b>%zu</b><span>layers captured</span></div>\n",
                  s->n_layers);
    as_buf_printf(b, "<div class=\"card\"><b>%lld</b><span>query heads in all</span></div>\n",
                  (long long)heads);
    as_buf_printf(b, "<div class=\"card\"><b>%lld</b><span>keys (context length N)</span></div>\n",
                  (long long)nmax);
    if (s->have_entropy) {
        double sum = 0;
        int64_t cnt = 0;
        for (size_t i = 0; i < s->n_layers; i++) {
            double m = as_sum_mean(s->layers[i].entropy_norm, s->layers[i].hq * s->layers[i].t);
            if (isfinite(m)) sum += m * (double)s->layers[i].hq, cnt += s->layers[i].hq;
        }
        as_buf_puts(b, "<div class=\"card\"><b>");
        as_buf_num(b, cnt ? sum / (double)cnt : NAN, 3);
        as_buf_puts(b, "</b><span>mean normalised entropy</span></div>\n");
    }
    if (s->have_sparsity && s->n_methods > 0) {
        int64_t tot = 0;
        for (size_t i = 0; i < s->n_layers; i++) tot += s->layers[i].hq;
        double *v = malloc(sizeof(double) * (size_t)(tot ? tot : 1));
        if (v) {
            int64_t k = 0;
            for (size_t i = 0; i < s->n_layers; i++)
                for (int64_t h = 0; h < s->layers[i].hq; h++) {
                    double x = s->layers[i].tol_5 ? s->layers[i].tol_5[h] : NAN;
                    v[k++] = isnan(x) ? 0 : x;
                }
            double med = as_sum_quantile(v, k, 0.5);
            as_buf_puts(b, "<div class=\"card\"><b>");
            put_tol(b, med > 0 ? med : NAN, s);
            as_buf_puts(b, "</b><span>median sparsity under 5% error (");
            as_buf_esc(b, method_title(s->method_names[0]));
            as_buf_puts(b, ")</span></div>\n");
            free(v);
        }
    }
    as_buf_puts(b, "</div>\n");
}

as_status as_report_html(const as_trace *tr, const as_summary *s, const as_report_info *info,
                         char **html, size_t *len, int *n_figures, char *err)
{
    *html = NULL;
    if (len) *len = 0;
    if (!as_plot_available(err)) return AS_ERR_USAGE;
    as_buf b;
    as_buf_init(&b);
    ctx c = {&b, 0, 0, NULL};
    char title[256];
    snprintf(title, sizeof title, "attnscope report: %s", as_trace_model(tr));
    as_html_begin(&b, title);
    as_report_trace_body(&c, tr, s, info, "Attention sparsity report");
    return page_finish(&b, " Palettes: Okabe-Ito (categories), viridis (values).", &c, "report",
                       html, len, n_figures, err);
}

void as_report_trace_body(as_report_page *c, const as_trace *tr, const as_summary *s,
                          const as_report_info *info, const char *title)
{
    header(c, tr, s, info, title);
    section_profile(c, tr, s);
    section_entropy(c, s);
    section_distributions(c, s);
    section_sparsity(c, s);
    section_bottleneck(c, s);
    section_spectrum(c, s);
    section_summary(c, s);
    section_overview(c, tr, s);
    section_gpu(c, info);
    section_eval(c, info);
    section_provenance(c, tr, info);
}

void as_report_gpu_section(as_report_page *p, const as_report_info *info) { section_gpu(p, info); }
void as_report_eval_section(as_report_page *p, const as_report_info *info)
{
    section_eval(p, info);
}

void as_report_figure(as_report_page *p, const char *id, char *svg, const char *caption,
                      const char *err)
{
    put_figure(p, id, svg, caption, err);
}

as_status as_report_page_finish(as_report_page *p, const char *extra, const char *what,
                                char **html, size_t *len, int *n_figures, char *err)
{
    return page_finish(p->b, extra, p, what, html, len, n_figures, err);
}

const char *as_report_method_title(const char *method) { return method_title(method); }
void as_report_put_tol(as_buf *b, double v, const as_summary *s) { put_tol(b, v, s); }


as_status as_report_eval_html(const as_report_info *info, char **html, size_t *len,
                              int *n_figures, char *err)
{
    *html = NULL;
    if (len) *len = 0;
    if (!as_plot_available(err)) return AS_ERR_USAGE;
    as_buf b;
    as_buf_init(&b);
    ctx c = {&b, 0, 0, NULL};
    as_html_begin(&b, "attnscope report: task accuracy under sparse decode");
    as_buf_puts(&b, "<header>\n<h1>Task accuracy under sparse decode</h1>\n<p class=\"sub\"><code>");
    as_buf_esc(&b, info->eval_json_path);
    as_buf_puts(&b, "</code></p>\n<nav><a href=\"#eval\">task accuracy</a>"
                    "<a href=\"#provenance\">provenance</a></nav>\n</header>\n");
    section_eval(&c, info);
    as_html_section(&b, "provenance", "Provenance", NULL);
    as_html_kv_begin(&b, NULL);
    as_html_kv_code(&b, "eval results", info->eval_json_path);
    as_html_kv(&b, "attnscope version", AS_VERSION);
    as_html_kv_code(&b, "command", info->command);
    char tmp[512];
    as_report_versions(tmp, sizeof tmp);
    as_html_kv(&b, "libraries", tmp);
    as_html_kv_end(&b);
    as_html_section_end(&b);
    return page_finish(&b, "", &c, "report", html, len, n_figures, err);
}

/* ---------------------------------------------------------------- comparison page */
static double depth_of(const as_trace *tr, int layer, int relative)
{
    if (!relative) return layer;
    double nl = atof(as_trace_meta(tr, "n_layers_model"));
    return nl > 1 ? layer / (nl - 1) : layer;
}

static void trace_label(const as_trace *tr, char *buf, size_t n)
{
    const char *pn = as_trace_meta(tr, "prompt_name");
    snprintf(buf, n, "%s%s%s", as_trace_model(tr), pn ? " / " : "", pn ? pn : "");
}

as_status as_report_compare_html(const as_trace *const tr[2], const as_summary *const s[2],
                                 const as_report_info info[2], char **html, size_t *len,
                                 int *n_figures, char *err)
{
    *html = NULL;
    if (len) *len = 0;
    if (!as_plot_available(err)) return AS_ERR_USAGE;
    as_buf buf;
    as_buf_init(&buf);
    as_buf *b = &buf;
    ctx c = {b, 0, 0, NULL};
    char la[2][300];
    for (int i = 0; i < 2; i++) trace_label(tr[i], la[i], sizeof la[i]);
    char title[700];
    snprintf(title, sizeof title, "attnscope compare: %s vs %s", la[0], la[1]);
    as_html_begin(b, title);
    as_buf_puts(b, "<header>\n<h1>Attention sparsity: two traces side by side</h1>\n"
                   "<nav><a href=\"#layers\">layer by layer</a><a href=\"#where\">where "
                   "attention goes</a><a href=\"#sparsity\">error vs sparsity</a>"
                   "<a href=\"#provenance\">provenance</a></nav>\n</header>\n");
    as_buf_puts(b, "<table><tr><th></th><th class=\"l\">model / prompt</th><th class=\"l\">"
                   "trace</th><th>layers</th></tr>\n");
    static const char *const tag[2] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        as_buf_printf(b, "<tr><td><b>%s</b></td><td class=\"l\">", tag[i]);
        as_buf_esc(b, la[i]);
        as_buf_puts(b, "</td><td class=\"l\"><code>");
        as_buf_esc(b, as_trace_path(tr[i]));
        as_buf_printf(b, "</code></td><td>%zu</td></tr>\n", s[i]->n_layers);
    }
    as_buf_puts(b, "</table>\n");

    /* layer by layer */
    int relative = as_trace_meta(tr[0], "n_layers_model") && as_trace_meta(tr[1], "n_layers_model");
    as_html_section(b, "layers", "Layer by layer",
                    relative ? "Each quantity of the per-layer summary (attnscope compare), "
                               "against relative depth (layer / (layers of the model - 1)) so "
                               "that models of different depth line up."
                             : "Each quantity of the per-layer summary (attnscope compare), "
                               "against the layer index.");
    as_html_grid_begin(b, 3);
    char err2[AS_ERR_LEN];
    for (int q = 0; q < AS_SUM_NQ; q++) {
        double *x[2] = {NULL, NULL}, *y[2] = {NULL, NULL};
        int any = 0, ok = 1;
        for (int i = 0; i < 2 && ok; i++) {
            size_t n = s[i]->n_layers ? s[i]->n_layers : 1;
            x[i] = malloc(n * sizeof(double));
            y[i] = malloc(n * sizeof(double));
            if (!x[i] || !y[i]) {
                ok = 0;
                break;
            }
            for (size_t li = 0; li < s[i]->n_layers; li++) {
                double v[AS_SUM_NQ];
                as_summary_layer_quantities(s[i], &s[i]->layers[li], v);
                x[i][li] = depth_of(tr[i], s[i]->layers[li].layer, relative);
                y[i][li] = v[q];
                any |= isfinite(v[q]);
            }
        }
        if (ok && any) {
            as_series ser[2] = {
                {"a", (int)s[0]->n_layers, x[0], y[0], NULL, NULL, 0, 0, 1, 2},
                {"b", (int)s[1]->n_layers, x[1], y[1], NULL, NULL, 1, 1, 1, 2}};
            int logy = q == 7 || q == 8 || q == 2 || q == 3;
            as_lineplot lp = {.f = {440, 320, as_sum_qnames[q],
                                    relative ? "relative depth" : "layer", as_sum_qtitles[q]},
                              .nseries = 2, .s = ser, .logy = logy, .legend_pos = 0};
            char id[48];
            snprintf(id, sizeof id, "cmp-%s", as_sum_qnames[q]);
            put_figure(&c, id, as_plot_lines(&lp, err2), NULL, err2);
        }
        for (int i = 0; i < 2; i++) free(x[i]), free(y[i]);
    }
    as_html_grid_end(b);
    for (int i = 0; i < 2; i++)
        if (s[i]->left_out[0]) {
            char note[sizeof s[i]->left_out + 8];
            snprintf(note, sizeof note, "%s: %s", tag[i], s[i]->left_out);
            as_html_note(b, note);
        }
    as_html_section_end(b);

    /* profiles */
    as_html_section(b, "where", "Where attention goes",
                    "Mean attention weight per key position, one line per layer.");
    as_html_grid_begin(b, 2);
    for (int i = 0; i < 2; i++) {
        char t[700], id[16];
        snprintf(t, sizeof t, "%s: %.60s%s", tag[i], la[i], strlen(la[i]) > 60 ? "..." : "");
        snprintf(id, sizeof id, "profile-%s", tag[i]);
        profile_figure(&c, tr[i], s[i], id, t);
    }
    as_html_grid_end(b);
    as_html_section_end(b);

    /* sparsity: both traces on one plot per method */
    as_html_section(b, "sparsity", "Error versus sparsity",
                    "Median over all heads of the relative output error (solid: a, dashed: b) "
                    "for each selection method.");
    if (s[0]->have_sparsity && s[1]->have_sparsity && s[0]->n_levels == s[1]->n_levels &&
        s[0]->n_methods == s[1]->n_methods) {
        int nl = s[0]->n_levels;
        int64_t th = total_heads(s[0]) > total_heads(s[1]) ? total_heads(s[0]) : total_heads(s[1]);
        double *all = malloc(sizeof(double) * (size_t)(th ? th : 1));
        double *cur = malloc(sizeof(double) * (size_t)nl * 4);
        if (all && cur) {
            as_html_grid_begin(b, 3);
            for (int m = 0; m < s[0]->n_methods; m++) {
                sparsity_curves(s[0], m, all, cur, NULL, NULL, cur + nl);
                sparsity_curves(s[1], m, all, cur + 2 * nl, NULL, NULL, cur + 3 * nl);
                as_series ser[2] = {{"a", nl, s[0]->levels, cur, NULL, NULL, 0, 0, 1, 2},
                                    {"b", nl, s[1]->levels, cur + 2 * nl, NULL, NULL, 1, 1, 1, 2}};
                static const double hl[2] = {0.01, 0.05};
                static const char *const hn[2] = {"1%", "5%"};
                static const double ticks[] = {2, 5, 10, 20, 50, 100};
                as_lineplot lp = {.f = {440, 340, method_title(s[0]->method_names[m]),
                                        "sparsity N / k", "relative output error"},
                                  .nseries = 2, .s = ser, .logx = 1, .logy = 1, .nhlines = 2,
                                  .hlines = hl, .hline_names = hn, .legend_pos = 1,
                                  .xtick_values = ticks, .nxtick_values = 6, .xtick_suffix = "x",
                                  .ypercent = 1};
                char id[32];
                snprintf(id, sizeof id, "cmp-sparsity-%d", m);
                put_figure(&c, id, as_plot_lines(&lp, err2), NULL, err2);
            }
            as_html_grid_end(b);
        }
        free(all);
        free(cur);
    } else {
        as_html_note(b, s[0]->have_sparsity ? "the two traces were swept differently"
                                             : s[0]->missing[3]);
    }
    as_html_section_end(b);

    as_html_section(b, "provenance", "Provenance", NULL);
    for (int i = 0; i < 2; i++) {
        as_buf_printf(b, "<h3>%s</h3>\n", tag[i]);
        provenance_table(&c, tr[i], &info[i]);
    }
    as_html_section_end(b);
    return page_finish(b, "", &c, "page", html, len, n_figures, err);
}

/* The command line as typed, shell-quoted where needed. */
char *as_report_command_line(int argc, char **argv)
{
    size_t n = 32;
    for (int i = 0; i < argc; i++) n += 4 * strlen(argv[i]) + 3;
    char *s = malloc(n), *p = s;
    if (!s) return NULL;
    p += sprintf(p, "attnscope");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int plain = *a != '\0';
        for (const char *q = a; *q; q++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+%@",
                        *q))
                plain = 0;
        *p++ = ' ';
        if (plain) {
            p += sprintf(p, "%s", a);
        } else {
            *p++ = '\'';
            for (const char *q = a; *q; q++) {
                if (*q == '\'') {
                    memcpy(p, "'\\''", 4);
                    p += 4;
                } else {
                    *p++ = *q;
                }
            }
            *p++ = '\'';
            *p = '\0';
        }
    }
    return s;
}
