/* Tests of sim/as_simexp: every experiment reproduces its known answer (quick grids). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_bottleneck.h"
#include "as_simexp.h"
#include "as_testutil.h"

static as_simexp_table run(const char *name, int quick)
{
    as_simexp_opts o;
    as_simexp_opts_init(&o);
    o.quick = quick;
    o.tmpdir = as_test_tmpdir();
    as_simexp_table t;
    char err[AS_ERR_LEN];
    as_status st = as_simexp_run(name, &o, &t, err);
    cr_assert_eq(st, AS_OK, "%s: %s", name, err);
    cr_assert_gt(cJSON_GetArraySize(t.records), 0);
    return t;
}

static void assert_all_ok(const as_simexp_table *t, const char *name)
{
    const cJSON *r;
    cJSON_ArrayForEach(r, t->records)
    {
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(r, "ok");
        if (!cJSON_IsTrue(ok)) {
            char *s = cJSON_PrintUnformatted(r);
            cr_log_error("%s: %s", name, s);
            free(s);
        }
    }
    cr_assert_eq(t->failed, 0, "%s: %d record(s) outside tolerance", name, t->failed);
}

static double num(const cJSON *r, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, k);
    cr_assert(cJSON_IsNumber(v), "field %s", k);
    return v->valuedouble;
}

Test(simexp, topk_mass_matches_harmonic_numbers)
{
    as_simexp_table t = run("topk-mass", 1);
    assert_all_ok(&t, "topk-mass");
    int rows = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, t.records)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(r, "record");
        if (strcmp(k->valuestring, "topk_mass") != 0) continue;
        rows++;
        cr_assert_leq(fabs(num(r, "mass_measured") - num(r, "mass_closed")), 1e-9);
    }
    cr_assert_geq(rows, 16);
    as_simexp_table_free(&t);
}

Test(simexp, spectrum_recovers_planted_periods)
{
    as_simexp_table t = run("spectrum", 1);
    assert_all_ok(&t, "spectrum");
    const cJSON *r;
    cJSON_ArrayForEach(r, t.records) cr_assert_leq(num(r, "rel_err"), 5e-3);
    as_simexp_table_free(&t);
}

Test(simexp, coverage_failure_rate_within_delta)
{
    as_simexp_table t = run("coverage", 1);
    assert_all_ok(&t, "coverage");
    const cJSON *r;
    cJSON_ArrayForEach(r, t.records)
    {
        cr_assert_eq(num(r, "trials"), 10000);
        cr_assert_geq(num(r, "p_value"), 1e-3);
    }
    as_simexp_table_free(&t);
}

Test(simexp, unknown_experiment_and_cli)
{
    as_simexp_opts o;
    as_simexp_opts_init(&o);
    as_simexp_table t;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_simexp_run("nope", &o, &t, err), AS_ERR_USAGE);
    cr_assert(as_simexp_known("topk-mass"));
    char *out = NULL;
    cr_assert_eq(as_test_run_cli("sim topk-mass --quick --csv", &out), 0);
    cr_assert_eq(strncmp(out, "record,", 7), 0, "%.200s", out);
    free(out);
    cr_assert_eq(as_test_run_cli("sim spectrum --quick --json", &out), 0);
    cr_assert_not_null(strstr(out, "\"command\":\t\"sim spectrum\""));
    free(out);
    cr_assert_eq(as_test_run_cli("sim topk-mass --bogus 2>/dev/null", NULL), 2);
}

Test(simexp, bottleneck_reproduces_cover)
{
    as_simexp_table t = run("bottleneck", 1);
    assert_all_ok(&t, "bottleneck");
    const cJSON *r;
    int half = 0;
    cJSON_ArrayForEach(r, t.records)
    {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(r, "record")->valuestring, "cover") != 0) continue;
        double n = num(r, "n"), d = num(r, "d");
        if (n <= d + 1) cr_assert_eq(num(r, "p_measured"), 0.0); /* identifiable: never */
        if (n == 2 * (d + 1)) {
            cr_assert_float_eq(num(r, "p_cover"), 0.5, 1e-12);
            half++;
        }
    }
    cr_assert_geq(half, 2);
    /* the largest TV in the fibre: 0 without a collision space, towards 1 as n/d grows */
    int rows = 0, far = 0;
    cJSON_ArrayForEach(r, t.records)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(r, "record");
        if (strcmp(k->valuestring, "max_tv") != 0) continue;
        rows++;
        const double n = num(r, "n"), d = num(r, "d");
        cr_assert_eq(num(r, "collision_dim"), num(r, "collision_dim_pred"));
        const cJSON *ex = cJSON_GetObjectItemCaseSensitive(r, "tv_exact");
        if (n <= d + 1 && cJSON_IsNumber(ex)) cr_assert_eq(ex->valuedouble, 0.0);
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(r, "tv_witness");
        if (cJSON_IsNumber(w)) {
            if (n <= d + 1) cr_assert_leq(w->valuedouble, 1e-9);
            if (cJSON_IsNumber(ex)) cr_assert_leq(w->valuedouble, ex->valuedouble + 1e-9);
            cr_assert_geq(w->valuedouble, num(r, "tv_bound") - 1e-9);
            if (n >= 64 * (d + 1)) far += w->valuedouble > 0.99;
        }
    }
    cr_assert_geq(rows, 20);
    if (as_bn_have_lp()) cr_assert_geq(far, 2); /* n = 64 (d + 1): TV > 0.99 */
    as_simexp_table_free(&t);
}

Test(simexp, rank_measures_recover_planted_spectra)
{
    as_simexp_table t = run("rank", 1);
    assert_all_ok(&t, "rank");
    const cJSON *r;
    cJSON_ArrayForEach(r, t.records)
    {
        cr_assert_eq(num(r, "rank_measured"), num(r, "rank"));
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "basis");
        if (strcmp(b->valuestring, "orthogonal") == 0) {
            cr_assert_float_eq(num(r, "erank_measured"), num(r, "erank_closed"), 1e-8 * num(r, "erank_closed"));
            cr_assert_eq(num(r, "r90_measured"), num(r, "r90_closed"));
        }
    }
    as_simexp_table_free(&t);
}
