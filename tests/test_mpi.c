/* Tests of mpi/as_mpi in one process: the plan (units to ranks by cost, in order), the byte
 * buffers and the exact cJSON encoding a unit's records travel in (NaN, Inf, -0 and the order
 * of keys kept bit for bit), and the run loop (units consumed in order, a failing unit stops
 * the run with its message). The ranks themselves (mpirun -n 1/2/3, byte-identical outputs, a
 * failing rank) are tested through the program by tests/test_mpi_cli.py. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "as_mpi.h"

Test(mpi_plan, equal_costs_go_round_robin)
{
    int owner[7];
    as_mpi_plan(NULL, 7, 3, owner);
    for (int u = 0; u < 7; u++) cr_assert_eq(owner[u], u % 3, "unit %d on rank %d", u, owner[u]);
    as_mpi_plan(NULL, 7, 1, owner);
    for (int u = 0; u < 7; u++) cr_assert_eq(owner[u], 0);
}

Test(mpi_plan, unequal_costs_balance_within_the_largest_unit)
{
    /* two traces: 30 cheap units then 10 units 4x as costly, then one very costly unit */
    double cost[41];
    for (int u = 0; u < 30; u++) cost[u] = 1;
    for (int u = 30; u < 40; u++) cost[u] = 4;
    cost[40] = 9;
    for (int p = 1; p <= 5; p++) {
        int owner[41];
        as_mpi_plan(cost, 41, p, owner);
        double load[5] = {0}, total = 0, biggest = 9;
        for (int u = 0; u < 41; u++) {
            cr_assert(owner[u] >= 0 && owner[u] < p);
            load[owner[u]] += cost[u];
            total += cost[u];
        }
        for (int r = 0; r < p; r++)
            cr_assert_leq(load[r], total / p + biggest, "p %d rank %d load %g", p, r, load[r]);
        /* ranks advance together: the first p units go to p different ranks */
        for (int u = 1; u < p; u++) cr_assert_neq(owner[u], owner[u - 1]);
    }
    /* the plan is a function of the costs only */
    int a[41], b[41];
    as_mpi_plan(cost, 41, 3, a);
    as_mpi_plan(cost, 41, 3, b);
    cr_assert_arr_eq(a, b, sizeof a);
}

Test(mpi_buf, numbers_and_strings_round_trip)
{
    as_mpi_buf b;
    as_mpi_buf_init(&b);
    as_mpi_put_i64(&b, -42);
    as_mpi_put_f64(&b, -0.0);
    as_mpi_put_f64(&b, NAN);
    as_mpi_put_str(&b, "layer \"3\"\n");
    as_mpi_put_str(&b, NULL);
    as_mpi_put_str(&b, "");
    cr_assert_not(b.failed);
    as_mpi_rd r;
    as_mpi_rd_init(&r, b.p, b.len);
    cr_assert_eq(as_mpi_get_i64(&r), -42);
    double z = as_mpi_get_f64(&r);
    cr_assert(z == 0 && signbit(z));
    cr_assert(isnan(as_mpi_get_f64(&r)));
    cr_assert_str_eq(as_mpi_get_str(&r), "layer \"3\"\n");
    cr_assert_null(as_mpi_get_str(&r));
    cr_assert_not(r.bad);
    cr_assert_str_eq(as_mpi_get_str(&r), "");
    cr_assert(as_mpi_rd_end(&r));
    /* past the end: flagged, zeros */
    cr_assert_eq(as_mpi_get_i64(&r), 0);
    cr_assert(r.bad);
    /* a string whose length runs past the buffer */
    as_mpi_rd_init(&r, b.p, 8 + 8 + 8 + 8 + 3);
    as_mpi_get_i64(&r), as_mpi_get_f64(&r), as_mpi_get_f64(&r);
    cr_assert_null(as_mpi_get_str(&r));
    cr_assert(r.bad);
    as_mpi_buf_free(&b);
}

/* Two cJSON values equal bit for bit: types, keys in order, numbers' bytes. */
static int same_json(const cJSON *a, const cJSON *b)
{
    if ((a->type & 0xff) != (b->type & 0xff)) return 0;
    if ((a->string == NULL) != (b->string == NULL)) return 0;
    if (a->string && strcmp(a->string, b->string) != 0) return 0;
    if (cJSON_IsNumber(a)) return memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)) == 0;
    if (cJSON_IsString(a)) return strcmp(a->valuestring, b->valuestring) == 0;
    if (cJSON_IsArray(a) || cJSON_IsObject(a)) {
        const cJSON *x = a->child, *y = b->child;
        for (; x && y; x = x->next, y = y->next)
            if (!same_json(x, y)) return 0;
        return x == NULL && y == NULL;
    }
    return 1;
}

Test(mpi_json, records_round_trip_exactly)
{
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "record", "sparsity");
    cJSON_AddNumberToObject(rec, "layer", 29);
    cJSON_AddNumberToObject(rec, "rel_error", 0.1 + 0.2); /* not a short decimal */
    cJSON_AddNumberToObject(rec, "slack", NAN);           /* cJSON would print null */
    cJSON_AddNumberToObject(rec, "bound", INFINITY);
    cJSON_AddNumberToObject(rec, "zero", -0.0);
    cJSON_AddNumberToObject(rec, "tiny", 4.9e-324);
    cJSON_AddBoolToObject(rec, "violated", 0);
    cJSON_AddBoolToObject(rec, "pass", 1);
    cJSON_AddNullToObject(rec, "budget_1pct");
    double sv[3] = {3.5, 1e-300, NAN};
    cJSON_AddItemToObject(rec, "sv", cJSON_CreateDoubleArray(sv, 3));
    cJSON *inner = cJSON_AddObjectToObject(rec, "nested");
    cJSON_AddStringToObject(inner, "a,b", "x\"y");
    cJSON_AddItemToObject(inner, "empty", cJSON_CreateArray());
    as_mpi_buf b;
    as_mpi_buf_init(&b);
    as_mpi_put_json(&b, rec);
    as_mpi_put_json(&b, rec);
    as_mpi_rd r;
    as_mpi_rd_init(&r, b.p, b.len);
    for (int i = 0; i < 2; i++) {
        cJSON *back = as_mpi_get_json(&r);
        cr_assert_not_null(back);
        cr_assert(same_json(rec, back), "record %d differs", i);
        char *p1 = cJSON_Print(rec), *p2 = cJSON_Print(back);
        cr_assert_str_eq(p1, p2);
        free(p1), free(p2);
        cJSON_Delete(back);
    }
    cr_assert(as_mpi_rd_end(&r));
    /* every truncation of the encoding is refused, never read past */
    size_t one = b.len / 2;
    for (size_t cut = 0; cut < one; cut++) {
        as_mpi_rd_init(&r, b.p, cut);
        cJSON *back = as_mpi_get_json(&r);
        cr_assert_null(back, "a truncation at %zu bytes was accepted", cut);
        cr_assert(r.bad);
    }
    /* a byte that is no type */
    unsigned char junk[2] = {'z', 0};
    as_mpi_rd_init(&r, junk, 2);
    cr_assert_null(as_mpi_get_json(&r));
    as_mpi_buf_free(&b);
    cJSON_Delete(rec);
}

typedef struct {
    size_t consumed[16];
    size_t n_consumed;
    size_t fail_at; /* work fails on this unit (SIZE_MAX: never) */
    double last_done, last_total;
} job_ctx;

static as_status work(void *vctx, size_t u, as_mpi_buf *out, char *err)
{
    job_ctx *c = vctx;
    if (u == c->fail_at) return as_err_set(err, AS_ERR_VALUE, "trace.safetensors: unit %zu", u);
    as_mpi_put_i64(out, (int64_t)(u * u));
    return AS_OK;
}

static as_status consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    job_ctx *c = vctx;
    int64_t v = as_mpi_get_i64(in);
    if (in->bad || v != (int64_t)(u * u) || !as_mpi_rd_end(in))
        return as_err_set(err, AS_ERR_IO, "unit %zu: bad result", u);
    c->consumed[c->n_consumed++] = u;
    return AS_OK;
}

static void progress(void *vctx, double done, double total)
{
    job_ctx *c = vctx;
    cr_assert_geq(done, c->last_done);
    c->last_done = done;
    c->last_total = total;
}

Test(mpi_run, one_process_consumes_in_order)
{
    cr_assert_eq(as_mpi_size(), 1);
    cr_assert_eq(as_mpi_rank(), 0);
    cr_assert_eq(as_mpi_agree(0), 0);
    cr_assert_eq(as_mpi_agree(2), 2);
    job_ctx c = {.fail_at = SIZE_MAX};
    const double cost[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    as_mpi_job job = {10, cost, work, consume, &c, progress, &c};
    as_mpi_stats st;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_mpi_run(&job, &st, err), AS_OK, "%s", err);
    cr_assert_eq(c.n_consumed, 10);
    for (size_t u = 0; u < 10; u++) cr_assert_eq(c.consumed[u], u);
    cr_assert_float_eq(c.last_done, 55, 0);
    cr_assert_float_eq(c.last_total, 55, 0);
    cr_assert_eq(st.units, 10);
    cr_assert_eq(st.bytes_out, 80);
    cr_assert_geq(st.wall_s, st.work_s);
}

Test(mpi_run, a_failing_unit_stops_the_run)
{
    job_ctx c = {.fail_at = 4};
    as_mpi_job job = {10, NULL, work, consume, &c, NULL, NULL};
    char err[AS_ERR_LEN];
    cr_assert_eq(as_mpi_run(&job, NULL, err), AS_ERR_VALUE);
    cr_assert_str_eq(err, "trace.safetensors: unit 4");
    cr_assert_eq(c.n_consumed, 4, "units after the failure were consumed");
}
