/* Tests of cli/cli_job (the skeleton of the trace commands) and of the as_out ends in
 * cli/cli_util. This program links cli/'s shared files (attnscope_clicore) without main.c or
 * any command: it would not link if they called up into those. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "as_testutil.h"
#include "cli_job.h"

enum { OPT_FOO = 1, OPT_FLAG };

typedef struct {
    long foo;
    int flag, calls;
} own_opts;

static int own_opt(void *ctx, int opt, const char *arg)
{
    own_opts *o = ctx;
    o->calls++;
    if (opt == OPT_FOO) return as_cli_parse_int("test", "foo", arg, 0, 10, &o->foo) ? 2 : 0;
    if (opt == OPT_FLAG) {
        o->flag = 1;
        return 0;
    }
    return -1; /* in the table, yet not taken: reported as unknown */
}

static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                     {"foo", required_argument, 0, OPT_FOO},
                                     {"flag", no_argument, 0, OPT_FLAG},
                                     {"orphan", no_argument, 0, 'z'},
                                     {0, 0, 0, 0}};

/* Parse a command line given as words (argv[0] is the command). */
static int parse(own_opts *o, as_cli_common *c, int trace, int n, ...)
{
    static char *argv[32];
    va_list ap;
    va_start(ap, n);
    argv[0] = (char *)"test";
    for (int i = 0; i < n; i++) argv[i + 1] = va_arg(ap, char *);
    va_end(ap);
    argv[n + 1] = NULL;
    memset(o, 0, sizeof *o);
    o->foo = -1;
    if (trace) return as_cli_parse_trace("test", n + 1, argv, opts, NULL, own_opt, o, c);
    return as_cli_parse_opts("test", n + 1, argv, opts, NULL, own_opt, o, c);
}

Test(cli_job, parse_common_and_own_options)
{
    own_opts o;
    as_cli_common c;
    cr_assert_eq(parse(&o, &c, 1, 6, "--layer", "3", "t.safetensors", "--foo", "7", "--json"),
                 AS_CLI_GO);
    cr_expect_eq(c.layer, 3);
    cr_expect_eq(c.head, -1);
    cr_expect_eq(c.fmt, AS_FMT_JSON);
    cr_expect_str_eq(c.trace, "t.safetensors");
    cr_expect_eq(o.foo, 7);
    cr_expect_eq(o.flag, 0);
    cr_expect_eq(o.calls, 1, "the command saw only its own option");
    cr_assert_eq(parse(&o, &c, 1, 4, "--flag", "--head", "2", "x"), AS_CLI_GO);
    cr_expect_eq(o.flag, 1);
    cr_expect_eq(c.head, 2);
    cr_expect_eq(c.layer, -1, "the common options start from their defaults");
    cr_expect_eq(c.fmt, AS_FMT_TABLE);
}

Test(cli_job, parse_errors_are_exit_codes, .init = cr_redirect_stderr)
{
    own_opts o;
    as_cli_common c;
    cr_expect_eq(parse(&o, &c, 1, 3, "x", "--foo", "11"), 2, "bad value of the command's option");
    cr_expect_eq(parse(&o, &c, 1, 2, "x", "--bogus"), 2, "unknown option");
    cr_expect_eq(parse(&o, &c, 1, 2, "x", "--foo"), 2, "missing value");
    cr_expect_eq(parse(&o, &c, 1, 2, "x", "--orphan"), 2, "an option the command does not take");
    cr_expect_eq(parse(&o, &c, 1, 3, "x", "--layer", "-1"), 2, "bad common value");
    cr_expect_eq(parse(&o, &c, 1, 3, "x", "--json", "--csv"), 2);
    cr_expect_eq(parse(&o, &c, 1, 0), 2, "no TRACE");
    cr_expect_eq(parse(&o, &c, 1, 2, "x", "y"), 2, "two TRACEs");
    cr_expect_eq(parse(&o, &c, 0, 2, "x", "y"), AS_CLI_GO, "positionals left to the caller");
    cr_expect_eq(parse(&o, &c, 1, 2, "x", "--help"), 0, "--help: exit 0 now");
    fflush(stderr);
    cr_expect_stderr_neq_str("");
}

/* A trace of 3 layers, 4 query heads over 2 kv heads, T = 5 queries, N = 32 keys. */
static char *small_trace(void)
{
    char *p = as_test_path("job.safetensors");
    as_test_trace_spec sp = {.n_layers = 3, .hq = 4, .hkv = 2, .t = 5, .n = 32, .d = 8,
                             .dtype = AS_DT_F32, .causal = 1, .seed = 11};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

static int open_job(as_cli_job *j, const char *path, int layer, int head, int64_t query,
                    as_cli_unit_kind kind)
{
    as_cli_common c;
    as_cli_common_init(&c);
    c.trace = path;
    c.layer = layer;
    c.head = head;
    c.quiet = 1;
    return as_cli_job_open(j, "test", &c, query, kind);
}

Test(cli_job, units_per_layer_and_per_head)
{
    char *p = small_trace();
    as_cli_job j;
    cr_assert_eq(open_job(&j, p, -1, -1, -1, AS_CLI_UNITS_LAYER), 0);
    cr_assert_eq(j.n_layers, 3);
    cr_assert_eq(j.n_units, 3);
    for (size_t i = 0; i < 3; i++) {
        cr_expect_eq(j.units[i].pos, i);
        cr_expect_eq(j.units[i].layer, as_trace_layer(j.tr, i));
        cr_expect_eq(j.units[i].head, -1);
    }
    as_cli_job_close(&j);
    cr_assert_eq(open_job(&j, p, -1, -1, -1, AS_CLI_UNITS_HEAD), 0);
    cr_assert_eq(j.n_units, 12);
    for (size_t i = 0; i < 12; i++) {
        cr_expect_eq(j.units[i].pos, i / 4, "layer-major order");
        cr_expect_eq(j.units[i].head, (int64_t)(i % 4));
    }
    as_cli_job_close(&j);
    cr_assert_eq(open_job(&j, p, 1, 3, 4, AS_CLI_UNITS_HEAD), 0);
    cr_assert_eq(j.n_layers, 1);
    cr_assert_eq(j.n_units, 1);
    cr_expect_eq(j.units[0].layer->index, 1);
    cr_expect_eq(j.units[0].head, 3);
    as_cli_job_close(&j);
    cr_assert_eq(open_job(&j, p, 2, 1, -1, AS_CLI_UNITS_LAYER), 0);
    cr_assert_eq(j.n_units, 1);
    cr_expect_eq(j.units[0].pos, 2);
    cr_expect_eq(j.units[0].head, 1);
    as_cli_job_close(&j);
    cr_assert_eq(open_job(&j, p, -1, -1, -1, AS_CLI_UNITS_NONE), 0);
    cr_expect_eq(j.n_units, 0);
    cr_expect_eq(j.n_layers, 3);
    cr_expect_not_null(j.tr);
    as_cli_job_close(&j);
    as_cli_job_close(&j); /* a closed job closes again */
    free(p);
}

Test(cli_job, open_refuses_what_the_trace_lacks, .init = cr_redirect_stderr)
{
    char *p = small_trace();
    as_cli_job j;
    cr_expect_eq(open_job(&j, p, 3, -1, -1, AS_CLI_UNITS_LAYER), 2, "no layer 3");
    cr_expect_null(j.tr);
    cr_expect_eq(open_job(&j, p, -1, 4, -1, AS_CLI_UNITS_HEAD), 2, "head 4 of 4");
    cr_expect_eq(open_job(&j, p, 0, -1, 5, AS_CLI_UNITS_HEAD), 2, "query 5 of 5");
    char *missing = as_test_path("missing.safetensors");
    cr_expect_eq(open_job(&j, missing, -1, -1, -1, AS_CLI_UNITS_HEAD), 2, "no such file");
    fflush(stderr);
    cr_expect_stderr_neq_str("");
    free(missing);
    free(p);
}

typedef struct {
    int seen[16][2];
    int n, fail_at;
} visit_log;

static int visit(void *ctx, as_cli_job *j, const as_cli_unit *u, as_out *o)
{
    visit_log *v = ctx;
    cr_assert_eq(u, &j->units[j->unit_i]);
    as_cli_job_progress(j, 1, 2); /* from within a unit: must not disturb the loop */
    v->seen[v->n][0] = u->layer->index;
    v->seen[v->n][1] = (int)u->head;
    as_out_add(o, as_rec_new("unit", u->layer->index, u->head));
    return v->n++ == v->fail_at ? 7 : 0;
}

Test(cli_job, run_visits_units_in_order_and_stops_at_a_failure)
{
    char *p = small_trace();
    as_cli_job j;
    cr_assert_eq(open_job(&j, p, -1, -1, -1, AS_CLI_UNITS_HEAD), 0);
    visit_log v = {.n = 0, .fail_at = -1};
    as_out *o = as_out_new(AS_FMT_JSON, "test", p);
    cr_assert_eq(as_cli_job_run(&j, "test", visit, &v, o), 0);
    cr_assert_eq(v.n, 12);
    for (int i = 0; i < 12; i++) {
        cr_expect_eq(v.seen[i][0], i / 4);
        cr_expect_eq(v.seen[i][1], i % 4);
    }
    cr_expect_eq(cJSON_GetArraySize(as_out_records(o)), 12);
    v = (visit_log){.n = 0, .fail_at = 5};
    cr_expect_eq(as_cli_job_run(&j, NULL, visit, &v, o), 7, "the failing unit's exit code");
    cr_expect_eq(v.n, 6, "no unit after the failing one");
    as_out_free(o);
    as_cli_job_close(&j);
    free(p);
}

static as_out *one_record(void)
{
    as_out *o = as_out_new(AS_FMT_CSV, "test", "t");
    cJSON *r = as_rec_new("x", 1, 2);
    cJSON_AddNumberToObject(r, "v", 0.5);
    as_out_add(o, r);
    return o;
}

Test(cli_job, out_done_prints_only_on_success, .init = cr_redirect_stdout)
{
    cr_expect_eq(as_out_done(one_record(), 2), 2, "a failed command: its code, nothing printed");
    cr_expect_eq(as_out_done(one_record(), 0), 0);
    fflush(stdout);
    cr_expect_stdout_eq_str("record,layer,head,v\nx,1,2,0.5\n");
}

Test(cli_job, stat_record_fields_in_order)
{
    cJSON *r = as_rec_stat("x_head", 3, 2, 1, "median", 16);
    char *s = cJSON_PrintUnformatted(r);
    cr_expect_str_eq(s, "{\"record\":\"x_head\",\"layer\":3,\"head\":2,\"kv_head\":1,"
                        "\"stat\":\"median\",\"queries\":16}");
    free(s);
    cJSON_Delete(r);
    r = as_rec_stat("x_layer", 0, -1, -1, "mean", 4); /* a layer's: no head, no kv head */
    s = cJSON_PrintUnformatted(r);
    cr_expect_str_eq(s, "{\"record\":\"x_layer\",\"layer\":0,\"stat\":\"mean\",\"queries\":4}");
    free(s);
    cJSON_Delete(r);
}
