/* as_plot: the report's figures as SVG text, drawn with PLplot's svg driver.
 *
 * Every function draws one figure into memory and returns its SVG markup (without the XML
 * prolog, ready to be inlined in HTML; the caller frees it), or NULL with err filled.
 * Palettes are colour-blind safe: Okabe & Ito (2008) for categories, viridis (van der Walt &
 * Smith, 2015) for continuous values. Missing values are NaN: skipped in lines and boxes,
 * drawn as light grey cells in heatmaps. Sizes are SVG user units (~pixels at 100%). */
#ifndef AS_PLOT_H
#define AS_PLOT_H

#include <stddef.h>

#include "as_error.h"

#define AS_PLOT_NCOLORS 7 /* distinct category colours (as_series.color modulo this) */

typedef struct {
    int width, height;  /* 0: 640 x 420 */
    const char *title;  /* top, may be NULL */
    const char *xlabel; /* with units, e.g. "sparsity (x = N / k)" */
    const char *ylabel;
} as_plot_frame;

/* ---- heatmap: rows x cols cells, z row-major; row 0 at the top. */
typedef struct {
    as_plot_frame f;
    int nrows, ncols;
    const double *z;
    const char *const *row_names; /* NULL: 0..nrows-1 */
    const char *const *col_names; /* NULL: 0..ncols-1 */
    double zmin, zmax;            /* zmin >= zmax: the data's range */
    const char *zlabel;           /* colour bar title (with units) */
    const char *annot_fmt;        /* printf format for cell values, NULL: none; shown only
                                   * when cells are large enough */
    int reverse;                  /* 1: viridis reversed (high values dark) */
} as_heatmap;

char *as_plot_heatmap(const as_heatmap *h, char *err);

/* ---- line plot: several series; style 0 solid, 1 dashed, 2 dotted; marker 0 none, 1 dots. */
typedef struct {
    const char *name; /* legend entry, NULL: not in the legend */
    int n;
    const double *x, *y;
    const double *ylo, *yhi; /* optional band (e.g. interquartile range), drawn translucent */
    int color;               /* palette index */
    int style;
    int marker;
    double width;            /* line width, 0: 2 */
} as_series;

typedef struct {
    as_plot_frame f;
    int nseries;
    const as_series *s;
    int logx, logy;
    double xmin, xmax, ymin, ymax; /* min >= max: from the data */
    int nhlines;                   /* horizontal reference lines (thin grey, labelled) */
    const double *hlines;
    const char *const *hline_names;
    int legend_pos;                /* 0 top-right inside, 1 top-left inside, 2 bottom-right,
                                    * 3 bottom-left, 4 outside right */
    const char *const *xtick_names; /* optional categorical x labels at x = 0, 1, ... */
    int nxticks;
    const double *xtick_values;     /* optional x ticks at these data values (labelled "%g"
                                     * followed by xtick_suffix), with grid lines */
    int nxtick_values;
    const char *xtick_suffix;
    int ypercent;                   /* y tick labels as percentages (0.05 -> "5%") */
    double band_lo, band_hi;        /* optional shaded vertical band [lo, hi] in x units
                                     * (band_hi > band_lo), labelled band_name */
    const char *band_name;
} as_lineplot;

char *as_plot_lines(const as_lineplot *p, char *err);

/* ---- box plots: ngroups groups (e.g. layers) x nseries side-by-side boxes (e.g. k90, k99).
 * values[g * nseries + s] holds counts[g * nseries + s] samples. Tukey boxes: median,
 * quartiles, whiskers to the furthest sample within 1.5 IQR, outliers as dots. */
typedef struct {
    as_plot_frame f;
    int ngroups, nseries;
    const char *const *group_names;
    const char *const *series_names; /* legend (shown when nseries > 1) */
    const double *const *values;
    const int *counts;
    int logy;
    double ymin, ymax; /* ymin >= ymax: from the data */
} as_boxplot;

char *as_plot_boxes(const as_boxplot *p, char *err);

/* ---- grouped bars: ngroups x nseries bars, v[g * nseries + s]. */
typedef struct {
    as_plot_frame f;
    int ngroups, nseries;
    const char *const *group_names;
    const char *const *series_names;
    const double *v;
    int logy;
    double ymin, ymax;
} as_barplot;

char *as_plot_bars(const as_barplot *p, char *err);

/* 1 if PLplot on this system has its svg driver (checked once; without it nothing draws). */
int as_plot_available(char *err);


#endif
