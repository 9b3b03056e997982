/* Tests of report/as_plot (PLplot svg driver -> inline SVG) and report/as_digest (SHA-256). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_digest.h"
#include "as_plot.h"
#include "as_testutil.h"

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

/* Filled polygons of a given colour ("fill=\"#RRGGBB\""). */
static int fills(const char *svg, const char *hex)
{
    char pat[32];
    snprintf(pat, sizeof pat, "fill=\"%s\"", hex);
    return count(svg, pat);
}

Test(plot, svg_driver_available)
{
    char err[AS_ERR_LEN];
    cr_assert(as_plot_available(err), "%s", err);
}

Test(plot, heatmap_cells_palette_and_labels)
{
    char err[AS_ERR_LEN];
    double z[6] = {0, 0.2, 0.4, 0.6, NAN, 1.0};
    const char *rows[2] = {"layer 3", "layer 7"};
    as_heatmap h = {{500, 300, "Title & <b>", "query head", "layer"},
                    2, 3, z, rows, NULL, 0, 1, "units", "%.2f", 0};
    char *svg = as_plot_heatmap(&h, err);
    cr_assert_not_null(svg, "%s", err);
    cr_assert(strncmp(svg, "<svg", 4) == 0, "no prolog before <svg>");
    cr_assert_null(strstr(svg, "<?xml"));
    cr_assert_null(strstr(svg, "<!DOCTYPE"));
    cr_assert(strstr(svg, "</svg>"));
    /* viridis ends: 0 -> #440154, 1 -> #FDE725; the NaN cell is light grey */
    cr_assert_geq(fills(svg, "#440154"), 1);
    cr_assert_geq(fills(svg, "#FDE725"), 1);
    cr_assert_geq(fills(svg, "#C8C8C8"), 1);
    /* labels are text (stored as UTF-8, escaped) */
    cr_assert(strstr(svg, "layer 7"));
    cr_assert(strstr(svg, "query head"));
    cr_assert(strstr(svg, "0.60"));
    cr_assert(strstr(svg, "n/a"));
    cr_assert(strstr(svg, "Title &amp; &lt;b&gt;"));
    cr_assert(strstr(svg, "aria-label=\"Title &amp; &lt;b&gt;\""));
    cr_assert_null(strstr(svg, "pt\""), "sizes must be unitless");
    free(svg);
}

Test(plot, ids_are_unique_across_figures)
{
    char err[AS_ERR_LEN];
    double x[3] = {1, 2, 3}, y[3] = {1, 4, 9};
    as_series s = {"squares", 3, x, y, NULL, NULL, 0, 0, 1, 0};
    as_lineplot p = {.f = {400, 300, "a", "x (units)", "y (units)"}, .nseries = 1, .s = &s};
    char *a = as_plot_lines(&p, err), *b = as_plot_lines(&p, err);
    cr_assert_not_null(a, "%s", err);
    cr_assert_not_null(b, "%s", err);
    /* every id of a is absent from b */
    for (const char *q = a; (q = strstr(q, "id=\"")); q += 4) {
        const char *e = strchr(q + 4, '"');
        cr_assert_not_null(e);
        char id[128];
        snprintf(id, sizeof id, "%.*s", (int)(e - q + 1), q);
        cr_assert_null(strstr(b, id), "duplicate %s", id);
    }
    /* every url(#...) reference of a points at an id of a */
    for (const char *q = a; (q = strstr(q, "url(#")); q += 5) {
        const char *e = strchr(q, ')');
        char id[128];
        snprintf(id, sizeof id, "id=\"%.*s\"", (int)(e - q - 5), q + 5);
        cr_assert(strstr(a, id), "dangling %s", id);
    }
    free(a);
    free(b);
}

Test(plot, lines_log_axes_nan_and_empty)
{
    char err[AS_ERR_LEN];
    double x[5] = {2, 5, NAN, 20, 50}, y[5] = {0.001, 0.01, 0.02, -1, 0.3};
    as_series s[2] = {{"measured", 5, x, y, NULL, NULL, 1, 0, 1, 0},
                      {"bound", 5, x, y, NULL, NULL, 1, 1, 0, 0}};
    static const double hl[1] = {0.05};
    static const char *const hn[1] = {"5%"};
    static const double ticks[3] = {2, 10, 50};
    as_lineplot p = {.f = {500, 350, NULL, "sparsity", "error"}, .nseries = 2, .s = s,
                     .logx = 1, .logy = 1, .nhlines = 1, .hlines = hl, .hline_names = hn,
                     .xtick_values = ticks, .nxtick_values = 3, .xtick_suffix = "x",
                     .ypercent = 1};
    char *svg = as_plot_lines(&p, err);
    cr_assert_not_null(svg, "%s", err);
    cr_assert(strstr(svg, "10x"));
    cr_assert(strstr(svg, "5%"));
    cr_assert(strstr(svg, "measured"));
    /* no NaN coordinate reached the SVG ("nan" only inside "dominant-baseline") */
    cr_assert_eq(count(svg, "nan"), count(svg, "dominant"));
    cr_assert_eq(count(svg, "inf"), 0);
    /* Okabe-Ito vermillion for colour 1 */
    cr_assert(strstr(svg, "#D55E00"));
    free(svg);
    double ny[2] = {NAN, NAN}, nx[2] = {1, 2};
    as_series e = {NULL, 2, nx, ny, NULL, NULL, 0, 0, 0, 0};
    as_lineplot pe = {.f = {400, 300, NULL, "x", "y"}, .nseries = 1, .s = &e};
    cr_assert_null(as_plot_lines(&pe, err));
    cr_assert(strstr(err, "no finite data"));
}

Test(plot, boxes_quartiles)
{
    char err[AS_ERR_LEN];
    double a[50], b[50];
    for (int i = 0; i < 50; i++) a[i] = 0.01 * (i + 1), b[i] = 0.2 + 0.001 * i;
    a[49] = 5; /* an outlier */
    const double *v[2] = {a, b};
    int n[2] = {50, 50};
    const char *g[1] = {"layer 0"};
    const char *sn[2] = {"k90", "k99"};
    as_boxplot p = {{400, 300, "boxes", "layer", "k / n"}, 1, 2, g, sn, v, n, 1, 0, 0};
    char *svg = as_plot_boxes(&p, err);
    cr_assert_not_null(svg, "%s", err);
    cr_assert(strstr(svg, "k99"));
    cr_assert(strstr(svg, "layer 0"));
    free(svg);
}

Test(plot, bars)
{
    char err[AS_ERR_LEN];
    double v[4] = {1, 2, 3, 4};
    const char *g[2] = {"a", "b"};
    as_barplot p = {{400, 300, NULL, "group", "value"}, 2, 2, g, NULL, v, 0, 0, 0};
    char *svg = as_plot_bars(&p, err);
    cr_assert_not_null(svg, "%s", err);
    cr_assert_geq(fills(svg, "#0072B2"), 2);
    cr_assert_geq(fills(svg, "#D55E00"), 2);
    free(svg);
}

Test(digest, sha256_known_vectors)
{
    char hex[AS_SHA256_HEX], err[AS_ERR_LEN];
    /* FIPS 180-2 test vectors */
    cr_assert_eq(as_sha256_mem("abc", 3, hex, err), AS_OK);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cr_assert_eq(as_sha256_mem("", 0, hex, err), AS_OK);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* a file streamed in blocks: one million 'a' (> one block) */
    char *path = as_test_path("million-a");
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 1000000; i++) fputc('a', f);
    fclose(f);
    cr_assert_eq(as_sha256_file(path, hex, NULL, NULL, err), AS_OK, "%s", err);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(path);
    cr_assert_eq(as_sha256_file("/nonexistent/x", hex, NULL, NULL, err), AS_ERR_IO);
}
