/* attnscope spectrum: the spectrum of attention weight as a function of relative position,
 * per head, with its dominant periods related to the RoPE frequencies. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_spectrum.h"
#include "cli_help.h"
#include "cli_par.h"
#include "cli_util.h"

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

/* The units of the MPI engine (cli/cli_par.h): one per (layer, head); a unit's result is its
 * records and the top peak's distance to the RoPE grid (for the spectrum_rope summary). */
typedef struct {
    size_t li;
    int64_t h;
} spec_unit;

typedef struct {
    as_trace *tr;
    const char *trace;
    const spec_unit *units;
    as_fmt fmt;
    int bins;
    as_spectrum_opts so;
    unsigned char *checked; /* [layers] this rank checked the layer's values */
    /* rank 0 */
    as_out *o;
    double *lr; /* |ln(period / rope period)| of top peaks */
    size_t n_lr;
    int64_t d_rope;
} spec_job;

static as_status spec_work(void *vctx, size_t u, as_mpi_buf *buf, char *err)
{
    spec_job *j = vctx;
    const as_layer *l = as_trace_layer(j->tr, j->units[u].li);
    const int64_t h = j->units[u].h;
    as_status st = AS_OK;
    if (!j->checked[j->units[u].li]) { /* a rank checks each layer it reads once */
        st = as_par_check_layer(j->tr, l, err);
        if (st != AS_OK) return st;
        j->checked[j->units[u].li] = 1;
    }
    as_spectrum s;
    char e[AS_ERR_LEN];
    st = as_spectrum_head(l, h, &j->so, &s, e);
    if (st != AS_OK) {
        /* the library's messages start with its module name, the CLI's with
         * "attnscope spectrum: ": name the trace instead of repeating "spectrum:" */
        const char *m = strncmp(e, "spectrum: ", 10) == 0 ? e + 10 : e;
        return as_err_set(err, st, "%s: %s", j->trace, m);
    }
    double lr = NAN;
    if (s.n_peaks > 0 && s.peaks[0].rope_i >= 0)
        lr = fabs(log(s.peaks[0].period / s.peaks[0].rope_period));
    as_mpi_put_f64(buf, lr);
    as_mpi_put_i64(buf, l->d);
    as_out *o = as_out_new_unit(j->fmt, buf);
    int64_t kvh = as_layer_kv_head(l, h);
    cJSON *rec = as_rec_new("spectrum_head", l->index, h);
    cJSON_AddNumberToObject(rec, "kv_head", (double)kvh);
    cJSON_AddNumberToObject(rec, "len", (double)s.len);
    cJSON_AddNumberToObject(rec, "queries", (double)s.n_queries);
    if (s.n_peaks > 0) {
        cJSON_AddNumberToObject(rec, "top_period", s.peaks[0].period);
        cJSON_AddNumberToObject(rec, "top_power_frac", s.peaks[0].power_frac);
    } else {
        cJSON_AddNullToObject(rec, "top_period");
        cJSON_AddNullToObject(rec, "top_power_frac");
    }
    if (s.rope_dom_i >= 0) {
        cJSON_AddNumberToObject(rec, "rope_dom_i", s.rope_dom_i);
        cJSON_AddNumberToObject(rec, "rope_dom_period", s.rope_dom_period);
        cJSON_AddNumberToObject(rec, "rope_dom_share", s.rope_dom_share);
    }
    as_out_add(o, rec);
    for (int k = 0; k < s.n_peaks; k++) {
        const as_spectrum_peak *pk = &s.peaks[k];
        cJSON *pr = as_rec_new("spectrum_peak", l->index, h);
        cJSON_AddNumberToObject(pr, "kv_head", (double)kvh);
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
    for (int64_t k = 0; j->bins && k < s.n_bins; k++) {
        cJSON *br = as_rec_new("spectrum_bin", l->index, h);
        cJSON_AddNumberToObject(br, "bin", (double)k);
        cJSON_AddNumberToObject(br, "freq", (double)k / (double)s.len);
        if (k > 0) cJSON_AddNumberToObject(br, "period", (double)s.len / (double)k);
        else cJSON_AddNullToObject(br, "period");
        cJSON_AddNumberToObject(br, "power", s.power[k]);
        cJSON_AddNumberToObject(br, "amplitude", s.amp[k]);
        as_out_add(o, br);
    }
    as_out_free(o);
    as_spectrum_clear(&s);
    return AS_OK;
}

static as_status spec_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    spec_job *j = vctx;
    (void)u;
    double lr = as_mpi_get_f64(in);
    int64_t d = as_mpi_get_i64(in);
    if (in->bad || as_out_add_unit(j->o, in) != 0)
        return as_err_set(err, AS_ERR_IO, "a unit's records were damaged in transit");
    if (!isnan(lr) && j->lr) {
        j->lr[j->n_lr++] = lr;
        if (!j->d_rope) j->d_rope = d;
    }
    return AS_OK;
}

static void spec_progress(void *ctx, double done, double total)
{
    (void)total;
    as_progress_update(ctx, (uint64_t)done);
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
    as_cli_common c;
    as_cli_common_init(&c);
    as_spectrum_opts so;
    as_spectrum_opts_init(&so);
    double theta = 0;
    int bins = 0, opt, r;
    long v;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((r = as_cli_common_opt(&c, "spectrum", opt, optarg)) == 1) continue;
        if (r == 2) return 0;
        if (r < 0) return 2;
        switch (opt) {
        case O_PEAKS:
            if (as_cli_parse_int("spectrum", "peaks", optarg, 1, 1000, &v)) return 2;
            so.n_peaks = (int)v;
            break;
        case O_MAXLAG:
            if (as_cli_parse_int("spectrum", "max-lag", optarg, 4, 1L << 40, &v)) return 2;
            so.max_lag = v;
            break;
        case O_MINP: if (parse_pos_real("min-period", optarg, &so.min_period)) return 2; break;
        case O_MAXP: if (parse_pos_real("max-period", optarg, &so.max_period)) return 2; break;
        case O_NOWIN: so.hann = 0; break;
        case O_THETA: if (parse_pos_real("rope-theta", optarg, &theta)) return 2; break;
        case O_PAIRS:
            if (strcmp(optarg, "half") == 0) so.pairs = AS_ROPE_HALF;
            else if (strcmp(optarg, "interleaved") == 0) so.pairs = AS_ROPE_INTERLEAVED;
            else return as_cli_usage("spectrum", "--rope-pairs expects half or interleaved, got '%s'", optarg);
            break;
        case O_BINS: bins = 1; break;
        default: return as_cli_bad_option("spectrum", opt, argv);
        }
    }
    if (optind != argc - 1) return as_cli_usage("spectrum", "expects exactly one TRACE");
    if (so.max_period > 0 && so.max_period < so.min_period)
        return as_cli_usage("spectrum", "--max-period %g is below --min-period %g",
                            so.max_period, so.min_period);
    c.trace = argv[optind];
    int code;
    as_trace *tr = as_par_open_trace("spectrum", c.trace, &code);
    if (!tr) return code;
    if (c.layer >= 0 && !as_trace_find_layer(tr, c.layer)) {
        as_trace_free(tr);
        return as_cli_usage("spectrum", "%s has no layer %d", c.trace, c.layer);
    }
    /* the RoPE base: option, metadata, or the common default when RoPE was applied */
    const char *theta_src = "none";
    if (theta > 0) {
        theta_src = "option";
    } else {
        static const char *const keys[] = {"rope_theta", "rope_base", "rope_freq_base", NULL};
        for (int i = 0; keys[i] && theta_src[0] == 'n'; i++) {
            const char *m = as_trace_meta(tr, keys[i]);
            char *e;
            double x = m ? strtod(m, &e) : 0;
            if (m && e != m && *e == '\0' && x > 0 && isfinite(x)) {
                theta = x;
                theta_src = keys[i];
            }
        }
        if (theta <= 0 && as_trace_rope_applied(tr) == 1) {
            theta = 10000.0;
            theta_src = "default";
        }
    }
    so.rope_base = theta;
    char err[AS_ERR_LEN];
    int rc = 0;
    uint64_t total = 0;
    for (size_t li = 0; li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (c.layer >= 0 && l->index != c.layer) continue;
        if (c.head >= l->hq) {
            rc = as_cli_usage("spectrum", "layer %d has %lld heads", l->index, (long long)l->hq);
            as_trace_free(tr);
            return rc;
        }
        total += (uint64_t)(c.head >= 0 ? 1 : l->hq);
    }
    spec_unit *units = malloc((total + 1) * sizeof *units);
    double *cost = malloc((total + 1) * sizeof *cost);
    size_t nu = 0;
    for (size_t li = 0; units && cost && li < as_trace_n_layers(tr); li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (c.layer >= 0 && l->index != c.layer) continue;
        for (int64_t h = 0; h < l->hq; h++) {
            if (c.head >= 0 && h != c.head) continue;
            units[nu] = (spec_unit){li, h};
            cost[nu++] = 1; /* one head's transform; the progress bar counts heads */
        }
    }
    spec_job j;
    memset(&j, 0, sizeof j);
    j.tr = tr;
    j.trace = c.trace;
    j.units = units;
    j.fmt = c.fmt;
    j.bins = bins;
    j.so = so;
    j.checked = calloc(as_trace_n_layers(tr) + 1, 1);
    if ((code = as_mpi_agree(units && cost && j.checked ? 0 : as_cli_fail("spectrum", AS_ERR_NOMEM, "out of memory"))) != 0) {
        free(units);
        free(cost);
        free(j.checked);
        as_trace_free(tr);
        return code;
    }
    if (as_mpi_rank() == 0) {
        j.o = as_out_new(c.fmt, "spectrum", c.trace);
        cJSON *rope = cJSON_CreateObject();
        if (theta > 0) cJSON_AddNumberToObject(rope, "theta", theta);
        else cJSON_AddNullToObject(rope, "theta");
        cJSON_AddStringToObject(rope, "source", theta_src);
        cJSON_AddStringToObject(rope, "pairs", so.pairs == AS_ROPE_HALF ? "half" : "interleaved");
        as_out_meta(j.o, "rope", rope);
        j.lr = calloc(total + 1, sizeof *j.lr);
    }
    as_progress *pg = as_progress_new("spectrum", total, c.quiet || as_mpi_rank() != 0);
    as_mpi_job job = {nu, cost, spec_work, spec_consume, &j, spec_progress, pg};
    as_status st = as_mpi_run(&job, NULL, err);
    free(units);
    free(cost);
    free(j.checked);
    if (st != AS_OK) rc = as_par_fail("spectrum", st, err);
    as_out *o = j.o;
    double *lr = j.lr;
    size_t n_lr = j.n_lr;
    int64_t d_rope = j.d_rope;
    if (!o) { /* ranks other than 0: rank 0 writes */
        as_progress_free(pg);
        as_trace_free(tr);
        return rc;
    }
    as_progress_free(pg);
    if (n_lr > 0 && rc == 0) {
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
    as_trace_free(tr);
    if (rc != 0) {
        as_out_free(o);
        return rc;
    }
    /* printed only now: a run that fails writes nothing to stdout */
    if (theta > 0 && c.fmt == AS_FMT_TABLE)
        printf("RoPE base %g (%s), pairs %s\n\n", theta, theta_src,
               so.pairs == AS_ROPE_HALF ? "(i, i+d/2)" : "(2i, 2i+1)");
    return as_out_finish(o, stdout);
}
