/* as_sp_fixtures: helpers shared by the tests of the sparsity analysis (test_sp_budget.c,
 * test_sp_sampling.c, test_sp_select.c, test_sp_engine.c, test_sp_agg.c, test_sparsity.c):
 * synthetic traces with a seeded generator, running the engine into a record list, the bundled
 * sample trace, and the command's JSON. Header-only (static inline functions) so every test
 * executable stays one .c file plus as_testutil. */
#ifndef AS_SP_FIXTURES_H
#define AS_SP_FIXTURES_H

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"


typedef struct {
    uint64_t seed;
    double qscale;  /* larger: more peaked attention */
    int needle;     /* plant key 'needle' aligned with every query */
} gen_ctx;

static inline double hnormal(uint64_t h)
{
    uint64_t s = h;
    return as_test_normal(&s);
}

static inline double gen(void *vctx, int layer, char which, int64_t head, int64_t row, int64_t col)
{
    gen_ctx *c = vctx;
    uint64_t h = as_seed_mix(c->seed, (uint64_t)layer * 131 + (uint64_t)which);
    h = as_seed_mix(h, (uint64_t)head * 1000003 + (uint64_t)row);
    h = as_seed_mix(h, (uint64_t)col);
    double x = hnormal(h);
    if (which == 'q') return c->qscale * x + (c->needle ? 1.0 : 0.0);
    if (which == 'k' && c->needle && row == c->needle) return 4.0;
    return x;
}

static inline char *make_trace(const char *name, int causal, as_dtype dt, double qscale, int needle,
                        int64_t n, int64_t t)
{
    char *p = as_test_path(name);
    static gen_ctx ctxs[16]; /* the generator runs inside as_test_write_trace only */
    static int used;
    gen_ctx *c = &ctxs[used++ % 16];
    *c = (gen_ctx){1234, qscale, needle};
    as_test_trace_spec sp = {.n_layers = 2, .hq = 4, .hkv = 2, .t = t, .n = n, .d = 16,
                             .dtype = dt, .causal = causal, .gen = gen, .ctx = c};
    cr_assert_eq(as_test_write_trace(p, &sp), 0);
    return p;
}

/* make_trace, opened (asserted); *path (may be NULL) receives the file name, caller frees. */
static inline as_trace *make_open(const char *name, int causal, as_dtype dt, double qscale,
                                  int needle, int64_t n, int64_t t, char **path)
{
    char *p = make_trace(name, causal, dt, qscale, needle, n, t), err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    cr_assert(tr, "%s", err);
    if (path)
        *path = p;
    else
        free(p);
    return tr;
}

typedef struct {
    as_sp_record *r;
    size_t n, cap;
} recs;

static inline int collect(void *ctx, const as_sp_record *r)
{
    recs *v = ctx;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->r = realloc(v->r, v->cap * sizeof *v->r);
    }
    v->r[v->n++] = *r;
    return 0;
}

static inline recs run(const as_trace *tr, const as_sp_method *m, size_t nm, const as_budget *b,
                size_t nb, int trials, size_t mem)
{
    as_sp_config cfg;
    as_sp_config_init(&cfg);
    cfg.methods = m;
    cfg.n_methods = nm;
    cfg.budgets = b;
    cfg.n_budgets = nb;
    cfg.trials = trials;
    cfg.mem_limit = mem;
    cfg.eps_rel = 0.05;
    recs v = {0};
    char err[AS_ERR_LEN];
    as_status st = as_sp_run(tr, &cfg, collect, &v, err);
    cr_assert_eq(st, AS_OK, "%s", err);
    return v;
}

static const as_sp_method all_methods[] = {AS_SP_TOPK,    AS_SP_SINK_WINDOW, AS_SP_PAGE,
                                           AS_SP_UNIFORM, AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE};
#define N_ALL ((int)(sizeof all_methods / sizeof all_methods[0]))
/* as_sp_run's methods: the above and page-is (which the shared sweep does not run) */
static const as_sp_method engine_methods[] = {AS_SP_TOPK,        AS_SP_SINK_WINDOW,
                                              AS_SP_PAGE,        AS_SP_UNIFORM,
                                              AS_SP_TOPK_SAMPLE, AS_SP_PAGE_SAMPLE,
                                              AS_SP_PAGE_IS};
#define N_ENGINE ((int)(sizeof engine_methods / sizeof engine_methods[0]))

static inline const char *sample_trace(void)
{
    static char path[1024];
    const char *src = getenv("AS_SRC");
    snprintf(path, sizeof path, "%s/data/samples/smollm2-135m-needle-2k.safetensors",
             src ? src : "..");
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fclose(f);
    return path;
}

static inline cJSON *run_json(const char *args, int want_rc)
{
    char *out = NULL;
    int rc = as_test_run_cli(args, &out);
    cr_assert_eq(rc, want_rc, "attnscope %s: exit %d", args, rc);
    cJSON *doc = cJSON_Parse(out);
    free(out);
    return doc;
}

static inline cJSON *find_records(cJSON *doc, const char *kind, int *count)
{
    cJSON *recs_ = cJSON_GetObjectItem(doc, "records"), *r, *first = NULL;
    *count = 0;
    cJSON_ArrayForEach(r, recs_)
    {
        if (strcmp(cJSON_GetObjectItem(r, "record")->valuestring, kind) == 0) {
            if (!first) first = r;
            (*count)++;
        }
    }
    return first;
}

#endif
