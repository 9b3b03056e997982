/* Tests of report/as_summary: the per-layer arrays the report and `compare` show, against a
 * brute-force float64 computation from the definitions (attention profile, sink mass, entropy,
 * k90 / k99, the collision space of [V^T; 1^T]) on a small causal trace, the aggregates
 * (as_sum_mean, as_sum_quantile: NumPy's linear quantile, NaNs skipped), and the quantities
 * `compare` prints. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_summary.h"
#include "as_testutil.h"
#include "as_trace.h"

enum { HQ = 2, HKV = 1, T = 3, N = 40, D = 4 };

Test(summary, mean_and_quantile)
{
    const double x[6] = {4, NAN, 1, 3, INFINITY, 2};
    cr_assert_float_eq(as_sum_mean(x, 6), 2.5, 1e-15);
    cr_assert(isnan(as_sum_mean(x + 1, 1)));
    /* finite values 1, 2, 3, 4: NumPy's linear quantile */
    cr_assert_float_eq(as_sum_quantile(x, 6, 0.5), 2.5, 1e-15);
    cr_assert_float_eq(as_sum_quantile(x, 6, 0.25), 1.75, 1e-15);
    cr_assert_float_eq(as_sum_quantile(x, 6, 1.0), 4.0, 0);
    cr_assert_float_eq(as_sum_quantile(x, 6, 0.0), 1.0, 0);
    cr_assert(isnan(as_sum_quantile(x, 0, 0.5)));
    cr_assert(isnan(as_sum_quantile(NULL, 3, 0.5)));
}

/* brute force: weights of query qi of head h over its visible keys */
static int64_t weights(const as_layer *l, int64_t h, int64_t qi, double *a)
{
    double q[D], k[D];
    const int64_t n = as_layer_visible(l, qi);
    as_layer_read_q(l, h, qi, q);
    double mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        as_layer_read_k(l, as_layer_kv_head(l, h), j, 1, k);
        double s = 0;
        for (int c = 0; c < D; c++) s += q[c] * k[c];
        a[j] = s * l->scale;
        mx = fmax(mx, a[j]);
    }
    double z = 0;
    for (int64_t j = 0; j < n; j++) z += (a[j] = exp(a[j] - mx));
    for (int64_t j = 0; j < n; j++) a[j] /= z;
    return n;
}

static int cmp_desc(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a < b) - (a > b);
}

Test(summary, layer_arrays_match_brute_force, .timeout = 120)
{
    char *p = as_test_path("sum.safetensors");
    as_test_trace_spec sp = {.n_layers = 1, .hq = HQ, .hkv = HKV, .t = T, .n = N, .d = D,
                             .dtype = AS_DT_F32, .causal = 1, .seed = 21};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    as_summary_opts o;
    as_summary_opts_init(&o);
    o.witness = 0;
    as_summary *s = as_summary_compute(tr, &o, err);
    cr_assert(s, "%s", err);
    cr_assert_eq(s->n_layers, 1);
    const as_sum_layer *L = &s->layers[0];
    const as_layer *l = as_trace_layer(tr, 0);
    cr_assert(L->hq == HQ && L->hkv == HKV && L->t == T && L->n == N && L->d == D);
    cr_assert_eq(L->nbins, N); /* fewer keys than bins: one key per bin */
    cr_assert_float_eq(L->bin_width, 1.0, 0);

    double prof[N] = {0}, a[N], sorted[N];
    for (int64_t h = 0; h < HQ; h++) {
        double sink = 0, coll = 0;
        for (int64_t qi = 0; qi < T; qi++) {
            const int64_t n = weights(l, h, qi, a);
            cr_assert_eq(n, N - T + qi + 1);
            double H = 0;
            for (int64_t j = 0; j < n; j++) {
                prof[j] += a[j] / (HQ * T);
                if (a[j] > 0) H -= a[j] * log(a[j]);
            }
            sink += a[0] / T;
            const size_t k = (size_t)(h * T + qi);
            cr_assert_float_eq(L->entropy_norm[k], H / log((double)n), 1e-10);
            cr_assert_float_eq(L->entropy_bits[k], H / log(2.0), 1e-10);
            /* k90: fewest largest weights holding 90% of the mass */
            memcpy(sorted, a, (size_t)n * sizeof *a);
            qsort(sorted, (size_t)n, sizeof *sorted, cmp_desc);
            double m = 0;
            int64_t k90 = 0, k99 = 0;
            for (int64_t j = 0; j < n; j++) {
                m += sorted[j];
                if (!k90 && m >= 0.90) k90 = j + 1;
                if (!k99 && m >= 0.99) k99 = j + 1;
            }
            cr_assert_float_eq(L->k90_frac[k], (double)k90 / (double)n, 1e-12);
            cr_assert_float_eq(L->k99_frac[k], (double)k99 / (double)n, 1e-12);
            /* Gaussian values: rank([V^T; 1^T]) = d + 1 */
            coll += (double)(n - (D + 1)) / T;
        }
        cr_assert_float_eq(L->sink_mass[h], sink, 1e-12);
        cr_assert_float_eq(L->value_rank[h], D + 1, 1e-12);
        cr_assert_float_eq(L->collision_dim[h], coll, 1e-9);
    }
    double total = 0;
    for (int j = 0; j < N; j++) {
        cr_assert_float_eq(L->profile[j], prof[j], 1e-12, "bin %d", j);
        total += L->profile[j] * L->bin_width;
    }
    cr_assert_float_eq(total, 1.0, 1e-12);
    cr_assert(s->have_entropy && s->have_rank && s->have_bottleneck && s->have_sparsity);
    cr_assert(isnan(L->tv_witness[0])); /* witness 0: no linear programs */
    for (int64_t h = 0; h < HKV; h++) cr_assert(L->erank_k[h] > 1 && L->erank_k[h] <= D);

    /* the quantities `compare` prints are aggregates of these arrays */
    double q[AS_SUM_NQ];
    as_summary_layer_quantities(s, L, q);
    cr_assert_str_eq(as_sum_qnames[0], "sink_mass");
    cr_assert_float_eq(q[0], as_sum_mean(L->sink_mass, HQ), 1e-15);
    cr_assert_float_eq(q[1], as_sum_mean(L->entropy_norm, HQ * T), 1e-15);
    cr_assert_float_eq(q[2], as_sum_quantile(L->k90_frac, HQ * T, 0.5), 1e-15);
    cr_assert_float_eq(q[5], as_sum_mean(L->collision_frac, HQ), 1e-15);
    cr_assert(isnan(q[6]));
    /* sparsity: every method's model summary counted every record, none violated */
    cr_assert(s->n_methods > 0 && s->n_levels > 0);
    for (int m = 0; m < s->n_methods; m++) {
        cr_assert(s->m_records[m] > 0, "%s", s->method_names[m]);
        cr_assert_eq(s->m_violations[m], 0, "%s", s->method_names[m]);
    }
    as_summary_free(s);

    /* one layer only, and a layer that does not exist */
    o.layer = 7;
    s = as_summary_compute(tr, &o, err);
    cr_assert(s == NULL || s->n_layers == 0);
    as_summary_free(s);
    as_trace_free(tr);
    free(p);
}
