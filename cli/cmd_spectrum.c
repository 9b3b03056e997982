/* attnscope spectrum: the spectrum of attention weight as a function of relative position,
 * per head, with its dominant periods related to the RoPE frequencies. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_spectrum.h"
#include "cli_help.h"
#include "cli_job.h"

const char as_help_spectrum[] =
    "usage: attnscope spectrum TRACE [--layer L] [--head H] [--peaks K] [--max-lag N]\n"
    "                          [--min-period P] [--max-period P] [--no-window]\n"
    "                          [--rope-theta BASE] [--rope-pairs half|interleaved]\n"
    "                          [--bins] [--json|--csv]\n\n"
    "For each layer x query head: average the attention weights over the head's queries as a\n"
    "function of relative position r = position - key (0 .. L-1), take the power spectrum of\n"
    "that profile (mean removed, Hann window unless --no-window; FFTW) and list its K strongest\n"
    "peaks (default 5) with period between --min-period (default 2) and --max-period (default\n"
    "L/2). With a RoPE base (--rope-theta, else the trace's metadata rope_theta, else 10000\n"
    "when the trace says RoPE was applied) each peak is matched with the nearest RoPE period\n"
    "2 pi base^(2i/d), and each head reports the RoPE pair i with the largest mean logit\n"
    "amplitude scale * mean|q_i| * mean|k_i| (pairs (i, i+d/2) as in Hugging Face Llama;\n"
    "--rope-pairs interleaved: (2i, 2i+1)). Records 'spectrum_head' (layer, head, kv_head, len,\n"
    "queries, top_period, top_power_frac, rope_dom_i, rope_dom_period, rope_dom_share),\n"
    "'spectrum_peak' (layer, head, kv_head, peak, period, freq, bin, power_frac, amplitude,\n"
    "rope_i, rope_period, rope_ratio) and with --bins 'spectrum_bin' (layer, head, bin, freq,\n"
    "period, power, amplitude); with RoPE, one 'spectrum_rope' record (theta, d, grid_ratio,\n"
    "heads, median_abs_log_ratio of the top peaks to their nearest RoPE period, random_median\n"
    "= ln(grid_ratio)/4 for periods unrelated to RoPE, frac_within_5pct, random_frac_within_5pct).\n"
    "Definitions: docs/theory.md (Attention spectrum).\n";

static int parse_pos_real(const char *opt, const char *arg, double *out)
{
    char *e;
    double v = strtod(arg, &e);
    if (e == arg || *e || !isfinite(v) || v <= 0)
        return as_cli_usage("spectrum", "--%s expects a positive number, got '%s'", opt, arg);
    *out = v;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum { O_PEAKS = 3000, O_MAXLAG, O_MINP, O_MAXP, O_NOWIN, O_THETA, O_PAIRS, O_BINS };

typedef struct {
    as_spectrum_opts so;
    double theta; /* --rope-theta, then the base in use (0: none) */
    int bins;
} spectrum_cli;

static int spectrum_opt(void *ctx, int opt, const char *arg)
{
    spectrum_cli *sc = ctx;
    as_spectrum_opts *so = &sc->so;
    long v;
    switch (opt) {
    case O_PEAKS:
        if (as_cli_parse_int("spectrum", "peaks", arg, 1, 1000, &v)) return 2;
        so->n_peaks = (int)v;
        return 0;
    case O_MAXLAG:
        if (as_cli_parse_int("spectrum", "max-lag", arg, 4, 1L << 40, &v)) return 2;
        so->max_lag = v;
        return 0;
    case O_MINP: return parse_pos_real("min-period", arg, &so->min_period) ? 2 : 0;
    case O_MAXP: return parse_pos_real("max-period", arg, &so->max_period) ? 2 : 0;
    case O_NOWIN: so->hann = 0; return 0;
    case O_THETA: return parse_pos_real("rope-theta", arg, &sc->theta) ? 2 : 0;
    case O_PAIRS:
        if (strcmp(arg, "half") == 0) so->pairs = AS_ROPE_HALF;
        else if (strcmp(arg, "interleaved") == 0) so->pairs = AS_ROPE_INTERLEAVED;
        else return as_cli_usage("spectrum", "--rope-pairs expects half or interleaved, got '%s'", arg);
        return 0;
    case O_BINS: sc->bins = 1; return 0;
    default: return -1;
    }
}

/* The RoPE base: the option, the trace's metadata, or the common default when the trace says
 * RoPE was applied (0: none). *src names where it came from. */
static double rope_base(const as_trace *tr, double option, const char **src)
{
    if (option > 0) {
        *src = "option";
        return option;
    }
    static const char *const keys[] = {"rope_theta", "rope_base", "rope_freq_base", NULL};
    for (int i = 0; keys[i]; i++) {
        const char *m = as_trace_meta(tr, keys[i]);
        char *e;
        double x = m ? strtod(m, &e) : 0;
        if (m && e != m && *e == '\0' && x > 0 && isfinite(x)) {
            *src = keys[i];
            return x;
        }
    }
    *src = as_trace_rope_applied(tr) == 1 ? "default" : "none";
    return as_trace_rope_applied(tr) == 1 ? 10000.0 : 0;
}

static void head_record(as_out *o, const as_layer *l, int64_t h, const as_spectrum *s)
{
    cJSON *rec = as_rec_new("spectrum_head", l->index, h);
    cJSON_AddNumberToObject(rec, "kv_head", (double)as_layer_kv_head(l, h));
    cJSON_AddNumberToObject(rec, "len", (double)s->len);
    cJSON_AddNumberToObject(rec, "queries", (double)s->n_queries);
    if (s->n_peaks > 0) {
        cJSON_AddNumberToObject(rec, "top_period", s->peaks[0].period);
        cJSON_AddNumberToObject(rec, "top_power_frac", s->peaks[0].power_frac);
    } else {
        cJSON_AddNullToObject(rec, "top_period");
        cJSON_AddNullToObject(rec, "top_power_frac");
    }
    if (s->rope_dom_i >= 0) {
        cJSON_AddNumberToObject(rec, "rope_dom_i", s->rope_dom_i);
        cJSON_AddNumberToObject(rec, "rope_dom_period", s->rope_dom_period);
        cJSON_AddNumberToObject(rec, "rope_dom_share", s->rope_dom_share);
    }
    as_out_add(o, rec);
}

static void peak_records(as_out *o, const as_layer *l, int64_t h, const as_spectrum *s)
{
    for (int k = 0; k < s->n_peaks; k++) {
        const as_spectrum_peak *pk = &s->peaks[k];
        cJSON *pr = as_rec_new("spectrum_peak", l->index, h);
        cJSON_AddNumberToObject(pr, "kv_head", (double)as_layer_kv_head(l, h));
        cJSON_AddNumberToObject(pr, "peak", k + 1);
        cJSON_AddNumberToObject(pr, "period", pk->period);
        cJSON_AddNumberToObject(pr, "freq", pk->freq);
        cJSON_AddNumberToObject(pr, "bin", (double)pk->bin);
        cJSON_AddNumberToObject(pr, "power_frac", pk->power_frac);
        cJSON_AddNumberToObject(pr, "amplitude", pk->amplitude);
        if (pk->rope_i >= 0) {
            cJSON_AddNumberToObject(pr, "rope_i", pk->rope_i);
            cJSON_AddNumberToObject(pr, "rope_period", pk->rope_period);
            cJSON_AddNumberToObject(pr, "rope_ratio", pk->period / pk->rope_period);
        }
        as_out_add(o, pr);
    }
}

static void bin_records(as_out *o, const as_layer *l, int64_t h, const as_spectrum *s)
{
    for (int64_t k = 0; k < s->n_bins; k++) {
        cJSON *br = as_rec_new("spectrum_bin", l->index, h);
        cJSON_AddNumberToObject(br, "bin", (double)k);
        cJSON_AddNumberToObject(br, "freq", (double)k / (double)s->len);
        if (k > 0) cJSON_AddNumberToObject(br, "period", (double)s->len / (double)k);
        else cJSON_AddNullToObject(br, "period");
        cJSON_AddNumberToObject(br, "power", s->power[k]);
        cJSON_AddNumberToObject(br, "amplitude", s->amp[k]);
        as_out_add(o, br);
    }
}

/* One query head: its spectrum, peaks and (--bins) bins. */
static int spectrum_unit(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o)
{
    const spectrum_cli *sc = ctx;
    as_spectrum s;
    char err[AS_ERR_LEN];
    as_status st = as_spectrum_head(u->layer, u->head, &sc->so, &s, err);
    if (st != AS_OK) {
        /* the library's messages start with its module name, the CLI's with
         * "attnscope spectrum: ": name the trace instead of repeating "spectrum:" */
        const char *m = strncmp(err, "spectrum: ", 10) == 0 ? err + 10 : err;
        char msg[AS_ERR_LEN + 4200];
        snprintf(msg, sizeof msg, "%s: %s", j->c.trace, m);
        return as_cli_fail(j->cmd, st, msg);
    }
    head_record(o, u->layer, u->head, &s);
    peak_records(o, u->layer, u->head, &s);
    if (sc->bins) bin_records(o, u->layer, u->head, &s);
    as_spectrum_clear(&s);
    return 0;
}

/* The 'spectrum_rope' record: every head's top peak (peak 1 of 'spectrum_peak', when matched
 * with a RoPE period) against the RoPE grid. Returns 0, or -1 on out of memory. */
static int rope_summary(as_out *o, const as_trace *tr, double theta)
{
    const cJSON *recs = as_out_records(o), *r;
    double *lr = malloc(((size_t)cJSON_GetArraySize(recs) + 1) * sizeof *lr);
    if (!lr) return -1;
    size_t n_lr = 0; /* |ln(period / rope period)| of the top peaks */
    int64_t d_rope = 0;
    cJSON_ArrayForEach(r, recs)
    {
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(r, "record");
        const cJSON *peak = cJSON_GetObjectItemCaseSensitive(r, "peak");
        const cJSON *rp = cJSON_GetObjectItemCaseSensitive(r, "rope_period");
        if (!cJSON_IsString(kind) || strcmp(kind->valuestring, "spectrum_peak") != 0 ||
            !cJSON_IsNumber(peak) || peak->valuedouble != 1 || !cJSON_IsNumber(rp))
            continue;
        const double period = cJSON_GetObjectItemCaseSensitive(r, "period")->valuedouble;
        lr[n_lr++] = fabs(log(period / rp->valuedouble));
        if (!d_rope)
            d_rope = as_trace_find_layer(
                         tr, cJSON_GetObjectItemCaseSensitive(r, "layer")->valueint)->d;
    }
    if (n_lr > 0) {
        /* RoPE periods form a geometric grid of ratio g = base^(2/d): a period unrelated to
         * them (log-uniform) is |ln(P / nearest)| ~ U(0, ln(g)/2) away, median ln(g)/4 */
        qsort(lr, n_lr, sizeof *lr, cmp_double);
        double med = n_lr % 2 ? lr[n_lr / 2] : 0.5 * (lr[n_lr / 2 - 1] + lr[n_lr / 2]);
        double lg = 2.0 * log(theta) / (double)d_rope, within = 0;
        for (size_t i = 0; i < n_lr; i++) within += lr[i] <= log(1.05);
        cJSON *m = as_rec_new("spectrum_rope", -1, -1);
        cJSON_DeleteItemFromObject(m, "layer");
        cJSON_AddNumberToObject(m, "theta", theta);
        cJSON_AddNumberToObject(m, "d", (double)d_rope);
        cJSON_AddNumberToObject(m, "grid_ratio", exp(lg));
        cJSON_AddNumberToObject(m, "heads", (double)n_lr);
        cJSON_AddNumberToObject(m, "median_abs_log_ratio", med);
        cJSON_AddNumberToObject(m, "random_median", lg / 4.0);
        cJSON_AddNumberToObject(m, "frac_within_5pct", within / (double)n_lr);
        double rf = log(1.05) / (lg / 2.0);
        cJSON_AddNumberToObject(m, "random_frac_within_5pct", rf < 1 ? rf : 1.0);
        as_out_add(o, m);
    }
    free(lr);
    return 0;
}

static void spectrum_tables(as_out *o)
{
    static const char *const rcols[] = {"theta", "d", "grid_ratio", "heads", "median_abs_log_ratio",
                                        "random_median", "frac_within_5pct",
                                        "random_frac_within_5pct", NULL};
    static const char *const rfmts[] = {"%g", "%d", "%.4f", "%d", "%.4f", "%.4f", "%.3f", "%.3f", NULL};
    as_out_table(o, "spectrum_rope",
                 "Top periods vs the RoPE grid (a period unrelated to RoPE: random_* columns)",
                 rcols, NULL, rfmts);
    static const char *const hcols[] = {"layer", "head", "kv_head", "len", "queries", "top_period",
                                        "top_power_frac", "rope_dom_i", "rope_dom_period",
                                        "rope_dom_share", NULL};
    static const char *const hfmts[] = {"%d", "%d", "%d", "%d", "%d", "%.2f",
                                        "%.4f", "%d", "%.1f", "%.3f", NULL};
    as_out_table(o, "spectrum_head", "Attention spectrum per head (relative position)", hcols,
                 NULL, hfmts);
    static const char *const pcols[] = {"layer", "head", "peak", "period", "freq", "power_frac",
                                        "amplitude", "rope_i", "rope_period", "rope_ratio", NULL};
    static const char *const pfmts[] = {"%d", "%d", "%d", "%.2f", "%.5f", "%.4f",
                                        "%.3e", "%d", "%.1f", "%.3f", NULL};
    as_out_table(o, "spectrum_peak", "Dominant periods", pcols, NULL, pfmts);
    static const char *const bcols[] = {"layer", "head", "bin", "freq", "period", "power",
                                        "amplitude", NULL};
    static const char *const bfmts[] = {"%d", "%d", "%d", "%.5f", "%.2f", "%.4e", "%.4e", NULL};
    as_out_table(o, "spectrum_bin", "Spectrum bins", bcols, NULL, bfmts);
}

int as_cmd_spectrum(int argc, char **argv)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"peaks", required_argument, 0, O_PEAKS},
                                         {"max-lag", required_argument, 0, O_MAXLAG},
                                         {"min-period", required_argument, 0, O_MINP},
                                         {"max-period", required_argument, 0, O_MAXP},
                                         {"no-window", no_argument, 0, O_NOWIN},
                                         {"rope-theta", required_argument, 0, O_THETA},
                                         {"rope-pairs", required_argument, 0, O_PAIRS},
                                         {"bins", no_argument, 0, O_BINS},
                                         {0, 0, 0, 0}};
    const char *cmd = "spectrum";
    spectrum_cli sc = {.theta = 0, .bins = 0};
    as_spectrum_opts_init(&sc.so);
    as_cli_common c;
    int rc = as_cli_parse_trace(cmd, argc, argv, opts, NULL, spectrum_opt, &sc, &c);
    if (rc != AS_CLI_GO) return rc;
    if (sc.so.max_period > 0 && sc.so.max_period < sc.so.min_period)
        return as_cli_usage(cmd, "--max-period %g is below --min-period %g", sc.so.max_period,
                            sc.so.min_period);
    as_cli_job j;
    if ((rc = as_cli_job_open(&j, cmd, &c, -1, AS_CLI_UNITS_HEAD)) != 0) return rc;
    const char *theta_src;
    sc.theta = sc.so.rope_base = rope_base(j.tr, sc.theta, &theta_src);
    as_out *o = as_out_new(c.fmt, cmd, c.trace);
    cJSON *rope = cJSON_CreateObject();
    if (sc.theta > 0) cJSON_AddNumberToObject(rope, "theta", sc.theta);
    else cJSON_AddNullToObject(rope, "theta");
    cJSON_AddStringToObject(rope, "source", theta_src);
    cJSON_AddStringToObject(rope, "pairs", sc.so.pairs == AS_ROPE_HALF ? "half" : "interleaved");
    as_out_meta(o, "rope", rope);
    rc = as_cli_job_run(&j, cmd, spectrum_unit, &sc, o);
    if (rc == 0 && rope_summary(o, j.tr, sc.theta) != 0)
        rc = as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
    spectrum_tables(o);
    as_cli_job_close(&j);
    /* printed only now: a run that fails writes nothing to stdout */
    if (rc == 0 && sc.theta > 0 && c.fmt == AS_FMT_TABLE)
        printf("RoPE base %g (%s), pairs %s\n\n", sc.theta, theta_src,
               sc.so.pairs == AS_ROPE_HALF ? "(i, i+d/2)" : "(2i, 2i+1)");
    return as_out_done(o, rc);
}
