/* as_study: the page of several traces: the cross-trace summary, each trace's report, the
 * provenance of every file. */
#include "as_study.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_html.h"
#include "as_plot.h"

void as_study_label(const as_trace *tr, char *buf, size_t n)
{
    const char *pn = as_trace_meta(tr, "prompt_name");
    snprintf(buf, n, "%s%s%s", as_trace_model(tr), pn ? " / " : "", pn ? pn : "");
}

/* The methods shown: those of the first trace with a sparsity sweep (every trace's report runs
 * the same sweep); NULL when none has one. */
static const as_summary *method_source(const as_study_trace *t, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (t[k].s->have_sparsity && t[k].s->n_methods > 0) return t[k].s;
    return NULL;
}

/* Method `name`'s slot in s, -1 when s has no such method. */
static int method_slot(const as_summary *s, const char *name)
{
    for (int m = 0; s->have_sparsity && m < s->n_methods; m++)
        if (strcmp(s->method_names[m], name) == 0) return m;
    return -1;
}

static int64_t max_keys(const as_summary *s)
{
    int64_t n = 0;
    for (size_t i = 0; i < s->n_layers; i++)
        if (s->layers[i].n > n) n = s->layers[i].n;
    return n;
}

/* ---------------------------------------------------------------- across traces */
static void across_head(as_buf *b, const as_summary *ms)
{
    const int nm = ms ? ms->n_methods : 0;
    const char *rs = nm ? " rowspan=\"2\"" : "";
    as_buf_printf(b, "<div class=\"wide\"><table class=\"across\"><tr><th%s>#</th>"
                     "<th%s class=\"l\">model</th>"
                     "<th%s class=\"l\">prompt</th><th%s>keys N</th><th%s>layers</th>",
                  rs, rs, rs, rs, rs);
    for (int m = 0; m < nm; m++) {
        as_buf_puts(b, "<th colspan=\"3\" class=\"c\">");
        as_buf_esc(b, as_report_method_title(ms->method_names[m]));
        as_buf_puts(b, "</th>");
    }
    as_buf_puts(b, "</tr>\n");
    if (!nm) return;
    as_buf_puts(b, "<tr>");
    for (int m = 0; m < nm; m++)
        as_buf_puts(b, "<th class=\"nw\">&lt; 1%</th><th class=\"nw\">&lt; 5%</th>"
                       "<th class=\"nw\">dense</th>");
    as_buf_puts(b, "</tr>\n");
}

/* One trace's row: the numbers of its own report's "Per method, over all heads" table. */
static void across_row(as_buf *b, const as_study_trace *t, size_t k, const as_summary *ms)
{
    const as_summary *s = t->s;
    const char *pn = as_trace_meta(t->tr, "prompt_name");
    as_buf_printf(b, "<tr><td><a href=\"#t%zu\">%zu</a></td><td class=\"l\">", k + 1, k + 1);
    as_buf_esc(b, as_trace_model(t->tr));
    as_buf_puts(b, "</td><td class=\"l\">");
    as_buf_esc(b, pn ? pn : "n/a");
    as_buf_printf(b, "</td><td>%lld</td><td>%zu</td>", (long long)max_keys(s), s->n_layers);
    for (int mm = 0; ms && mm < ms->n_methods; mm++) {
        int m = method_slot(s, ms->method_names[mm]);
        if (m < 0) {
            as_buf_puts(b, "<td>n/a</td><td>n/a</td><td>n/a</td>");
            continue;
        }
        as_buf_puts(b, "<td>");
        as_report_put_tol(b, s->m_sparsity_1[m] > 1 ? s->m_sparsity_1[m] : NAN, s);
        as_buf_puts(b, "</td><td>");
        as_report_put_tol(b, s->m_sparsity_5[m] > 1 ? s->m_sparsity_5[m] : NAN, s);
        as_buf_printf(b, "</td><td>%lld</td>", (long long)s->m_dense_heads[m]);
    }
    as_buf_puts(b, "</tr>\n");
}

/* v[k * nm + m]: trace k's median tolerated sparsity of method m at `pct`% error (NaN under
 * the sweep's least sparsity: no bar). Returns 1 when some value is finite. */
static int bar_values(const as_study_trace *t, size_t n, const as_summary *ms, int pct,
                      double *v)
{
    const int nm = ms->n_methods;
    int any = 0;
    for (size_t k = 0; k < n; k++)
        for (int mm = 0; mm < nm; mm++) {
            const as_summary *s = t[k].s;
            int m = method_slot(s, ms->method_names[mm]);
            double x = m < 0 ? NAN : pct == 1 ? s->m_sparsity_1[m] : s->m_sparsity_5[m];
            v[k * (size_t)nm + (size_t)mm] = x > 1 ? x : NAN;
            any |= x > 1;
        }
    return any;
}

/* Median tolerated sparsity at error threshold `pct` (1 or 5): traces x methods as bars. */
static void across_figure(as_report_page *p, const as_study_trace *t, size_t n,
                          const as_summary *ms, int pct)
{
    const int nm = ms->n_methods;
    double *v = malloc(sizeof(double) * n * (size_t)nm);
    char(*gn)[24] = malloc(24 * n);
    const char **gp = malloc(sizeof *gp * n);
    const char *sn[AS_SUM_MAX_METHODS];
    char err[AS_ERR_LEN], title[128], id[32];
    if (v && gn && gp && !bar_values(t, n, ms, pct, v)) {
        snprintf(title, sizeof title, "No trace keeps a median error under %d%% at the "
                 "sweep's least sparsity: no figure.", pct);
        as_html_note(p->b, title);
    } else if (v && gn && gp) {
        for (int m = 0; m < nm; m++) sn[m] = ms->method_names[m]; /* short: the legend's row */
        for (size_t k = 0; k < n; k++) {
            snprintf(gn[k], sizeof gn[k], "%zu", k + 1);
            gp[k] = gn[k];
        }
        snprintf(title, sizeof title, "Median sparsity under %d%% error", pct);
        snprintf(id, sizeof id, "across-sparsity-%d", pct);
        double top = ms->n_levels ? ms->levels[ms->n_levels - 1] * 1.5 : 0;
        as_barplot bp = {{640, 400, title, "trace (# of the table)", "sparsity N / k"},
                         (int)n, nm, gp, sn, v, 1, 1, top};
        as_report_figure(p, id, as_plot_bars(&bp, err),
                         "Per trace and method: the median over all heads of the largest "
                         "sparsity whose error stays under the threshold; no bar: under the "
                         "sweep's least sparsity (the table's \"<\").", err);
    }
    free(v);
    free(gn);
    free(gp);
}

static void section_across(as_report_page *p, const as_study_trace *t, size_t n)
{
    as_buf *b = p->b;
    as_html_section(b, "across", "Across traces",
                    "Each trace's model-level numbers, as its own section \"Error versus "
                    "sparsity\" shows them: per selection method, the median over all heads of "
                    "the largest sparsity N / k whose relative output error stays under 1% and "
                    "5%, and the heads that no sparsity of the sweep serves under 5% (they need "
                    "dense attention). N: the most keys of a captured layer.");
    const as_summary *ms = method_source(t, n);
    across_head(b, ms);
    for (size_t k = 0; k < n; k++) across_row(b, &t[k], k, ms);
    as_buf_puts(b, "</table></div>\n");
    if (!ms) {
        as_html_note(b, t[0].s->missing[3][0] ? t[0].s->missing[3]
                                             : "no trace has a sparsity sweep");
    } else {
        as_html_grid_begin(b, 2);
        across_figure(p, t, n, ms, 1);
        across_figure(p, t, n, ms, 5);
        as_html_grid_end(b);
    }
    as_html_section_end(b);
}

/* ---------------------------------------------------------------- the page */
/* The cross-trace table scrolls rather than widen the page, names wrap; a trace's part starts
 * well below the one before. */
static const char study_css[] = ".wide{overflow-x:auto;max-width:100%}"
                                "table.across td.l{white-space:normal;min-width:9em}"
                                "article{margin-top:56px}";

static void page_header(as_buf *b, const as_study_trace *t, size_t n, const as_report_info *info)
{
    as_buf_printf(b, "<header>\n<h1>Attention sparsity across %zu traces</h1>\n"
                     "<p class=\"sub\">", n);
    for (size_t k = 0; k < n; k++) {
        char la[300];
        as_study_label(t[k].tr, la, sizeof la);
        as_buf_printf(b, "%s%zu: ", k ? " &middot; " : "", k + 1);
        as_buf_esc(b, la);
    }
    as_buf_puts(b, "</p>\n<nav><a href=\"#across\">across traces</a>");
    for (size_t k = 0; k < n; k++)
        as_buf_printf(b, "<a href=\"#t%zu\">trace %zu</a>", k + 1, k + 1);
    if (info->gpu_json) as_buf_puts(b, "<a href=\"#gpu\">GPU</a>");
    if (info->eval_json) as_buf_puts(b, "<a href=\"#eval\">task accuracy</a>");
    as_buf_puts(b, "<a href=\"#provenance\">provenance</a></nav>\n</header>\n");
}

/* Trace k's report as `attnscope report` makes it alone, its ids prefixed "tK-". */
static void trace_part(as_report_page *p, const as_study_trace *t, size_t k, size_t n,
                       const as_report_info *info)
{
    char idp[32], title[64];
    snprintf(idp, sizeof idp, "t%zu-", k + 1);
    snprintf(title, sizeof title, "Trace %zu of %zu", k + 1, n);
    as_report_info ti = {info->command, NULL, NULL, t->sha256, t->sha256_note, -1, NULL, NULL};
    as_buf_printf(p->b, "<article id=\"t%zu\">\n", k + 1);
    p->idp = idp;
    as_report_trace_body(p, t->tr, t->s, &ti, title);
    p->idp = NULL;
    as_buf_puts(p->b, "</article>\n");
}

static void esc_n(as_buf *b, const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (!c) {
        b->oom = 1;
        return;
    }
    memcpy(c, s, n);
    c[n] = '\0';
    as_buf_esc(b, c);
    free(c);
}

/* One row per file: a safetensors trace, or each file of an .npy directory ("HEX  NAME"). */
static void provenance_files(as_buf *b, const as_study_trace *t, size_t n)
{
    as_buf_puts(b, "<table><tr><th>#</th><th class=\"l\">file</th><th class=\"l\">SHA-256</th>"
                   "</tr>\n");
    for (size_t k = 0; k < n; k++) {
        as_buf_printf(b, "<tr><td>%zu</td><td class=\"l\"><code>", k + 1);
        as_buf_esc(b, as_trace_path(t[k].tr));
        as_buf_puts(b, t[k].sha256_note ? "</code> (the list below)" : "</code>");
        as_buf_puts(b, "</td><td class=\"l\"><code>");
        as_buf_esc(b, t[k].sha256);
        as_buf_puts(b, "</code></td></tr>\n");
        for (const char *l = t[k].sha256_note; l && *l;) {
            const char *e = strchr(l, '\n'), *sp = strstr(l, "  ");
            size_t ll = e ? (size_t)(e - l) : strlen(l);
            if (sp && sp < l + ll) {
                as_buf_printf(b, "<tr><td>%zu</td><td class=\"l\"><code>", k + 1);
                as_buf_esc(b, as_trace_path(t[k].tr));
                as_buf_puts(b, "/");
                esc_n(b, sp + 2, (size_t)(l + ll - sp - 2));
                as_buf_puts(b, "</code></td><td class=\"l\"><code>");
                esc_n(b, l, (size_t)(sp - l));
                as_buf_puts(b, "</code></td></tr>\n");
            }
            l += ll + (e ? 1 : 0);
        }
    }
    as_buf_puts(b, "</table>\n");
}

static void section_provenance(as_buf *b, const as_study_trace *t, size_t n,
                               const as_report_info *info)
{
    as_html_section(b, "provenance", "Provenance",
                    "Every trace file with its SHA-256 (each trace's own provenance, with its "
                    "metadata, closes its part of the page).");
    provenance_files(b, t, n);
    as_html_kv_begin(b, NULL);
    as_report_run_kv(b, info);
    as_html_kv_end(b);
    as_html_section_end(b);
}

as_status as_study_html(const as_study_trace *t, size_t n, const as_report_info *info,
                        char **html, size_t *len, int *n_figures, char *err)
{
    *html = NULL;
    if (len) *len = 0;
    if (n == 0) return as_err_set(err, AS_ERR_USAGE, "a study needs at least one trace");
    if (!as_plot_available(err)) return AS_ERR_USAGE;
    as_buf b;
    as_buf_init(&b);
    as_report_page p = {&b, 0, 0, NULL};
    char title[96];
    snprintf(title, sizeof title, "attnscope report: %zu traces", n);
    as_html_begin_css(&b, title, study_css);
    page_header(&b, t, n, info);
    section_across(&p, t, n);
    for (size_t k = 0; k < n; k++) trace_part(&p, &t[k], k, n, info);
    as_report_gpu_section(&p, info);
    as_report_eval_section(&p, info);
    section_provenance(&b, t, n, info);
    return as_report_page_finish(&p, " Palettes: Okabe-Ito (categories), viridis (values).",
                                 "report", html, len, n_figures, err);
}
