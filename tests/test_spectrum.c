/* Tests of analysis/as_spectrum and `attnscope spectrum`: known sinusoids, a RoPE-rotated head
 * whose period and RoPE pair are known, and the command's records and errors. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_spectrum.h"
#include "as_testutil.h"
#include "as_trace.h"

Test(spectrum, exact_bin_cosine)
{
    const int64_t L = 1024;
    double *A = malloc((size_t)L * sizeof *A);
    for (int64_t r = 0; r < L; r++) A[r] = 1.0 + 0.3 * cos(2 * M_PI * (double)r / 16.0 + 0.4);
    as_spectrum_opts o;
    as_spectrum_opts_init(&o);
    as_spectrum s;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_spectrum_profile(A, L, &o, &s, err), AS_OK, "%s", err);
    cr_assert_geq(s.n_peaks, 1);
    cr_assert_float_eq(s.peaks[0].period, 16.0, 1e-9);
    cr_assert_eq(s.peaks[0].bin, 64);
    cr_assert_float_eq(s.peaks[0].amplitude, 0.3, 1e-12);
    cr_assert_gt(s.peaks[0].power_frac, 0.6); /* Hann spreads over bins 63..65: 2/3 in the middle */
    cr_assert_eq(s.peaks[0].rope_i, -1);
    as_spectrum_clear(&s);
    /* without a window the line is one bin */
    o.hann = 0;
    cr_assert_eq(as_spectrum_profile(A, L, &o, &s, err), AS_OK);
    cr_assert_float_eq(s.peaks[0].power_frac, 1.0, 1e-12);
    cr_assert_float_eq(s.peaks[0].amplitude, 0.3, 1e-12);
    as_spectrum_clear(&s);
    free(A);
}

Test(spectrum, off_bin_period_and_ranges)
{
    const int64_t L = 3000;
    double *A = malloc((size_t)L * sizeof *A);
    for (int64_t r = 0; r < L; r++)
        A[r] = 0.5 * cos(2 * M_PI * (double)r / 37.3) + 0.2 * cos(2 * M_PI * (double)r / 5.5);
    as_spectrum_opts o;
    as_spectrum_opts_init(&o);
    as_spectrum s;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_spectrum_profile(A, L, &o, &s, err), AS_OK);
    cr_assert_float_eq(s.peaks[0].period, 37.3, 37.3 * 2e-3);
    cr_assert_float_eq(s.peaks[1].period, 5.5, 5.5 * 2e-3);
    as_spectrum_clear(&s);
    o.max_period = 20; /* only the short period is eligible */
    cr_assert_eq(as_spectrum_profile(A, L, &o, &s, err), AS_OK);
    cr_assert_float_eq(s.peaks[0].period, 5.5, 5.5 * 2e-3);
    as_spectrum_clear(&s);
    cr_assert_eq(as_spectrum_profile(A, 3, &o, &s, err), AS_ERR_USAGE);
    free(A);
}

Test(spectrum, rope_periods)
{
    cr_assert_float_eq(as_rope_period(10000, 64, 0), 2 * M_PI, 1e-12);
    cr_assert_float_eq(as_rope_period(100000, 64, 8), 2 * M_PI * pow(100000, 0.25), 1e-9);
}

/* A RoPE head: only pair i = 1 of d = 8 (dims 1 and 5, Hugging Face's rotate_half layout)
 * carries signal; queries and keys are rotated by theta_1 = base^(-2/8) per position. */
#define BASE 10000.0
static double rope_gen(void *ctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    (void)ctx;
    (void)layer;
    (void)head;
    const int64_t n = 2048, t = 4;
    double th = pow(BASE, -2.0 / 8.0);
    if (which == 'v') return sin(0.37 * (double)(row * 8 + col));
    double pos = which == 'q' ? (double)(n - t + row) : (double)row;
    double mag = which == 'q' ? 4.0 : 2.0;
    if (col == 1) return mag * cos(th * pos);
    if (col == 5) return mag * sin(th * pos);
    return 0.0;
}

static char *rope_trace(void)
{
    char *p = as_test_path("rope.safetensors");
    as_test_trace_spec sp = {0};
    sp.n_layers = 1;
    sp.hq = sp.hkv = 1;
    sp.t = 4;
    sp.n = 2048;
    sp.d = 8;
    sp.dtype = AS_DT_F64;
    sp.causal = 1;
    sp.gen = rope_gen;
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

Test(spectrum, rope_head_period_and_pair)
{
    char *p = rope_trace(), err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    as_spectrum_opts o;
    as_spectrum_opts_init(&o);
    o.rope_base = BASE;
    as_spectrum s;
    cr_assert_eq(as_spectrum_head(as_trace_layer(tr, 0), 0, &o, &s, err), AS_OK, "%s", err);
    double P = 2 * M_PI * pow(BASE, 2.0 / 8.0); /* 62.83 */
    cr_assert_eq(s.len, 2048);
    cr_assert_eq(s.n_queries, 4);
    cr_assert_float_eq(s.peaks[0].period, P, P * 3e-3, "period %g want %g", s.peaks[0].period, P);
    cr_assert_eq(s.peaks[0].rope_i, 1);
    cr_assert_eq(s.rope_dom_i, 1);
    cr_assert_float_eq(s.rope_dom_share, 1.0, 1e-12);
    /* the averaged profile is exactly exp(A cos(theta r)) / Z for the lags every query sees */
    double A = 4.0 * 2.0 / sqrt(8.0), th = 2 * M_PI / P;
    double ratio = s.profile[100] / s.profile[0];
    cr_assert_float_eq(ratio, exp(A * cos(th * 100) - A), 1e-10);
    as_spectrum_clear(&s);
    as_trace_free(tr);
    free(p);
}

Test(spectrum, cli_records_and_errors)
{
    char *p = rope_trace(), args[1024], *out = NULL;
    snprintf(args, sizeof args, "spectrum '%s' --rope-theta 10000 --peaks 2 --json", p);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert_not_null(strstr(out, "\"spectrum_peak\""));
    cr_assert_not_null(strstr(out, "\"rope_i\":\t1"), "%.2000s", out);
    cr_assert_not_null(strstr(out, "\"spectrum_rope\""));
    free(out);
    snprintf(args, sizeof args, "spectrum '%s' --bins --csv", p);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert_not_null(strstr(out, "spectrum_bin"));
    free(out);
    snprintf(args, sizeof args, "spectrum '%s'", p);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert_not_null(strstr(out, "Dominant periods"));
    free(out);
    snprintf(args, sizeof args, "spectrum '%s' --peaks 0 2>/dev/null", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "spectrum '%s' --layer 7 2>/dev/null", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "spectrum '%s' --rope-pairs diagonal 2>/dev/null", p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    cr_assert_eq(as_test_run_cli("spectrum /nonexistent.safetensors 2>/dev/null", NULL), 2);
    cr_assert_eq(as_test_run_cli("spectrum 2>/dev/null", NULL), 2);
    free(p);
}
