/* test_sweep: the shared-work sweep (as_sweep) gives as_sp_run's records, in its order: the
 * integers and flags exactly, the sums to a relative 1e-9 (they run in another order; see
 * docs/benchmarks.md), on synthetic traces (peaked, flat, needle, causal, several blocks, count
 * budgets, several draws) and on the bundled sample; over two threads the records do not change. */
#include <math.h>

#include "as_sp_fixtures.h"
#include "as_sweep.h"

static recs run_sweep(const as_trace *tr, const as_sp_config *cfg, int threads)
{
    recs v = {0};
    char err[AS_ERR_LEN];
    as_status st = as_sweep_run(tr, cfg, threads, collect, &v, err);
    cr_assert_eq(st, AS_OK, "%s", err);
    return v;
}

static int cmp_canon(const void *pa, const void *pb)
{
    const as_sp_record *a = pa, *b = pb;
    int64_t ka[] = {a->layer, a->kv_head, a->method, (int64_t)a->budget_index, a->head, a->query};
    int64_t kb[] = {b->layer, b->kv_head, b->method, (int64_t)b->budget_index, b->head, b->query};
    for (int i = 0; i < 6; i++)
        if (ka[i] != kb[i]) return (ka[i] > kb[i]) - (ka[i] < kb[i]);
    return 0;
}

/* as_sp_run's records in the sweep's order (unit, method, budget, row): as_sp_run orders them
 * per block, which differs where a unit takes several blocks */
static recs run_ref(const as_trace *tr, const as_sp_config *cfg)
{
    recs v = {0};
    char err[AS_ERR_LEN];
    as_status st = as_sp_run(tr, cfg, collect, &v, err);
    cr_assert_eq(st, AS_OK, "%s", err);
    qsort(v.r, v.n, sizeof *v.r, cmp_canon);
    return v;
}

/* |x - y| <= rtol max(|x|, |y|) + atol; NaN only with NaN */
static int close_to(double x, double y, double rtol, double atol)
{
    if (isnan(x) || isnan(y)) return isnan(x) && isnan(y);
    if (isinf(x) || isinf(y)) return x == y;
    return fabs(x - y) <= rtol * fmax(fabs(x), fabs(y)) + atol;
}

#define RT 1e-9

/* eps_noise: skip the sampling methods' epsilon (and what follows from it) where the rest's
 * statistics are rounding noise in as_sp_run (a key with all the mass: ||v_i - o|| = 0 in
 * float64; as_sp_run's expanded-formula max_y is then ~1e-13, ours exact 0, and epsilon divides
 * it by a heavy mass of 1e-45) */
static void same_records_x(const recs *a, const recs *b, const char *what, int eps_noise)
{
    qsort(a->r, a->n, sizeof *a->r, cmp_canon);
    qsort(b->r, b->n, sizeof *b->r, cmp_canon);
    cr_assert_eq(a->n, b->n, "%s: %zu records, expected %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const as_sp_record *x = &a->r[i], *y = &b->r[i];
        const as_sp_eval *e = &x->ev, *f = &y->ev;
        cr_assert(x->layer == y->layer && x->head == y->head && x->kv_head == y->kv_head &&
                      x->query == y->query && x->method == y->method &&
                      x->budget_index == y->budget_index,
                  "%s: record %zu out of order", what, i);
        const char *m = as_sp_method_name(x->method);
        if (getenv("SW_DUMP") && i == (size_t)atoi(getenv("SW_DUMP")))
            fprintf(stderr, "k %lld/%lld s %lld mass %.17g/%.17g err %.17g/%.17g bound %.17g/%.17g sb %.17g/%.17g\n",
                    (long long)e->k, (long long)e->n, (long long)e->samples, e->captured_mass,
                    f->captured_mass, e->abs_error, f->abs_error, e->bound, f->bound,
                    e->subset_bound, f->subset_bound);
        cr_assert(e->n == f->n && e->k == f->k && e->samples == f->samples &&
                      x->trials == y->trials,
                  "%s: record %zu (%s budget %zu): k %lld vs %lld", what, i, m, x->budget_index,
                  (long long)e->k, (long long)f->k);
        double atol = 1e-14 * (e->norm_o + 1e-300);
        cr_assert(close_to(x->budget, y->budget, 0, 0), "%s: %zu budget", what, i);
        cr_assert(close_to(e->norm_o, f->norm_o, 1e-12, 0), "%s: %zu norm", what, i);
        cr_assert(close_to(e->captured_mass, f->captured_mass, RT, 1e-15),
                  "%s: %zu (%s) captured_mass %.17g vs %.17g", what, i, m, e->captured_mass,
                  f->captured_mass);
        cr_assert(close_to(e->abs_error, f->abs_error, RT, atol),
                  "%s: %zu (%s b%zu q%lld) abs_error %.17g vs %.17g", what, i, m,
                  x->budget_index, (long long)x->query, e->abs_error, f->abs_error);
        cr_assert(close_to(e->rel_error, f->rel_error, RT, 1e-14), "%s: %zu rel_error", what, i);
        int skip = eps_noise && as_sp_method_is_sampling(x->method);
        cr_assert(skip || close_to(e->bound, f->bound, RT, atol),
                  "%s: %zu (%s b%zu q%lld) bound %.17g vs %.17g", what, i, m, x->budget_index,
                  (long long)x->query, e->bound, f->bound);
        cr_assert(skip || close_to(e->rel_bound, f->rel_bound, RT, 1e-14), "%s: %zu rel_bound",
                  what, i);
        cr_assert(close_to(e->subset_bound, f->subset_bound, RT, atol),
                  "%s: %zu (%s b%zu) subset_bound %.17g vs %.17g", what, i, m, x->budget_index,
                  e->subset_bound, f->subset_bound);
        cr_assert(close_to(e->tol, f->tol, 1e-12, 0), "%s: %zu tol", what, i);
        /* the identity's residual is rounding noise: both within the tolerance */
        cr_assert(e->identity_error <= e->tol && f->identity_error <= f->tol,
                  "%s: %zu identity %.3g / %.3g (tol %.3g)", what, i, e->identity_error,
                  f->identity_error, e->tol);
        cr_assert(e->identity_ok == f->identity_ok && e->subset_violated == f->subset_violated &&
                      (skip || (e->violated == f->violated && x->exceed == y->exceed)),
                  "%s: %zu (%s) flags", what, i, m);
        /* samples_needed comes from a bisection on epsilon: one key either way */
        cr_assert(skip || llabs(e->samples_needed - f->samples_needed) <= 1, "%s: %zu samples_needed", what,
                  i);
    }
}

static void same_records(const recs *a, const recs *b, const char *what)
{
    same_records_x(a, b, what, 0);
}

static as_trace *open_tr(const char *p)
{
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert_not_null(tr, "%s", err);
    return tr;
}

static as_sp_bounds page_bounds = AS_SP_BOUNDS_EXACT; /* --page-bounds of compare_x's runs */

static void compare_x(const char *name, int causal, double qscale, int needle, int64_t n,
                      int64_t t, const as_budget *b, size_t nb, int trials, size_t mem,
                      int eps_noise)
{
    char *p = make_trace(name, causal, AS_DT_F32, qscale, needle, n, t);
    as_trace *tr = open_tr(p);
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    cfg.methods = all_methods;
    cfg.n_methods = N_ALL;
    cfg.budgets = b;
    cfg.n_budgets = nb;
    cfg.trials = trials;
    cfg.mem_limit = mem;
    cfg.eps_rel = 0.05;
    cfg.params.page_size = 8;
    cfg.params.page_bounds = page_bounds;
    recs ref = run_ref(tr, &cfg), got = run_sweep(tr, &cfg, 1);
    same_records_x(&got, &ref, name, eps_noise);
    free(ref.r);
    free(got.r);
    as_trace_free(tr);
    free(p);
}

static void compare(const char *name, int causal, double qscale, int needle, int64_t n, int64_t t,
                    const as_budget *b, size_t nb, int trials, size_t mem)
{
    compare_x(name, causal, qscale, needle, n, t, b, nb, trials, mem, 0);
}

static as_budget sweep[16];
static size_t n_sweep;

static void init_sweep(void) { n_sweep = as_budget_default_sweep(sweep, 16); }

Test(sweep, default_sweep_matches_engine, .init = init_sweep)
{
    compare("sw_flat.safetensors", 0, 0.3, 0, 700, 5, sweep, n_sweep, 1, 0);
    compare("sw_peak.safetensors", 1, 3.0, 0, 777, 6, sweep, n_sweep, 1, 0);
    compare("sw_needle.safetensors", 1, 1.0, 300, 640, 4, sweep, n_sweep, 1, 0);
}

/* --page-bounds bf16 and f32 on float32 keys (the rounding moves the bounds): the sweep honours
 * it as as_sp_run does, full pages from the shared summaries and the partial last page of a
 * causal query rounded on the fly alike. */
Test(sweep, reduced_precision_page_bounds_match_engine, .init = init_sweep)
{
    page_bounds = AS_SP_BOUNDS_BF16;
    compare("sw_bf16.safetensors", 1, 2.0, 0, 701, 6, sweep, n_sweep, 1, 0);
    page_bounds = AS_SP_BOUNDS_F32;
    compare("sw_f32b.safetensors", 1, 2.0, 0, 701, 6, sweep, n_sweep, 1, 0);
    page_bounds = AS_SP_BOUNDS_EXACT;
}

Test(sweep, count_budgets_blocks_and_draws)
{
    as_budget b[] = {{0, 1}, {0, 7}, {0.25, 0}, {0, 64}, {0.01, 0}, {1.0, 0}, {0, 5000}};
    /* a small memory limit: several blocks per kv head */
    compare("sw_blocks.safetensors", 1, 1.5, 0, 500, 7, b, sizeof b / sizeof b[0], 3, 60000);
}

Test(sweep, underflowing_weights_take_the_exponent_route, .init = init_sweep)
{
    /* scores spread over thousands: most weights are 0 in float64, sets of keys far below the
     * maximum need their sums redone from the scores */
    compare_x("sw_extreme.safetensors", 0, 400.0, 0, 300, 3, sweep, n_sweep, 2, 0, 1);
}

Test(sweep, threads_give_the_same_records, .init = init_sweep)
{
    char *p = make_trace("sw_threads.safetensors", 1, AS_DT_F32, 1.0, 0, 600, 5);
    as_trace *tr = open_tr(p);
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    cfg.methods = all_methods;
    cfg.n_methods = N_ALL;
    cfg.budgets = sweep;
    cfg.n_budgets = n_sweep;
    /* blocks of whole chunks of rows: the same bits whatever the memory and the threads */
    cfg.mem_limit = (size_t)8 << 20;
    recs one = run_sweep(tr, &cfg, 1);
    cfg.mem_limit = 20000;
    recs three = run_sweep(tr, &cfg, 3);
    cr_assert_eq(one.n, three.n);
    for (size_t i = 0; i < one.n; i++)
        cr_assert(memcmp(&one.r[i].ev, &three.r[i].ev, sizeof one.r[i].ev) == 0 &&
                      one.r[i].query == three.r[i].query && one.r[i].head == three.r[i].head &&
                      one.r[i].layer == three.r[i].layer,
                  "record %zu differs between 1 and 3 threads", i);
    free(one.r);
    free(three.r);
    as_trace_free(tr);
    free(p);
}

Test(sweep, subsets_and_refusals, .init = init_sweep)
{
    char *p = make_trace("sw_sub.safetensors", 1, AS_DT_F32, 1.0, 0, 300, 4);
    as_trace *tr = open_tr(p);
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    const as_sp_method ms[] = {AS_SP_PAGE_SAMPLE, AS_SP_TOPK};
    cfg.methods = ms;
    cfg.n_methods = 2;
    cfg.budgets = sweep + 3;
    cfg.n_budgets = 2;
    cfg.layer = 1;
    cfg.head = 3;
    cfg.query = 2;
    recs ref = run_ref(tr, &cfg), got = run_sweep(tr, &cfg, 2);
    cr_assert_eq(got.n, 4);
    same_records(&got, &ref, "subset");
    free(ref.r);
    free(got.r);
    char err[AS_ERR_LEN];
    recs v = {0};
    cfg.head = 9;
    cr_assert_eq(as_sweep_run(tr, &cfg, 1, collect, &v, err), AS_ERR_USAGE);
    cfg.head = -1;
    cfg.layer = 5;
    cr_assert_eq(as_sweep_run(tr, &cfg, 1, collect, &v, err), AS_ERR_USAGE);
    const as_sp_method ix[] = {AS_SP_INDEX};
    cfg.layer = -1;
    cfg.methods = ix;
    cfg.n_methods = 1;
    cr_assert_eq(as_sweep_supports(&cfg), 0);
    cr_assert_eq(as_sweep_run(tr, &cfg, 1, collect, &v, err), AS_ERR_USAGE);
    cr_assert_eq(v.n, 0);
    as_trace_free(tr);
    free(p);
}

Test(sweep, bundled_sample_matches_engine, .init = init_sweep)
{
    const char *s = sample_trace();
    if (!s) cr_skip_test("bundled sample not found");
    as_trace *tr = open_tr(s);
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    const as_sp_method ms[] = {AS_SP_TOPK, AS_SP_SINK_WINDOW, AS_SP_PAGE, AS_SP_UNIFORM,
                               AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE};
    cfg.methods = ms;
    cfg.n_methods = 6;
    cfg.budgets = sweep;
    cfg.n_budgets = n_sweep;
    cfg.layer = 19;
    recs ref = run_ref(tr, &cfg), got = run_sweep(tr, &cfg, 2);
    same_records(&got, &ref, "sample layer 19");
    free(ref.r);
    free(got.r);
    as_trace_free(tr);
}
