/* Tests of report/as_study: the page of several traces built from their summaries. One
 * self-contained document (no script, no external resource, one inline SVG per figure); the
 * cross-trace table first, one row per trace with each trace's model-level numbers as its own
 * report shows them; each trace's part holding its sections under ids of its own (no id twice
 * on the page); the GPU section once; every file's SHA-256 in the provenance. The command
 * (`attnscope report A B`) is tests/test_report.py's. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_report.h"
#include "as_study.h"
#include "as_summary.h"
#include "as_testutil.h"
#include "as_trace.h"

static size_t count(const char *s, const char *needle)
{
    size_t c = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) c++;
    return c;
}

/* A trace whose attention is peaked (a large score scale): sparse enough for bars. */
static as_trace *small_trace(const char *name, uint64_t seed, int64_t n, as_summary **s)
{
    as_test_trace_spec sp = {.n_layers = 2, .hq = 4, .hkv = 2, .t = 4, .n = n, .d = 16,
                             .dtype = AS_DT_F32, .causal = 1, .seed = seed,
                             .model = seed % 2 ? "model-a" : "model-b", .scale = 2.5};
    as_trace *tr = as_test_open_new_trace(name, &sp);
    cr_assert(tr);
    char err[AS_ERR_LEN];
    as_summary_opts o;
    as_summary_opts_init(&o);
    o.witness = 0;
    *s = as_summary_compute(tr, &o, err);
    cr_assert(*s, "%s", err);
    return tr;
}

/* Every section's and article's id, and every figure's data-plot, is there once (inside the
 * SVGs PLplot's own ids are numbered per figure: not ours). */
static void check_ids_unique(const char *html)
{
    static const char *const attrs[] = {"<section id=\"", "<article id=\"", "data-plot=\""};
    for (size_t a = 0; a < 3; a++)
        for (const char *p = strstr(html, attrs[a]); p; p = strstr(p + 1, attrs[a])) {
            const char *v = p + strlen(attrs[a]), *q = strchr(v, '"');
            cr_assert(q);
            char needle[160];
            snprintf(needle, sizeof needle, "%s%.*s\"", attrs[a], (int)(q - v), v);
            cr_assert_eq(count(html, needle), 1, "%s twice", needle);
        }
}

/* The row of trace k (1-based) of the cross-trace table. */
static char *across_row(const char *html, int k)
{
    char start[64];
    snprintf(start, sizeof start, "<tr><td><a href=\"#t%d\">%d</a></td>", k, k);
    const char *p = strstr(html, start);
    cr_assert(p, "no row %d", k);
    const char *e = strstr(p, "</tr>");
    return strndup(p, (size_t)(e - p));
}

/* The cells of method `title` in a trace's own "Per method, over all heads" table. */
static void own_cells(const char *html, const char *idp, const char *title, char *out, size_t n)
{
    char sec[64], row[160];
    snprintf(sec, sizeof sec, "<section id=\"%ssparsity\">", idp);
    const char *p = strstr(html, sec);
    cr_assert(p, "no %s", sec);
    snprintf(row, sizeof row, "<tr><td class=\"l\">%s</td><td>", title);
    p = strstr(p, row);
    cr_assert(p, "no row %s", title);
    p += strlen(row);
    /* 1%, 5%, dense heads */
    const char *e = p;
    for (int i = 0; i < 3; i++) e = strstr(e, "</td>") + (i < 2 ? 9 : 0);
    snprintf(out, n, "<td>%.*s</td>", (int)(e - p), p);
}

Test(study, two_traces_page, .timeout = 600)
{
    as_summary *s[2];
    as_trace *tr[2];
    tr[0] = small_trace("stA.st", 11, 96, &s[0]);
    tr[1] = small_trace("stB.st", 12, 160, &s[1]);
    as_study_trace t[2] = {
        {tr[0], s[0], "aaaa000000000000000000000000000000000000000000000000000000000000", NULL},
        {tr[1], s[1], "bbbb000000000000000000000000000000000000000000000000000000000000",
         "1111  layers.0.q.npy\n2222  metadata.json\n"}};
    as_report_info info = {.command = "attnscope report stA.st stB.st -o s.html",
                           .gpu_json = "{\"records\": []}", .gpu_json_path = "gpu.json",
                           .seconds = 2.5};
    char *html = NULL, err[AS_ERR_LEN];
    size_t len = 0;
    int nfig = -1;
    cr_assert_eq(as_study_html(t, 2, &info, &html, &len, &nfig, err), AS_OK, "%s", err);
    cr_assert_eq(strlen(html), len);
    cr_assert(!strstr(html, "<script") && !strstr(html, "<img") && !strstr(html, "src="));
    cr_assert_eq(count(html, "<svg"), (size_t)nfig);
    /* the order: across, trace 1, trace 2, GPU once, provenance */
    const char *across = strstr(html, "<section id=\"across\">");
    const char *p1 = strstr(html, "<article id=\"t1\">"), *p2 = strstr(html, "<article id=\"t2\">");
    const char *gpu = strstr(html, "<section id=\"gpu\">");
    const char *prov = strstr(html, "<section id=\"provenance\">");
    cr_assert(across && p1 && p2 && gpu && prov);
    cr_assert(across < p1 && p1 < p2 && p2 < gpu && gpu < prov);
    cr_assert_eq(count(html, "<section id=\"gpu\">"), 1);
    cr_assert(strstr(html, "data-plot=\"across-sparsity-1\"") &&
              strstr(html, "data-plot=\"across-sparsity-5\""));
    cr_assert(strstr(p1, "<section id=\"t1-sparsity\">"));
    cr_assert(strstr(p2, "<section id=\"t2-sparsity\">"));
    cr_assert(strstr(p1, "<h1>Trace 1 of 2</h1>") && strstr(p2, "<h1>Trace 2 of 2</h1>"));
    cr_assert(strstr(p1, "href=\"#t1-summary\""));
    check_ids_unique(html);
    char la[64];
    as_study_label(tr[1], la, sizeof la);
    cr_assert_str_eq(la, "model-b");
    cr_assert(strstr(html, "<p class=\"sub\">1: model-a &middot; 2: model-b</p>"));
    /* each row holds the numbers of its trace's own table, keys N and layers */
    for (int k = 0; k < 2; k++) {
        char *row = across_row(html, k + 1), idp[8], cells[256];
        snprintf(idp, sizeof idp, "t%d-", k + 1);
        char nl[64];
        snprintf(nl, sizeof nl, "<td>%d</td><td>2</td>", k ? 160 : 96);
        cr_assert(strstr(row, nl), "%s", row);
        for (int m = 0; m < s[k]->n_methods; m++) {
            own_cells(html, idp, as_report_method_title(s[k]->method_names[m]), cells,
                      sizeof cells);
            cr_assert(strstr(row, cells), "trace %d, %s: %s not in %s", k + 1,
                      s[k]->method_names[m], cells, row);
        }
        free(row);
    }
    /* provenance: every file with its checksum, the command, the time once */
    cr_assert(strstr(prov, "aaaa0000") && strstr(prov, "bbbb0000"));
    cr_assert(strstr(prov, "metadata.json</code></td><td class=\"l\"><code>2222</code>"));
    cr_assert(strstr(prov, info.command));
    cr_assert_eq(count(html, "<td>analysis time</td>"), 1);
    free(html);
    for (int i = 0; i < 2; i++) {
        as_summary_free(s[i]);
        as_trace_free(tr[i]);
    }
}

Test(study, no_traces)
{
    char *html = (char *)1, err[AS_ERR_LEN];
    as_report_info info = {.command = "attnscope report", .seconds = -1};
    cr_assert_eq(as_study_html(NULL, 0, &info, &html, NULL, NULL, err), AS_ERR_USAGE);
    cr_assert_null(html);
}
