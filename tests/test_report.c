/* Tests of report/as_report: the command line as shown in the provenance (shell quoting), the
 * library versions line, and the structure of the pages it builds from an as_summary: one
 * self-contained document (no script, no external resource), one inline SVG per figure drawn,
 * the provenance it was given, every section of the single-trace page, and the comparison page
 * naming both traces. The report as a person uses it (`attnscope report`, headless browser) is
 * tests/test_report.py's. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_digest.h"
#include "as_report.h"
#include "as_summary.h"
#include "as_testutil.h"
#include "as_trace.h"

static size_t count(const char *s, const char *needle)
{
    size_t c = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) c++;
    return c;
}

Test(report, command_line_quoting)
{
    char *argv[] = {"report", "a b.st", "-o", "x'y.html", "--layer=3", "", "50%,2x"};
    char *s = as_report_command_line(7, argv);
    cr_assert(s);
    cr_assert_str_eq(s, "attnscope report 'a b.st' -o 'x'\\''y.html' --layer=3 '' 50%,2x");
    free(s);
    s = as_report_command_line(0, NULL);
    cr_assert_str_eq(s, "attnscope");
    free(s);
}

Test(report, versions_line)
{
    char buf[256], want[64];
    as_report_versions(buf, sizeof buf);
    cr_assert(strncmp(buf, "PLplot ", 7) == 0, "%s", buf);
    cr_assert(strstr(buf, "(svg driver)"), "%s", buf);
    cr_assert(strstr(buf, as_digest_library()), "%s", buf);
    snprintf(want, sizeof want, "cJSON %d.%d.%d", CJSON_VERSION_MAJOR, CJSON_VERSION_MINOR,
             CJSON_VERSION_PATCH);
    cr_assert(strstr(buf, want), "%s", buf);
    char small[8];
    as_report_versions(small, sizeof small); /* truncated, terminated */
    cr_assert_eq(strlen(small), 7);
}

static as_trace *small_trace(const char *name, uint64_t seed, as_summary **s)
{
    as_test_trace_spec sp = {.n_layers = 2, .hq = 4, .hkv = 2, .t = 4, .n = 96, .d = 16,
                             .dtype = AS_DT_F32, .causal = 1, .seed = seed};
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

/* Self-contained: no script, no external resource (url() only to the page's own ids); one
 * inline <svg> per figure. */
static void check_page(const char *html, size_t len, int n_fig)
{
    cr_assert_eq(strlen(html), len);
    cr_assert(strncmp(html, "<!DOCTYPE html>", 15) == 0, "%.40s", html);
    cr_assert(strstr(html, "</html>"));
    const char *bad[] = {"<script", "<img", "<link", "<iframe", "src=", "@import"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert(!strstr(html, bad[i]), "page holds %s", bad[i]);
    for (const char *u = strstr(html, "url("); u; u = strstr(u + 1, "url("))
        cr_assert_eq(u[4], '#', "url() to outside the page: %.40s", u); /* SVG ids only */
    cr_assert(n_fig > 0);
    cr_assert_eq(count(html, "<svg"), (size_t)n_fig);
    cr_assert_eq(count(html, "</svg>"), (size_t)n_fig);
}

Test(report, single_trace_page, .timeout = 300)
{
    as_summary *s;
    as_trace *tr = small_trace("r1.st", 5, &s);
    as_report_info info = {.command = "attnscope report r1.st -o r.html",
                           .sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                           .seconds = 1.25};
    char *html = NULL, err[AS_ERR_LEN];
    size_t len = 0;
    int nfig = -1;
    cr_assert_eq(as_report_html(tr, s, &info, &html, &len, &nfig, err), AS_OK, "%s", err);
    check_page(html, len, nfig);
    cr_assert(strstr(html, info.command));
    cr_assert(strstr(html, info.sha256));
    cr_assert(strstr(html, "<td>analysis time</td><td>1.25 s</td>"));
    /* every analysis family present in this build: no "not in this build" note */
    cr_assert(!strstr(html, "not in this build"));
    cr_assert(strstr(html, "id=\"provenance\""));
    free(html);
    as_summary_free(s);
    as_trace_free(tr);
}

Test(report, comparison_page, .timeout = 300)
{
    as_summary *s[2];
    as_trace *tr[2];
    tr[0] = small_trace("cmpA.st", 7, &s[0]);
    tr[1] = small_trace("cmpB.st", 8, &s[1]);
    as_report_info info[2] = {{.command = "attnscope compare cmpA.st cmpB.st", .seconds = -1},
                              {.command = "attnscope compare cmpA.st cmpB.st", .seconds = -1}};
    char *html = NULL, err[AS_ERR_LEN];
    size_t len = 0;
    int nfig = -1;
    cr_assert_eq(as_report_compare_html((const as_trace *const *)tr, (const as_summary *const *)s,
                                        info, &html, &len, &nfig, err),
                 AS_OK, "%s", err);
    check_page(html, len, nfig);
    cr_assert(strstr(html, "cmpA.st") && strstr(html, "cmpB.st"));
    cr_assert(!strstr(html, "analysis time"), "no analysis time was given");
    free(html);
    for (int i = 0; i < 2; i++) {
        as_summary_free(s[i]);
        as_trace_free(tr[i]);
    }
}
