/* as_plot: heatmaps, line plots, box plots and bar charts as inline SVG through PLplot.
 *
 * Each figure gets its own PLplot stream writing to an in-memory FILE (open_memstream; the
 * svg driver closes it in plend1). Layout is in absolute units so fonts and margins look the
 * same whatever the figure's size. PLplot exits the process on internal errors, so inputs are
 * sanitised here (NaN skipped, empty ranges widened) before they reach it. */
#include "as_plot.h"

#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_html.h"
#include "as_stats.h"

/* ---------------------------------------------------------------- palettes */
/* cmap0: 0 background, 1 text/axes, 2 grid, 3 light grey (missing), 4.. Okabe-Ito. */
enum { C_BG = 0, C_FG = 1, C_GRID = 2, C_MISSING = 3, C_CAT = 4 };
static const int okabe_ito[AS_PLOT_NCOLORS][3] = {
    {0x00, 0x72, 0xB2}, /* blue */
    {0xD5, 0x5E, 0x00}, /* vermillion */
    {0x00, 0x9E, 0x73}, /* bluish green */
    {0xE6, 0x9F, 0x00}, /* orange */
    {0xCC, 0x79, 0xA7}, /* reddish purple */
    {0x56, 0xB4, 0xE9}, /* sky blue */
    {0x00, 0x00, 0x00}, /* black */
};
/* viridis sampled at 0, 1/8, ..., 1 (van der Walt & Smith, matplotlib's default colormap). */
static const int viridis[9][3] = {
    {0x44, 0x01, 0x54}, {0x48, 0x28, 0x78}, {0x3E, 0x4A, 0x89}, {0x31, 0x68, 0x8E},
    {0x26, 0x82, 0x8E}, {0x1F, 0x9E, 0x89}, {0x35, 0xB7, 0x79}, {0x6D, 0xCD, 0x59},
    {0xFD, 0xE7, 0x25},
};

static void viridis_rgb(double t, int rgb[3])
{
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    double x = t * 8;
    int i = (int)x;
    if (i >= 8) i = 7;
    double f = x - i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (int)lround(viridis[i][c] + f * (viridis[i + 1][c] - viridis[i][c]));
}

static void set_palettes(int reverse)
{
    PLINT r[C_CAT + AS_PLOT_NCOLORS], g[C_CAT + AS_PLOT_NCOLORS], b[C_CAT + AS_PLOT_NCOLORS];
    static const int fixed[C_CAT][3] = {
        {0xFF, 0xFF, 0xFF}, {0x22, 0x22, 0x22}, {0xE3, 0xE5, 0xE8}, {0xC8, 0xC8, 0xC8}};
    for (int i = 0; i < C_CAT; i++) r[i] = fixed[i][0], g[i] = fixed[i][1], b[i] = fixed[i][2];
    for (int i = 0; i < AS_PLOT_NCOLORS; i++)
        r[C_CAT + i] = okabe_ito[i][0], g[C_CAT + i] = okabe_ito[i][1],
                b[C_CAT + i] = okabe_ito[i][2];
    plscmap0(r, g, b, C_CAT + AS_PLOT_NCOLORS);
    PLINT r1[256], g1[256], b1[256];
    for (int i = 0; i < 256; i++) {
        int rgb[3];
        viridis_rgb(reverse ? 1 - i / 255.0 : i / 255.0, rgb);
        r1[i] = rgb[0], g1[i] = rgb[1], b1[i] = rgb[2];
    }
    plscmap1(r1, g1, b1, 256);
}

static int cat_color(int i)
{
    int m = i % AS_PLOT_NCOLORS;
    return C_CAT + (m < 0 ? m + AS_PLOT_NCOLORS : m);
}

/* ---------------------------------------------------------------- canvas */
typedef struct {
    char *mem;
    size_t memlen;
    FILE *f;
    int w, h;
    double chr_mm; /* character height in mm */
    /* plot area in normalised device coordinates */
    double x0, x1, y0, y1;
    int old_stream;
} canvas;

static int available = -1;
static char avail_err[AS_ERR_LEN];

int as_plot_available(char *err)
{
    if (available < 0) {
        const char **menu = NULL, **names = NULL;
        int n = 0;
        /* plgDevs fills arrays of at most n entries: ask with a generous bound */
        menu = calloc(128, sizeof *menu);
        names = calloc(128, sizeof *names);
        if (!menu || !names) {
            free(menu);
            free(names);
            if (err) as_err_set(err, AS_ERR_NOMEM, "out of memory");
            return 0;
        }
        n = 128;
        plgDevs(&menu, &names, &n);
        available = 0;
        for (int i = 0; i < n; i++)
            if (names[i] && strcmp(names[i], "svg") == 0) available = 1;
        free(menu);
        free(names);
        if (!available)
            snprintf(avail_err, sizeof avail_err,
                     "PLplot on this system has no svg driver (install PLplot's drivers)");
    }
    if (!available && err) as_err_set(err, AS_ERR_USAGE, "%s", avail_err);
    return available;
}

/* PLplot text: '#' is its escape character. */
static char *plesc_text(const char *s)
{
    if (!s) s = "";
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++) extra += s[i] == '#';
    char *o = malloc(n + extra + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        o[j++] = s[i];
        if (s[i] == '#') o[j++] = '#';
    }
    o[j] = '\0';
    return o;
}

static void mtex(const char *side, double disp, double pos, double just, const char *s)
{
    char *t = plesc_text(s);
    if (t) plmtex(side, disp, pos, just, t);
    free(t);
}

static void ptex(double x, double y, double just, const char *s)
{
    char *t = plesc_text(s);
    if (t) plptex(x, y, 1, 0, just, t);
    free(t);
}

/* Margins in pixels: left, right, bottom, top. */
static int canvas_begin(canvas *c, const as_plot_frame *f, int reverse, double ml, double mr,
                        double mb, double mt, char *err)
{
    memset(c, 0, sizeof *c);
    if (!as_plot_available(err)) return -1;
    c->w = f->width > 0 ? f->width : 640;
    c->h = f->height > 0 ? f->height : 420;
    c->f = open_memstream(&c->mem, &c->memlen);
    if (!c->f) {
        as_err_set(err, AS_ERR_NOMEM, "cannot open a memory stream for a plot");
        return -1;
    }
    PLINT old;
    plgstrm(&old);
    c->old_stream = old;
    PLINT strm;
    plmkstrm(&strm);
    plsdev("svg");
    plsfile(c->f);
    plspage(0, 0, c->w, c->h, 0, 0);
    set_palettes(reverse);
    plinit();
    pladv(0);
    /* svg driver: 72 points per inch; 1 mm = 72/25.4 units. 12.5 px characters. */
    c->chr_mm = 12.5 / (72.0 / 25.4) * 0.75;
    plschr(c->chr_mm, 1.0);
    plsmaj(0, 0.8);
    plsmin(0, 0.5);
    plwidth(1);
    c->x0 = ml / c->w;
    c->x1 = 1 - mr / c->w;
    c->y0 = mb / c->h;
    c->y1 = 1 - mt / c->h;
    if (f->title) {
        plvpor(0, 1, 0, 1);
        plwind(0, 1, 0, 1);
        plcol0(C_FG);
        plschr(0, 1.15);
        ptex(ml / c->w, 1 - 18.0 / c->h, 0, f->title);
        plschr(0, 1.0);
    }
    return 0;
}

static void put_utf8(as_buf *b, unsigned long cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    as_buf_putn(b, u, n);
}

/* Strip the XML prolog, compact PLplot's one-attribute-per-line output, set pixel sizes. */
static char *canvas_end(canvas *c, const char *title, char *err)
{
    plend1();
    plsstrm(c->old_stream);
    /* the svg driver closed c->f (plend1 -> tidy), which finalised c->mem / c->memlen */
    if (!c->mem || c->memlen == 0) {
        free(c->mem);
        as_err_set(err, AS_ERR_IO, "PLplot wrote no SVG");
        return NULL;
    }
    const char *s = strstr(c->mem, "<svg");
    if (!s) {
        free(c->mem);
        as_err_set(err, AS_ERR_FORMAT, "PLplot's SVG has no <svg> element");
        return NULL;
    }
    static int figures = 0;
    int figure_no = ++figures;
    as_buf b;
    as_buf_init(&b);
    as_buf_printf(&b, "<svg role=\"img\" aria-label=\"");
    as_buf_esc(&b, title ? title : "plot");
    as_buf_puts(&b, "\"");
    s += 4;
    /* compact whitespace outside text content; drop the pt units of width/height */
    int in_text = 0; /* inside a <tspan>...</tspan> body */
    while (*s) {
        if (strncmp(s, "id=\"", 4) == 0 || strncmp(s, "url(#", 5) == 0) {
            /* ids (clip paths) must be unique in a page holding many figures */
            size_t k = s[0] == 'i' ? 4 : 5;
            as_buf_putn(&b, s, k);
            as_buf_printf(&b, "asp%d-", figure_no);
            s += k;
            continue;
        }
        if (in_text && strncmp(s, "&#x", 3) == 0) {
            /* PLplot writes every character as a reference: store it as UTF-8 */
            char *endp;
            unsigned long cp = strtoul(s + 3, &endp, 16);
            if (*endp == ';' && cp != '<' && cp != '>' && cp != '&' && cp > 0x1f &&
                cp < 0x110000) {
                put_utf8(&b, cp);
                s = endp + 1;
                continue;
            }
        }
        if (!in_text && *s == '\n') {
            while (*s == '\n' || *s == ' ') s++;
            if (*s != '>' && *s != '/') as_buf_putn(&b, " ", 1);
            continue;
        }
        if (!in_text && strncmp(s, "pt\"", 3) == 0) {
            s += 2;
            continue;
        }
        if (strncmp(s, "<tspan", 6) == 0) {
            const char *gt = strchr(s, '>');
            if (!gt) break;
            as_buf_putn(&b, s, (size_t)(gt - s + 1));
            s = gt + 1;
            in_text = 1;
            continue;
        }
        if (in_text && strncmp(s, "</tspan>", 8) == 0) in_text = 0;
        as_buf_putn(&b, s, 1);
        s++;
    }
    free(c->mem);
    c->mem = NULL;
    size_t len;
    char *out = as_buf_take(&b, &len);
    if (!out) as_err_set(err, AS_ERR_NOMEM, "out of memory building a plot");
    return out;
}

/* ---------------------------------------------------------------- axes helpers */
static int finite_range(const double *x, int n, int logscale, double *lo, double *hi)
{
    int any = 0;
    for (int i = 0; i < n; i++) {
        double v = x[i];
        if (!isfinite(v) || (logscale && v <= 0)) continue;
        if (logscale) v = log10(v);
        if (!any || v < *lo) *lo = v;
        if (!any || v > *hi) *hi = v;
        any = 1;
    }
    return any;
}

static void pad_range(double *lo, double *hi, double frac)
{
    if (!(*hi > *lo)) {
        double m = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 0.5;
        *lo -= m;
        *hi += m;
        return;
    }
    double d = (*hi - *lo) * frac;
    *lo -= d;
    *hi += d;
}

/* Tick labels: plain numbers on log axes (10^-2 -> "0.01"), optionally as percentages. */
typedef struct {
    int logx, logy, ypercent;
} label_opts;

static void fmt_plain(double v, int percent, char *out, size_t n)
{
    if (percent) v *= 100;
    const char *suf = percent ? "%" : "";
    double a = fabs(v);
    if (v == 0)
        snprintf(out, n, "0%s", suf);
    else if (a >= 1e5 || a < 1e-4)
        snprintf(out, n, "%.0e%s", v, suf);
    else
        snprintf(out, n, "%.6g%s", v, suf);
}

static void label_func(PLINT axis, PLFLT value, char *label, PLINT length, PLPointer data)
{
    const label_opts *o = data;
    int lg = axis == PL_X_AXIS ? o->logx : o->logy;
    int pct = axis == PL_Y_AXIS && o->ypercent;
    double v = lg ? pow(10.0, value) : value;
    if (!lg && fabs(value) < 1e-12) v = 0;
    if (lg && !pct && (value < -2.5 || value > 4.5)) {
        /* far decades as powers of ten (PLplot's superscript escapes) */
        snprintf(label, (size_t)length, "10#u%d#d", (int)lround(value));
        return;
    }
    fmt_plain(v, pct, label, (size_t)length);
}

/* 1-2-5 ticks (log10 values) within [lo, hi]: for log axes spanning under two decades, where
 * PLplot's decade ticks would leave one label or none. */
static int ticks125(double lo, double hi, double *out, int max)
{
    static const double m125[3] = {1, 2, 5}, m19[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    for (int dense = 0; dense < 2; dense++) {
        const double *m = dense ? m19 : m125;
        int nm = dense ? 9 : 3, n = 0;
        for (int e = (int)floor(lo) - 1; e <= (int)ceil(hi); e++)
            for (int k = 0; k < nm; k++) {
                double v = log10(m[k]) + e;
                if (v >= lo - 1e-9 && v <= hi + 1e-9 && n < max) out[n++] = v;
            }
        if (n >= 3 || dense) return n; /* too few 1-2-5 ticks on a short axis: 1..9 */
    }
    return 0;
}

static void frame_labels(const canvas *c, const as_plot_frame *f)
{
    plcol0(C_FG);
    if (f->xlabel) mtex("b", 2.6, 0.5, 0.5, f->xlabel);
    if (f->ylabel) mtex("l", 4.8, 0.5, 0.5, f->ylabel);
    (void)c;
}

/* Draw dashed/solid/dotted style. */
static void line_style(int style)
{
    static const PLINT dash_m[1] = {3500}, dash_s[1] = {2000};
    static const PLINT dot_m[1] = {700}, dot_s[1] = {1300};
    if (style == 1)
        plstyl(1, dash_m, dash_s);
    else if (style == 2)
        plstyl(1, dot_m, dot_s);
    else
        plstyl(0, NULL, NULL);
}

/* Legend box: entries drawn in viewport coordinates of the current plot area. */
typedef struct {
    const char *name;
    int color, style, marker, box;
} legend_entry;

static void draw_legend(const canvas *c, const legend_entry *e, int n, int pos)
{
    if (n <= 0) return;
    double lh = 18.0 / c->h, lw = 0; /* line height, width (ndc) */
    for (int i = 0; i < n; i++) {
        double w = (40.0 + 7.6 * (double)strlen(e[i].name ? e[i].name : "")) / c->w;
        if (w > lw) lw = w;
    }
    double bw = lw + 14.0 / c->w, bh = n * lh + 10.0 / c->h;
    double bx0, by1;
    if (pos == 5) { /* one row above the plot area, right-aligned, no box */
        double tw = 0;
        for (int i = 0; i < n; i++) tw += (46.0 + 7.6 * (double)strlen(e[i].name ? e[i].name : ""));
        bx0 = c->x1 - tw / c->w;
        plvpor(bx0, c->x1, c->y1 + 2.0 / c->h, c->y1 + 22.0 / c->h);
        plwind(0, tw, 0, 20);
        double x = 0;
        for (int i = 0; i < n; i++) {
            plcol0(e[i].color);
            if (e[i].box) {
                PLFLT rx[4] = {x + 4, x + 28, x + 28, x + 4}, ry[4] = {5, 5, 15, 15};
                plfill(4, rx, ry);
            } else {
                plwidth(2.2);
                line_style(e[i].style);
                pljoin(x + 2, 10, x + 30, 10);
                line_style(0);
                plwidth(1);
            }
            plcol0(C_FG);
            ptex(x + 36, 9.5, 0, e[i].name ? e[i].name : "");
            x += 46.0 + 7.6 * (double)strlen(e[i].name ? e[i].name : "");
        }
        return;
    }
    switch (pos) {
    case 1: bx0 = c->x0 + 8.0 / c->w, by1 = c->y1 - 8.0 / c->h; break;
    case 2: bx0 = c->x1 - 8.0 / c->w - bw, by1 = c->y0 + 8.0 / c->h + bh; break;
    case 3: bx0 = c->x0 + 8.0 / c->w, by1 = c->y0 + 8.0 / c->h + bh; break;
    case 4: bx0 = c->x1 + 12.0 / c->w, by1 = c->y1; break;
    default: bx0 = c->x1 - 8.0 / c->w - bw, by1 = c->y1 - 8.0 / c->h; break;
    }
    plvpor(bx0, bx0 + bw, by1 - bh, by1);
    plwind(0, bw * c->w, 0, bh * c->h);
    PLFLT bxs[4] = {0, bw * c->w, bw * c->w, 0}, bys[4] = {0, 0, bh * c->h, bh * c->h};
    plcol0(C_BG);
    plfill(4, bxs, bys);
    plcol0(C_GRID);
    plwidth(1);
    PLFLT lx[5] = {0.5, bw * c->w - 0.5, bw * c->w - 0.5, 0.5, 0.5};
    PLFLT ly[5] = {0.5, 0.5, bh * c->h - 0.5, bh * c->h - 0.5, 0.5};
    plline(5, lx, ly);
    for (int i = 0; i < n; i++) {
        double y = bh * c->h - 5 - (i + 0.5) * 18.0;
        plcol0(e[i].color);
        if (e[i].box) {
            PLFLT rx[4] = {8, 32, 32, 8}, ry[4] = {y - 5, y - 5, y + 5, y + 5};
            plfill(4, rx, ry);
        } else {
            plwidth(2.2);
            line_style(e[i].style);
            PLFLT sx[2] = {6, 34}, sy[2] = {y, y};
            plline(2, sx, sy);
            line_style(0);
            plwidth(1);
            if (e[i].marker) {
                PLFLT mx = 20, my = y;
                plstring(1, &mx, &my, "#(728)");
            }
        }
        plcol0(C_FG);
        ptex(40, y - 0.5, 0, e[i].name ? e[i].name : "");
    }
}

/* Ticks along a categorical axis: labels[i] at world coordinate i. */
static void cat_labels_x(const char *const *names, int n, int step)
{
    double xmin, xmax, ymin, ymax;
    plgvpw(&xmin, &xmax, &ymin, &ymax);
    for (int i = 0; i < n; i += step) {
        double pos = (i - xmin) / (xmax - xmin);
        mtex("b", 1.25, pos, 0.5, names[i]);
    }
}

static void cat_labels_y(const char *const *names, int n, int step, int top_down)
{
    double xmin, xmax, ymin, ymax;
    plgvpw(&xmin, &xmax, &ymin, &ymax);
    for (int i = 0; i < n; i += step) {
        double wy = top_down ? (double)(n - 1 - i) : (double)i;
        double pos = (wy - ymin) / (ymax - ymin);
        mtex("lv", 0.6, pos, 1.0, names[i]);
    }
}

static void num_names(char (*buf)[16], const char **names, int n)
{
    for (int i = 0; i < n; i++) {
        snprintf(buf[i], sizeof buf[i], "%d", i);
        names[i] = buf[i];
    }
}

/* ---------------------------------------------------------------- heatmap */
char *as_plot_heatmap(const as_heatmap *h, char *err)
{
    if (h->nrows <= 0 || h->ncols <= 0 || !h->z) {
        as_err_set(err, AS_ERR_USAGE, "heatmap: no data");
        return NULL;
    }
    double zmin = h->zmin, zmax = h->zmax;
    if (!(zmax > zmin)) {
        double lo = 0, hi = 0;
        if (!finite_range(h->z, h->nrows * h->ncols, 0, &lo, &hi)) lo = 0, hi = 1;
        zmin = lo, zmax = hi;
        if (!(zmax > zmin)) {
            double m = fabs(zmin) > 0 ? fabs(zmin) * 0.05 : 0.5;
            zmin -= m, zmax += m;
        }
    }
    /* row labels as long as "layer 29": keep ~ 56 px; colour bar on the right */
    canvas c;
    if (canvas_begin(&c, &h->f, h->reverse, 64, 118, 52, h->f.title ? 34 : 12, err)) return NULL;
    char (*rbuf)[16] = calloc((size_t)h->nrows, sizeof *rbuf);
    char (*cbuf)[16] = calloc((size_t)h->ncols, sizeof *cbuf);
    const char **rn = calloc((size_t)h->nrows, sizeof *rn), **cn =
                                                             calloc((size_t)h->ncols, sizeof *cn);
    if (!rbuf || !cbuf || !rn || !cn) {
        free(rbuf), free(cbuf), free(rn), free(cn);
        plend1();
        plsstrm(c.old_stream);
        free(c.mem);
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (h->row_names)
        for (int i = 0; i < h->nrows; i++) rn[i] = h->row_names[i];
    else
        num_names(rbuf, rn, h->nrows);
    if (h->col_names)
        for (int i = 0; i < h->ncols; i++) cn[i] = h->col_names[i];
    else
        num_names(cbuf, cn, h->ncols);

    plvpor(c.x0, c.x1, c.y0, c.y1);
    plwind(-0.5, h->ncols - 0.5, -0.5, h->nrows - 0.5);
    double cell_w = (c.x1 - c.x0) * c.w / h->ncols, cell_h = (c.y1 - c.y0) * c.h / h->nrows;
    for (int r = 0; r < h->nrows; r++) {
        double y = h->nrows - 1 - r;
        for (int k = 0; k < h->ncols; k++) {
            double v = h->z[(size_t)r * h->ncols + k];
            PLFLT xs[4] = {k - 0.5, k + 0.5, k + 0.5, k - 0.5};
            PLFLT ys[4] = {y - 0.5, y - 0.5, y + 0.5, y + 0.5};
            if (isfinite(v)) {
                double t = (v - zmin) / (zmax - zmin);
                plcol1(t < 0 ? 0 : t > 1 ? 1 : t);
            } else {
                plcol0(C_MISSING);
            }
            plfill(4, xs, ys);
        }
    }
    /* thin white cell borders keep cells apart */
    plcol0(C_BG);
    plwidth(cell_w > 14 && cell_h > 10 ? 1.2 : 0.4);
    for (int k = 1; k < h->ncols; k++) pljoin(k - 0.5, -0.5, k - 0.5, h->nrows - 0.5);
    for (int r = 1; r < h->nrows; r++) pljoin(-0.5, r - 0.5, h->ncols - 0.5, r - 0.5);
    plwidth(1);
    /* values in the cells when they fit */
    if (h->annot_fmt && cell_w >= 34 && cell_h >= 15) {
        double scale = cell_h < 20 || cell_w < 44 ? 0.72 : 0.85;
        plschr(0, scale);
        for (int r = 0; r < h->nrows; r++)
            for (int k = 0; k < h->ncols; k++) {
                double v = h->z[(size_t)r * h->ncols + k];
                char txt[32];
                if (!isfinite(v)) {
                    snprintf(txt, sizeof txt, "n/a");
                    plcol0(C_FG);
                } else {
                    snprintf(txt, sizeof txt, h->annot_fmt, v);
                    double t = (v - zmin) / (zmax - zmin);
                    if (h->reverse) t = 1 - t;
                    plcol0(t < 0.62 ? C_BG : C_FG);
                }
                double y = h->nrows - 1 - r;
                ptex(k, y - 1.0 / cell_h, 0.5, txt);
            }
        plschr(0, 1.0);
    }
    plcol0(C_FG);
    plbox("bc", 0, 0, "bc", 0, 0);
    int xstep = 1, ystep = 1;
    while (h->ncols / xstep > (c.x1 - c.x0) * c.w / 22) xstep++;
    while (h->nrows / ystep > (c.y1 - c.y0) * c.h / 15) ystep++;
    cat_labels_x(cn, h->ncols, xstep);
    cat_labels_y(rn, h->nrows, ystep, 1);
    frame_labels(&c, &h->f);

    /* colour bar */
    double bx0 = c.x1 + 16.0 / c.w, bx1 = bx0 + 16.0 / c.w;
    plvpor(bx0, bx1, c.y0, c.y1);
    plwind(0, 1, zmin, zmax);
    int nslab = 96;
    for (int i = 0; i < nslab; i++) {
        double a = zmin + (zmax - zmin) * i / nslab, b2 = zmin + (zmax - zmin) * (i + 1) / nslab;
        PLFLT xs[4] = {0, 1, 1, 0}, ys[4] = {a, a, b2, b2};
        plcol1((i + 0.5) / nslab);
        plfill(4, xs, ys);
    }
    plcol0(C_FG);
    plschr(0, 0.9);
    plbox("bc", 0, 0, "bcmstv", 0, 0);
    plschr(0, 1.0);
    if (h->zlabel) mtex("r", 5.2, 0.5, 0.5, h->zlabel);

    free(rbuf), free(cbuf), free(rn), free(cn);
    return canvas_end(&c, h->f.title, err);
}

/* The caller's fixed axis range [mn, mx] when it gives one (mn < mx), in log10 on a log axis;
 * returns whether it did. */
static int fixed_range(double mn, double mx, int logv, double *lo, double *hi)
{
    if (!(mx > mn)) return 0;
    *lo = logv ? log10(mn) : mn;
    *hi = logv ? log10(mx) : mx;
    return 1;
}

/* ---------------------------------------------------------------- line plot */
/* The data window of a line plot (log10 units on log axes), padded; 0 when nothing is finite. */
typedef struct {
    double xlo, xhi, ylo, yhi;
} lp_win;

static int lines_window(const as_lineplot *p, lp_win *w)
{
    double xlo = 0, xhi = 0, ylo = 0, yhi = 0;
    int anyx = 0, anyy = 0;
    for (int i = 0; i < p->nseries; i++) {
        const as_series *s = &p->s[i];
        double lo = 0, hi = 0;
        if (finite_range(s->x, s->n, p->logx, &lo, &hi)) {
            if (!anyx || lo < xlo) xlo = lo;
            if (!anyx || hi > xhi) xhi = hi;
            anyx = 1;
        }
        const double *ys[3] = {s->y, s->ylo, s->yhi};
        for (int j = 0; j < 3; j++) {
            if (!ys[j]) continue;
            if (finite_range(ys[j], s->n, p->logy, &lo, &hi)) {
                if (!anyy || lo < ylo) ylo = lo;
                if (!anyy || hi > yhi) yhi = hi;
                anyy = 1;
            }
        }
    }
    if (!anyx || !anyy) return 0;
    for (int i = 0; i < p->nhlines; i++) {
        double v = p->hlines[i];
        if (!isfinite(v) || (p->logy && v <= 0)) continue;
        if (p->logy) v = log10(v);
        if (v < ylo) ylo = v;
        if (v > yhi) yhi = v;
    }
    pad_range(&xlo, &xhi, p->logx ? 0.02 : 0.03);
    pad_range(&ylo, &yhi, 0.05);
    fixed_range(p->xmin, p->xmax, p->logx, &xlo, &xhi);
    fixed_range(p->ymin, p->ymax, p->logy, &ylo, &yhi);
    *w = (lp_win){xlo, xhi, ylo, yhi};
    return 1;
}

/* the shaded x-range (band_lo .. band_hi) and its name */
static void lines_band(const as_lineplot *p, const lp_win *w)
{
    const double xlo = w->xlo, xhi = w->xhi, ylo = w->ylo, yhi = w->yhi;
    if (!(p->band_hi > p->band_lo) || (p->logx && p->band_lo <= 0)) return;
    double a = p->logx ? log10(p->band_lo) : p->band_lo;
    double b2 = p->logx ? log10(p->band_hi) : p->band_hi;
    if (a < xlo) a = xlo;
    if (b2 > xhi) b2 = xhi;
    if (b2 - a < 0.004 * (xhi - xlo)) { /* keep a narrow band visible */
        double m = 0.5 * (a + b2), wd = 0.002 * (xhi - xlo);
        a = m - wd, b2 = m + wd;
    }
    if (!(b2 > a)) return;
    PLFLT bx[4] = {a, b2, b2, a}, by[4] = {ylo, ylo, yhi, yhi};
    plscol0a(C_MISSING, 0xE6, 0x9F, 0x00, 0.30);
    plcol0(C_MISSING);
    plfill(4, bx, by);
    plscol0a(C_MISSING, 0xC8, 0xC8, 0xC8, 1.0);
    if (p->band_name) {
        plcol0(C_FG);
        plschr(0, 0.8);
        ptex(b2 + 0.008 * (xhi - xlo), yhi - 0.05 * (yhi - ylo), 0, p->band_name);
        plschr(0, 1.0);
    }
}

/* dashed horizontal reference lines and their names */
static void lines_hlines(const as_lineplot *p, const lp_win *w)
{
    for (int i = 0; i < p->nhlines; i++) {
        double v = p->hlines[i];
        if (!isfinite(v) || (p->logy && v <= 0)) continue;
        if (p->logy) v = log10(v);
        plcol0(C_FG);
        plwidth(0.8);
        line_style(2);
        pljoin(w->xlo, v, w->xhi, v);
        line_style(0);
        if (p->hline_names && p->hline_names[i]) {
            plschr(0, 0.8);
            plcol0(C_FG);
            ptex(w->xhi - 0.01 * (w->xhi - w->xlo), v + 0.015 * (w->yhi - w->ylo), 1.0,
                 p->hline_names[i]);
            plschr(0, 1.0);
        }
    }
}

/* one series: its shaded band (ylo .. yhi) and its line, broken at missing points */
static void lines_series(const as_lineplot *p, const as_series *s)
{
    double *xs = malloc(sizeof(double) * (size_t)(2 * s->n + 1));
    double *ys = malloc(sizeof(double) * (size_t)(2 * s->n + 1));
    if (!xs || !ys) {
        free(xs), free(ys);
        return;
    }
    if (s->ylo && s->yhi) {
        int m = 0;
        for (int j = 0; j < s->n; j++) {
            double x = s->x[j], y = s->yhi[j];
            if (!isfinite(x) || !isfinite(y) || !isfinite(s->ylo[j]) ||
                (p->logx && x <= 0) || (p->logy && (y <= 0 || s->ylo[j] <= 0)))
                continue;
            xs[m] = p->logx ? log10(x) : x;
            ys[m++] = p->logy ? log10(y) : y;
        }
        int top = m;
        for (int j = s->n - 1; j >= 0; j--) {
            double x = s->x[j], y = s->ylo[j];
            if (!isfinite(x) || !isfinite(y) || !isfinite(s->yhi[j]) ||
                (p->logx && x <= 0) || (p->logy && (y <= 0 || s->yhi[j] <= 0)))
                continue;
            xs[m] = p->logx ? log10(x) : x;
            ys[m++] = p->logy ? log10(y) : y;
        }
        if (top >= 2) {
            const int *rgb = okabe_ito[((s->color % AS_PLOT_NCOLORS) + AS_PLOT_NCOLORS) %
                                       AS_PLOT_NCOLORS];
            plscol0a(C_MISSING, rgb[0], rgb[1], rgb[2], 0.18);
            plcol0(C_MISSING);
            plfill(m, xs, ys);
            plscol0a(C_MISSING, 0xC8, 0xC8, 0xC8, 1.0);
        }
    }
    plcol0(cat_color(s->color));
    plwidth(s->width > 0 ? s->width : 2);
    line_style(s->style);
    int m = 0;
    for (int j = 0; j <= s->n; j++) {
        int ok = j < s->n && isfinite(s->x[j]) && isfinite(s->y[j]) &&
                 !(p->logx && s->x[j] <= 0) && !(p->logy && s->y[j] <= 0);
        if (ok) {
            xs[m] = p->logx ? log10(s->x[j]) : s->x[j];
            ys[m++] = p->logy ? log10(s->y[j]) : s->y[j];
        } else {
            if (m >= 2) plline(m, xs, ys);
            if (s->marker && m >= 1) plstring(m, xs, ys, "#(728)");
            m = 0;
        }
    }
    line_style(0);
    plwidth(1);
    free(xs), free(ys);
}

/* the frame with its tick labels: 1-2-5 ticks tx/ty (ntx/nty), named or valued x ticks */
static void lines_axes(const as_lineplot *p, const lp_win *w, const double *tx, int ntx,
                       const double *ty, int nty)
{
    const double xlo = w->xlo, xhi = w->xhi, ylo = w->ylo, yhi = w->yhi;
    plcol0(C_FG);
    label_opts lo = {p->logx, p->logy, p->ypercent};
    plslabelfunc(label_func, &lo);
    char bx[16] = "bcnsto", by[16] = "bcnstvo";
    if (p->logx) strcat(bx, "l");
    if (p->logy) strcat(by, "l");
    if (p->nxticks > 0 || p->nxtick_values > 0) strcpy(bx, p->logx ? "bcl" : "bc");
    if (ntx) strcpy(bx, "bcstl");
    if (nty) strcpy(by, "bcstvl");
    plbox(bx, 0, 0, by, 0, 0);
    plslabelfunc(NULL, NULL);
    for (int i = 0; i < ntx; i++) {
        char t[48];
        fmt_plain(pow(10, tx[i]), 0, t, sizeof t);
        mtex("b", 1.25, (tx[i] - xlo) / (xhi - xlo), 0.5, t);
    }
    for (int i = 0; i < nty; i++) {
        char t[48];
        fmt_plain(pow(10, ty[i]), p->ypercent, t, sizeof t);
        mtex("lv", 0.6, (ty[i] - ylo) / (yhi - ylo), 1.0, t);
    }
    if (p->nxticks > 0) cat_labels_x(p->xtick_names, p->nxticks, 1);
    for (int i = 0; i < p->nxtick_values; i++) {
        double v = p->xtick_values[i];
        if (!isfinite(v) || (p->logx && v <= 0)) continue;
        double wx = p->logx ? log10(v) : v;
        if (wx < xlo || wx > xhi) continue;
        char t[48];
        snprintf(t, sizeof t, "%g%s", v, p->xtick_suffix ? p->xtick_suffix : "");
        mtex("b", 1.25, (wx - xlo) / (xhi - xlo), 0.5, t);
        double tl = 0.012 * (yhi - ylo);
        pljoin(wx, ylo, wx, ylo + tl);
        pljoin(wx, yhi, wx, yhi - tl);
    }
}

/* right margin: room for a legend placed right of the plot (legend_pos 4) */
static double lines_right_margin(const as_lineplot *p, int nleg)
{
    if (p->legend_pos != 4 || !nleg) return 16;
    double lw = 0;
    for (int i = 0; i < p->nseries; i++)
        if (p->s[i].name) {
            double wd = 40 + 7.6 * (double)strlen(p->s[i].name);
            if (wd > lw) lw = wd;
        }
    return lw + 40;
}

char *as_plot_lines(const as_lineplot *p, char *err)
{
    lp_win w;
    if (!lines_window(p, &w)) {
        as_err_set(err, AS_ERR_USAGE, "line plot: no finite data");
        return NULL;
    }
    const double xlo = w.xlo, xhi = w.xhi, ylo = w.ylo, yhi = w.yhi;
    int nleg = 0;
    for (int i = 0; i < p->nseries; i++) nleg += p->s[i].name != NULL;
    canvas c;
    if (canvas_begin(&c, &p->f, 0, 80, lines_right_margin(p, nleg), 50, p->f.title ? 34 : 12, err))
        return NULL;
    plvpor(c.x0, c.x1, c.y0, c.y1);
    plwind(xlo, xhi, ylo, yhi);
    /* grid first, then data, then the frame on top */
    plcol0(C_GRID);
    char xopt[16] = "g", yopt[16] = "g";
    if (p->logx) strcat(xopt, "l");
    if (p->logy) strcat(yopt, "l");
    if (p->nxticks > 0 || p->nxtick_values > 0) strcpy(xopt, "");
    int auto_x = p->logx && p->nxtick_values == 0 && p->nxticks == 0 && xhi - xlo < 2.0;
    int auto_y = p->logy && yhi - ylo < 2.0;
    double tx[16], ty[16];
    int ntx = auto_x ? ticks125(xlo, xhi, tx, 16) : 0, nty = auto_y ? ticks125(ylo, yhi, ty, 16) : 0;
    plbox(xopt, 0, 0, yopt, 0, 0);
    for (int i = 0; i < ntx; i++) pljoin(tx[i], ylo, tx[i], yhi);
    for (int i = 0; i < nty; i++) pljoin(xlo, ty[i], xhi, ty[i]);
    for (int i = 0; i < p->nxtick_values; i++) {
        double v = p->xtick_values[i];
        if (!isfinite(v) || (p->logx && v <= 0)) continue;
        double wx = p->logx ? log10(v) : v;
        if (wx > xlo && wx < xhi) pljoin(wx, ylo, wx, yhi);
    }
    lines_band(p, &w);
    lines_hlines(p, &w);
    for (int i = 0; i < p->nseries; i++) lines_series(p, &p->s[i]);
    lines_axes(p, &w, tx, ntx, ty, nty);
    frame_labels(&c, &p->f);
    if (nleg) {
        legend_entry *e = calloc((size_t)nleg, sizeof *e);
        if (e) {
            int k = 0;
            for (int i = 0; i < p->nseries; i++)
                if (p->s[i].name)
                    e[k++] = (legend_entry){p->s[i].name, cat_color(p->s[i].color),
                                            p->s[i].style, p->s[i].marker, 0};
            draw_legend(&c, e, nleg, p->legend_pos);
            free(e);
        }
    }
    return canvas_end(&c, p->f.title, err);
}

/* ---------------------------------------------------------------- category plots (boxes, bars) */
/* Canvas, viewport, window over ngroups categories and the grid; *nty 1-2-5 ticks (log axes of
 * less than two decades) in ty. Returns nonzero (err set) when the canvas cannot start. */
static int cat_frame_begin(canvas *c, const as_plot_frame *f, int legend_above, int ngroups,
                           int logy, double ylo, double yhi, double *ty, int *nty, char *err)
{
    if (canvas_begin(c, f, 0, 80, 16, 50, (f->title ? 34 : 12) + (legend_above ? 22 : 0), err))
        return 1;
    plvpor(c->x0, c->x1, c->y0, c->y1);
    plwind(-0.5, ngroups - 0.5, ylo, yhi);
    plcol0(C_GRID);
    *nty = logy && yhi - ylo < 2.0 ? ticks125(ylo, yhi, ty, 16) : 0;
    plbox("", 0, 0, logy ? "gl" : "g", 0, 0);
    for (int i = 0; i < *nty; i++) pljoin(-0.5, ty[i], ngroups - 0.5, ty[i]);
    return 0;
}

/* Axes, tick labels, category names (one per label_px pixels at most), frame labels and the
 * legend of the series (series_names NULL: none); ends the canvas. */
static char *cat_frame_end(canvas *c, const as_plot_frame *f, int logy, const double *ty,
                           int nty, double ylo, double yhi, const char *const *group_names,
                           int ngroups, double label_px, const char *const *series_names,
                           int nseries, char *err)
{
    plcol0(C_FG);
    label_opts lo = {0, logy, 0};
    plslabelfunc(label_func, &lo);
    plbox("bc", 0, 0, nty ? "bcstvl" : logy ? "bcnstvlo" : "bcnstvo", 0, 0);
    plslabelfunc(NULL, NULL);
    for (int i = 0; i < nty; i++) {
        char t[48];
        fmt_plain(pow(10, ty[i]), 0, t, sizeof t);
        mtex("lv", 0.6, (ty[i] - ylo) / (yhi - ylo), 1.0, t);
    }
    if (group_names) {
        int step = 1;
        while (ngroups / step > (c->x1 - c->x0) * c->w / label_px) step++;
        cat_labels_x(group_names, ngroups, step);
    }
    frame_labels(c, f);
    if (series_names) {
        legend_entry e[AS_PLOT_NCOLORS];
        int n = nseries < AS_PLOT_NCOLORS ? nseries : AS_PLOT_NCOLORS;
        for (int s = 0; s < n; s++) e[s] = (legend_entry){series_names[s], cat_color(s), 0, 0, 1};
        draw_legend(c, e, n, 5);
    }
    return canvas_end(c, f->title, err);
}

/* ---------------------------------------------------------------- box plots */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}


char *as_plot_boxes(const as_boxplot *p, char *err)
{
    int nb = p->ngroups * p->nseries;
    if (nb <= 0) {
        as_err_set(err, AS_ERR_USAGE, "box plot: no groups");
        return NULL;
    }
    double ylo = 0, yhi = 0;
    int any = 0;
    for (int i = 0; i < nb; i++) {
        double lo = 0, hi = 0;
        if (p->values[i] && finite_range(p->values[i], p->counts[i], p->logy, &lo, &hi)) {
            if (!any || lo < ylo) ylo = lo;
            if (!any || hi > yhi) yhi = hi;
            any = 1;
        }
    }
    if (!any) {
        as_err_set(err, AS_ERR_USAGE, "box plot: no finite data");
        return NULL;
    }
    pad_range(&ylo, &yhi, 0.05);
    fixed_range(p->ymin, p->ymax, p->logy, &ylo, &yhi);
    canvas c;
    double ty[16];
    int nty;
    if (cat_frame_begin(&c, &p->f, p->nseries > 1 && p->series_names, p->ngroups, p->logy, ylo,
                        yhi, ty, &nty, err))
        return NULL;
    double slot = 0.8 / p->nseries, bw = slot * 0.7;
    for (int g = 0; g < p->ngroups; g++) {
        for (int s = 0; s < p->nseries; s++) {
            const double *v = p->values[g * p->nseries + s];
            int n = p->counts[g * p->nseries + s], m = 0;
            double *x = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
            if (!x) continue;
            for (int i = 0; i < n; i++)
                if (isfinite(v[i]) && !(p->logy && v[i] <= 0))
                    x[m++] = p->logy ? log10(v[i]) : v[i];
            if (m == 0) {
                free(x);
                continue;
            }
            qsort(x, (size_t)m, sizeof *x, cmp_double);
            double q1 = as_quantile_sorted(x, m, 0.25), med = as_quantile_sorted(x, m, 0.5),
                   q3 = as_quantile_sorted(x, m, 0.75), iqr = q3 - q1;
            double wlo = q1, whi = q3;
            for (int i = 0; i < m; i++)
                if (x[i] >= q1 - 1.5 * iqr) {
                    wlo = x[i];
                    break;
                }
            for (int i = m - 1; i >= 0; i--)
                if (x[i] <= q3 + 1.5 * iqr) {
                    whi = x[i];
                    break;
                }
            double cx = g - 0.4 + slot * (s + 0.5);
            int col = cat_color(s);
            const int *rgb = okabe_ito[s % AS_PLOT_NCOLORS];
            plscol0a(C_MISSING, rgb[0], rgb[1], rgb[2], 0.35);
            plcol0(C_MISSING);
            PLFLT bxs[4] = {cx - bw / 2, cx + bw / 2, cx + bw / 2, cx - bw / 2};
            PLFLT bys[4] = {q1, q1, q3, q3};
            if (q3 > q1) plfill(4, bxs, bys);
            plscol0a(C_MISSING, 0xC8, 0xC8, 0xC8, 1.0);
            plcol0(col);
            plwidth(1.5);
            PLFLT ox[5] = {cx - bw / 2, cx + bw / 2, cx + bw / 2, cx - bw / 2, cx - bw / 2};
            PLFLT oy[5] = {q1, q1, q3, q3, q1};
            plline(5, ox, oy);
            pljoin(cx, q3, cx, whi);
            pljoin(cx, q1, cx, wlo);
            pljoin(cx - bw / 4, whi, cx + bw / 4, whi);
            pljoin(cx - bw / 4, wlo, cx + bw / 4, wlo);
            plwidth(2.6);
            plcol0(C_FG);
            pljoin(cx - bw / 2, med, cx + bw / 2, med);
            plwidth(1);
            plcol0(col);
            plschr(0, 0.55);
            for (int i = 0; i < m; i++)
                if (x[i] < wlo || x[i] > whi) {
                    PLFLT px = cx, py = x[i];
                    plstring(1, &px, &py, "#(727)");
                }
            plschr(0, 1.0);
            free(x);
        }
    }
    return cat_frame_end(&c, &p->f, p->logy, ty, nty, ylo, yhi, p->group_names, p->ngroups, 60,
                         p->nseries > 1 && p->series_names ? p->series_names : NULL, p->nseries,
                         err);
}

/* ---------------------------------------------------------------- bars */
char *as_plot_bars(const as_barplot *p, char *err)
{
    int nb = p->ngroups * p->nseries;
    if (nb <= 0) {
        as_err_set(err, AS_ERR_USAGE, "bar plot: no bars");
        return NULL;
    }
    double ylo = 0, yhi = 0;
    if (!finite_range(p->v, nb, p->logy, &ylo, &yhi)) {
        as_err_set(err, AS_ERR_USAGE, "bar plot: no finite data");
        return NULL;
    }
    double base;
    if (p->logy) {
        ylo = floor(ylo);
        base = ylo;
    } else {
        if (ylo > 0) ylo = 0;
        base = 0;
    }
    pad_range(&ylo, &yhi, 0.04);
    if (!p->logy && ylo < 0 && base == 0) {
        double lo = 0, hi = 0;
        finite_range(p->v, nb, 0, &lo, &hi);
        if (lo >= 0) ylo = 0;
    }
    if (fixed_range(p->ymin, p->ymax, p->logy, &ylo, &yhi) && p->logy) base = ylo;
    canvas c;
    double ty[16];
    int nty;
    if (cat_frame_begin(&c, &p->f, p->nseries > 1 && p->series_names, p->ngroups, p->logy, ylo,
                        yhi, ty, &nty, err))
        return NULL;
    double slot = 0.84 / p->nseries;
    for (int g = 0; g < p->ngroups; g++)
        for (int s = 0; s < p->nseries; s++) {
            double v = p->v[g * p->nseries + s];
            if (!isfinite(v) || (p->logy && v <= 0)) continue;
            if (p->logy) v = log10(v);
            double x0 = g - 0.42 + slot * s + slot * 0.06, x1 = g - 0.42 + slot * (s + 1) - slot * 0.06;
            PLFLT xs[4] = {x0, x1, x1, x0}, ys[4] = {base, base, v, v};
            plcol0(cat_color(s));
            plfill(4, xs, ys);
        }
    return cat_frame_end(&c, &p->f, p->logy, ty, nty, ylo, yhi, p->group_names, p->ngroups, 36,
                         p->nseries > 1 && p->series_names ? p->series_names : NULL, p->nseries,
                         err);
}
