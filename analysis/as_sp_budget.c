#include "as_sp_budget.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- method names ---------------------------------------------------------------------------- */

static const char *const method_names[AS_SP_N_METHODS] = {"topk", "sink-window", "page",
                                                          "uniform", "topk-sample", "index",
                                                          "page-sample", "page-is"};

const char *as_sp_method_name(as_sp_method m)
{
    return m >= 0 && m < AS_SP_N_METHODS ? method_names[m] : "?";
}

int as_sp_method_parse(const char *s, as_sp_method *m)
{
    static const struct {
        const char *name;
        as_sp_method m;
    } alias[] = {{"oracle", AS_SP_TOPK},           {"top-k", AS_SP_TOPK},
                 {"streamingllm", AS_SP_SINK_WINDOW}, {"sink", AS_SP_SINK_WINDOW},
                 {"window", AS_SP_SINK_WINDOW},   {"quest", AS_SP_PAGE},
                 {"sample", AS_SP_UNIFORM},       {"vattention", AS_SP_TOPK_SAMPLE},
                 {"topk+sample", AS_SP_TOPK_SAMPLE}, {"page+sample", AS_SP_PAGE_SAMPLE},
                 {"quest+sample", AS_SP_PAGE_SAMPLE}, {"quest-is", AS_SP_PAGE_IS}};
    for (int i = 0; i < AS_SP_N_METHODS; i++)
        if (strcmp(s, method_names[i]) == 0) {
            *m = (as_sp_method)i;
            return 0;
        }
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
        if (strcmp(s, alias[i].name) == 0) {
            *m = alias[i].m;
            return 0;
        }
    return -1;
}

/* ---- page bound storage --------------------------------------------------------------------- */

static const char *const bounds_names[] = {"exact", "f32", "bf16"};

const char *as_sp_bounds_name(as_sp_bounds f)
{
    return f >= AS_SP_BOUNDS_EXACT && f <= AS_SP_BOUNDS_BF16 ? bounds_names[f] : "?";
}

int as_sp_bounds_parse(const char *s, as_sp_bounds *f)
{
    static const struct {
        const char *name;
        as_sp_bounds f;
    } names[] = {{"exact", AS_SP_BOUNDS_EXACT}, {"f64", AS_SP_BOUNDS_EXACT},
                 {"f32", AS_SP_BOUNDS_F32},     {"float32", AS_SP_BOUNDS_F32},
                 {"bf16", AS_SP_BOUNDS_BF16},   {"bfloat16", AS_SP_BOUNDS_BF16}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *f = names[i].f;
            return 0;
        }
    return -1;
}

int as_sp_method_is_sampling(as_sp_method m)
{
    return m == AS_SP_UNIFORM || m == AS_SP_TOPK_SAMPLE || m == AS_SP_PAGE_SAMPLE ||
           m == AS_SP_PAGE_IS;
}

void as_sp_params_init(as_sp_params *p)
{
    p->sinks = 4;
    p->page_size = 16;
    p->heavy_frac = 0.5;
    p->delta = 0.05;
    p->seed = 0;
    p->index = NULL;
    p->page_bounds = AS_SP_BOUNDS_EXACT;
    p->is_temp = 1.0;
    p->is_mix = 0.1;
    p->is_score = AS_SP_IS_CENTER;
    p->is_draw = AS_SP_IS_POISSON;
}


int64_t as_budget_keys(as_budget b, int64_t n)
{
    if (n <= 0) return 0;
    int64_t k;
    if (b.count > 0)
        k = b.count;
    else {
        double x = b.frac * (double)n;
        k = (int64_t)ceil(x - 1e-9 * x);
    }
    if (k < 1) k = 1;
    if (k > n) k = n;
    return k;
}

as_status as_budget_parse_list(const char *s, int sparsity, as_budget *out, size_t max,
                               size_t *n_out, char *err)
{
    size_t n = 0;
    const char *p = s;
    if (!s || !*s) return as_err_set(err, AS_ERR_USAGE, "empty budget list");
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char tok[64];
        if (len == 0 || len >= sizeof tok)
            return as_err_set(err, AS_ERR_USAGE, "bad %s entry in '%s'",
                              sparsity ? "sparsity" : "budget", s);
        memcpy(tok, p, len);
        tok[len] = '\0';
        if (n >= max) return as_err_set(err, AS_ERR_USAGE, "more than %zu budgets", max);
        as_budget b = {0, 0};
        char *end;
        double v = strtod(tok, &end);
        int bad = end == tok || !isfinite(v);
        if (!bad && sparsity) {
            if (*end == 'x' || *end == 'X') end++;
            bad = *end != '\0' || v < 1.0;
            b.frac = 1.0 / v;
        } else if (!bad) {
            if (*end == '%') {
                end++;
                v /= 100.0;
                bad = *end != '\0' || v <= 0 || v > 1;
                b.frac = v;
            } else if (*end == '/') {
                char *e2;
                double den = strtod(end + 1, &e2);
                bad = e2 == end + 1 || *e2 != '\0' || !(den > 0) || v <= 0 || v > den;
                b.frac = v / den;
            } else if (*end != '\0') {
                bad = 1;
            } else if (!strchr(tok, '.') && !strchr(tok, 'e') && !strchr(tok, 'E') && v >= 1) {
                b.count = (int64_t)v;
                bad = (double)b.count != v || v > 9.0e15;
            } else {
                bad = v <= 0 || v > 1;
                b.frac = v;
            }
        }
        if (bad)
            return as_err_set(err, AS_ERR_USAGE,
                              sparsity ? "bad sparsity '%s' (expected e.g. 50x, at least 1x)"
                                       : "bad budget '%s' (expected a fraction in (0,1] such as "
                                         "0.02, 2%% or 1/50, or a key count such as 128)",
                              tok);
        out[n++] = b;
        p += len;
        if (*p == ',' && *++p == '\0')
            return as_err_set(err, AS_ERR_USAGE, "trailing comma in '%s'", s);
    }
    *n_out = n;
    return AS_OK;
}

/* ---- the page width rule --------------------------------------------------------------------- */

int64_t as_sp_page_size(const as_sp_params *p) { return p->page_size > 0 ? p->page_size : 16; }

int64_t as_sp_page_count(as_budget b, int64_t n, int64_t P)
{
    if (n <= 0 || P <= 0) return 0;
    int64_t k = as_budget_keys(b, n);
    int64_t want = k >= n ? (n + P - 1) / P : k / P; /* whole pages within the budget */
    return want < 1 ? 1 : want;
}

int64_t as_sp_sel_width(as_sp_method m, as_budget b, const as_sp_params *p, int64_t n)
{
    if (m == AS_SP_INDEX) return 0;
    /* page-is's Poisson sample keeps k keys on average, any number up to n in a draw */
    if (m == AS_SP_PAGE_IS && p->is_draw == AS_SP_IS_POISSON) return n > 0 ? n : 0;
    if (m != AS_SP_PAGE) return as_budget_keys(b, n);
    const int64_t P = as_sp_page_size(p), keys = as_sp_page_count(b, n, P) * P;
    return keys < n ? keys : n;
}

int64_t as_sp_layer_width(const as_layer *l, as_sp_method m, as_budget b, const as_sp_params *p)
{
    if (m == AS_SP_INDEX) return as_index_width(p->index, l->index);
    int64_t w = 0;
    for (int64_t qi = 0; qi < l->t; qi++) {
        int64_t x = as_sp_sel_width(m, b, p, as_layer_visible(l, qi));
        if (x > w) w = x;
    }
    return w;
}

size_t as_budget_default_sweep(as_budget *out, size_t max)
{
    static const double x[] = {2, 3, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100};
    size_t n = 0;
    for (size_t i = 0; i < sizeof x / sizeof x[0] && n < max; i++)
        out[n++] = (as_budget){1.0 / x[i], 0};
    return n;
}
