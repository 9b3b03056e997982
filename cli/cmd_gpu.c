/* attnscope gpu: replay a trace through the GPU kernels and check every head against the
 * float64 dense output and the subset bound; benchmark the kernels (docs/gpu.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_help.h"

#ifdef AS_HAVE_CUDA
#include "as_gpu.h"
#include "as_sp_check.h"
#include "as_sparsity.h"
#include "cli_job.h"

const char as_help_gpu[] =
    "usage: attnscope gpu replay TRACE [--method M[,M...]] [--budget B[,B...] | --sparsity X[,X...]]\n"
    "                            [--mode kv|q] [--page-size P] [--seed S] [--layer L] [--json|--csv]\n"
    "       attnscope gpu bench [--quick] [--batches 1,8,32,64] [--ns 8192,...] [--ds 128,64]\n"
    "                           [--sparsities 1,10,20,50,100] [--hq 32] [--hkv 8] [--reps 30]\n"
    "                           [--max-gib G] [--no-selection] [--variant V] [--split-kv]\n"
    "                           [--paged P] [--only METHOD] [--json|--csv]\n\n"
    "replay: load each layer's K/V (stored type kept: bf16, f16 or f32) and queries to the GPU\n"
    "(the queries of a trace form the batch, each seeing its causal prefix), run the method and\n"
    "compare every query head's output with the float64 dense output (analysis/as_sp_check.h);\n"
    "method names as in 'attnscope sparsity':\n"
    "  dense        the dense decode kernel (bound 0)\n"
    "  topk         exact top-k of the scores on the GPU (radix select), sparse decode\n"
    "  page         Quest page selection (pages of P keys, per-page min/max keys), sparse decode\n"
    "  topk-sample  top-k heavy hitters (half the budget) + uniform samples of the rest (the\n"
    "               other half), numerator and denominator estimated separately\n"
    "  page-sample  Quest pages + sampling: the whole pages within half the budget as the heavy\n"
    "               set, the rest of the budget uniform draws over the keys outside those pages\n"
    "               (weight (n - |S|) / draws), estimated as topk-sample\n"
    "  all          every method (default); 'pages', 'tks' and 'pss' are accepted for page,\n"
    "               topk-sample and page-sample\n"
    "Budgets as in 'attnscope sparsity': '2%', '0.02', '1/50' or a key count (default 10%);\n"
    "--sparsity 50 (or --budget 50x) keeps 1/50. The number of keys k = ceil(fraction * N) is\n"
    "the same for every query. --mode kv (default) selects per kv head (shared by its query\n"
    "heads), q per query head.\n"
    "Bound (docs/theory.md): for the kept set S with captured mass P_S,\n"
    "  ||o - o_S|| <= (1 - P_S) max_{i not in S} ||v_i - o_S||;\n"
    "for topk-sample and page-sample, whose output mixes S with reweighted samples of the rest\n"
    "(estimated share 1-lam of the mass),\n"
    "  ||o - o_hat|| <= ((1 - P_S) + (1 - lam)) max_{i not in S} ||v_i - o_S||.\n"
    "A head fails when a query's error exceeds its bound plus the kernel's float32 tolerance\n"
    "(1e-4 ||o|| + 1e-6 max ||v||). Records 'gpu_replay' per layer x head x method x budget;\n"
    "exit 1 on any violation, 2 on bad input or no usable GPU.\n\n"
    "bench: time the kernels (CUDA events, warm-up, inputs rotating over > 4x L2, median of\n"
    ">= 20 launches) beside a device-to-device copy measured in the same run; rows 'gpu_bench':\n"
    "method, shape, microseconds, bytes that must move, GB/s, % of the copy's GB/s.\n"
    "--paged P holds K/V as a paged pool (blocks of P keys, a power of two; 0: contiguous; layout\n"
    "[blocks][hkv][P][d]; each sequence's blocks a random permutation of the pool, read through\n"
    "a block table), as serving engines do; shapes whose N is not a multiple of P are skipped.\n"
    "--split-kv puts K and V in two allocations (default: one, V after K); --only METHOD times\n"
    "only that row of each shape (besides copy and read), e.g. for a profiler.\n"
    "gpu/bench/bench.py runs this next to FlashInfer and PyTorch SDPA.\n";

/* ---- options ------------------------------------------------------------------------------ */
static int parse_list(const char *cmd, const char *opt, const char *s, double *out, int max,
                      int *n)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v > 0) || !isfinite(v) || *n >= max) {
            as_cli_usage(cmd, "--%s expects a comma-separated list of positive numbers", opt);
            return -1;
        }
        if (*end == 'k' || *end == 'K') {
            v *= 1024;
            end++;
        } else if (*end == 'M') {
            v *= 1024 * 1024;
            end++;
        } else if (*end == 'x') {
            end++;
        }
        out[(*n)++] = v;
        p = end;
        if (*p == ',') p++;
        else if (*p) {
            as_cli_usage(cmd, "--%s: cannot read '%s'", opt, s);
            return -1;
        }
    }
    return *n > 0 ? 0 : -1;
}

/* ---- replay ------------------------------------------------------------------------------- */
/* The method names of `attnscope sparsity` (as_sp_method_name); older spellings still parse. */
enum { M_DENSE = 0, M_TOPK, M_PAGE, M_TOPK_SAMPLE, M_PAGE_SAMPLE, M_N };
static const char *const method_names[M_N] = {"dense", "topk", "page", "topk-sample",
                                              "page-sample"};
static const char *const method_alias[M_N] = {"dense", "oracle", "pages", "tks", "pss"};

enum { R_MAX_BUDGETS = 64 };
typedef struct {
    as_cli_common cc;
    int want[M_N];
    as_budget budgets[R_MAX_BUDGETS];
    size_t n_budgets;
    long page, seed;
    as_gpu_sel_mode mode;
} replay_opts;

typedef struct {
    int64_t checks, violations;
    double max_rel;
} method_stats;

typedef struct {
    as_gpu_ctx *ctx;
    const as_layer *l;
    int dpad;
    as_gpu_dtype dt;
    int64_t n;
    as_gpu_attn da;
    void *dk, *dv;
    float *dq;
    int32_t *dlens;
} replay_layer;

/* K/V go to the GPU in their stored type; F64 (no GPU storage type) as F32 */
static as_gpu_dtype dtype_of(const as_layer *l)
{
    const int t = as_gpu_dtype_from(l->k->dtype);
    return t < 0 ? AS_GPU_F32 : (as_gpu_dtype)t;
}

static void layer_free(replay_layer *r)
{
    as_gpu_free(r->dk);
    as_gpu_free(r->dv);
    as_gpu_free(r->dq);
    as_gpu_free(r->dlens);
}

/* K or V of every kv head, zero-padded to dpad columns, in the stored type, to the device */
static as_status upload_kv(replay_layer *r, int which_v, void **dst, char *err)
{
    const as_layer *l = r->l;
    const int64_t hkv = l->hkv, n = l->n, d = l->d, dp = r->dpad;
    const size_t es = as_gpu_dtype_size(r->dt), elems = (size_t)hkv * n * dp;
    float *buf = calloc(elems ? elems : 1, sizeof(float));
    void *raw = malloc((elems ? elems : 1) * es);
    double *row = malloc((size_t)(n > 0 ? n : 1) * d * sizeof(double));
    as_status st = AS_OK;
    if (!buf || !raw || !row) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (int64_t h = 0; st == AS_OK && h < hkv; h++) {
        if (which_v)
            as_layer_read_v(l, h, 0, n, row);
        else
            as_layer_read_k(l, h, 0, n, row);
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < d; c++) buf[((size_t)h * n + i) * dp + c] = (float)row[i * d + c];
    }
    if (st == AS_OK) {
        as_gpu_pack(r->dt, buf, raw, elems);
        st = as_gpu_malloc(dst, elems * es, err);
    }
    if (st == AS_OK) st = as_gpu_upload(*dst, raw, elems * es, err);
    free(buf);
    free(raw);
    free(row);
    return st;
}

/* the queries [T][hq][dpad] and their visible lengths */
static as_status upload_queries(replay_layer *r, char *err)
{
    const as_layer *l = r->l;
    const int64_t d = l->d, dp = r->dpad;
    const size_t qe = (size_t)l->t * l->hq * dp;
    float *qhost = calloc(qe ? qe : 1, sizeof(float));
    double *qd = malloc((size_t)d * sizeof(double));
    int32_t *lens = malloc((size_t)(l->t > 0 ? l->t : 1) * sizeof(int32_t));
    as_status st = AS_OK;
    if (!qhost || !qd || !lens) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (int64_t t = 0; st == AS_OK && t < l->t; t++) {
        lens[t] = (int32_t)as_layer_visible(l, t);
        for (int64_t h = 0; h < l->hq; h++) {
            as_layer_read_q(l, h, t, qd);
            for (int64_t c = 0; c < d; c++) qhost[((size_t)t * l->hq + h) * dp + c] = (float)qd[c];
        }
    }
    if (st == AS_OK) st = as_gpu_malloc((void **)&r->dq, qe * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_upload(r->dq, qhost, qe * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_malloc((void **)&r->dlens, (size_t)l->t * sizeof(int32_t), err);
    if (st == AS_OK) st = as_gpu_upload(r->dlens, lens, (size_t)l->t * sizeof(int32_t), err);
    free(qhost);
    free(qd);
    free(lens);
    return st;
}

static as_status layer_load(replay_layer *r, as_gpu_ctx *ctx, const as_layer *l, char *err)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->l = l;
    if (l->d > 256) return as_err_set(err, AS_ERR_USAGE, "layer %d: head dim %lld > 256 unsupported", l->index, (long long)l->d);
    r->dpad = l->d <= 64 ? 64 : (l->d <= 128 ? 128 : 256);
    r->dt = dtype_of(l);
    r->n = l->n;
    if (l->t > 65535 || l->n > INT32_MAX / 2)
        return as_err_set(err, AS_ERR_USAGE, "layer %d: too many queries or keys", l->index);
    as_status st = upload_kv(r, 0, &r->dk, err);
    if (st == AS_OK) st = upload_kv(r, 1, &r->dv, err);
    if (st == AS_OK) st = upload_queries(r, err);
    if (st != AS_OK) return st;
    as_gpu_attn *a = &r->da;
    memset(a, 0, sizeof *a);
    a->batch = (int32_t)l->t;
    a->hq = (int32_t)l->hq;
    a->hkv = (int32_t)l->hkv;
    a->d = r->dpad;
    a->kv_dtype = r->dt;
    a->k = r->dk;
    a->v = r->dv;
    a->stride_b = 0; /* every query reads the one cache */
    a->stride_h = (int64_t)l->n * r->dpad;
    a->stride_n = r->dpad;
    a->lens = r->dlens;
    a->nmax = (int32_t)l->n;
    a->q = r->dq;
    a->scale = (float)l->scale;
    return AS_OK;
}

static void host_sel_free(as_gpu_sel *h)
{
    free(h->idx);
    free(h->count);
    free(h->logw);
    memset(h, 0, sizeof *h);
}

/* copy a device selection to the host */
static as_status sel_download(const as_gpu_attn *a, const as_gpu_sel *sel, as_gpu_sel *hsel,
                              char *err)
{
    const int64_t nr = as_gpu_sel_rows(a, sel->mode);
    hsel->mode = sel->mode;
    hsel->kcap = sel->kcap;
    hsel->idx = malloc((size_t)nr * sel->kcap * sizeof(int32_t));
    hsel->count = malloc((size_t)nr * sizeof(int32_t));
    hsel->logw = sel->logw ? malloc((size_t)nr * sel->kcap * sizeof(float)) : NULL;
    if (!hsel->idx || !hsel->count || (sel->logw && !hsel->logw))
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    as_status st = as_gpu_download(hsel->idx, sel->idx, (size_t)nr * sel->kcap * 4, err);
    if (st == AS_OK) st = as_gpu_download(hsel->count, sel->count, (size_t)nr * 4, err);
    if (st == AS_OK && sel->logw)
        st = as_gpu_download(hsel->logw, sel->logw, (size_t)nr * sel->kcap * 4, err);
    return st;
}

/* Run one method with kk keys on the GPU: host copies of the outputs [T][hq][dpad] and of the
 * selection; *n_det: the entries of a selection row that form S (-1: all). */
static as_status run_method(replay_layer *r, int method, int32_t kk, const replay_opts *o,
                            float *o_host, as_gpu_sel *hsel, int32_t *n_det, char *err)
{
    as_gpu_attn *a = &r->da;
    const size_t on = (size_t)a->batch * a->hq * a->d;
    float *d_o = NULL, *d_l = NULL;
    as_gpu_sel sel;
    as_gpu_pages pg;
    memset(&sel, 0, sizeof sel);
    memset(&pg, 0, sizeof pg);
    *n_det = -1;
    as_status st = as_gpu_malloc((void **)&d_o, on * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_malloc((void **)&d_l, (size_t)a->batch * a->hq * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_memset(d_o, 0xFF, on * sizeof(float), err);
    if (st == AS_OK && method == M_DENSE) {
        st = as_gpu_decode_dense(r->ctx, a, d_o, d_l, 0, err);
    } else if (st == AS_OK) {
        const int32_t page = (int32_t)o->page;
        const int sampled = method == M_TOPK_SAMPLE || method == M_PAGE_SAMPLE;
        int32_t kcap = kk, kt = kk, m = 0, np = 0;
        if (method == M_PAGE) {
            np = (kk + page - 1) / page;
            kcap = np * page;
        } else if (method == M_TOPK_SAMPLE) {
            kt = (kk + 1) / 2;
            m = kk - kt;
            kcap = kt + m;
            *n_det = kt;
        } else if (method == M_PAGE_SAMPLE) {
            /* as 'sparsity --method page-sample' with --heavy-frac 0.5: the whole pages within
             * round(k / 2) keys (none when that is below one page), the rest of k sampled */
            np = (kk / 2 + kk % 2) / page;
            const int32_t npg = (int32_t)((r->n + page - 1) / page);
            if (np > npg) np = npg;
            m = kk - np * page;
            if (m < 0) m = 0;
            kcap = np * page + m;
            *n_det = np * page;
        }
        st = as_gpu_sel_alloc(&sel, a, o->mode, kcap > 0 ? kcap : 1, sampled, err);
        if (st == AS_OK && method == M_TOPK) st = as_gpu_select_topk(r->ctx, a, kk, &sel, err);
        if (st == AS_OK && (method == M_PAGE || method == M_PAGE_SAMPLE)) {
            st = as_gpu_pages_alloc(&pg, a, page, err);
            if (st == AS_OK) st = as_gpu_pages_build(r->ctx, a, &pg, err);
        }
        if (st == AS_OK && method == M_PAGE)
            st = as_gpu_select_pages(r->ctx, a, &pg, np, &sel, err);
        if (st == AS_OK && method == M_PAGE_SAMPLE)
            st = as_gpu_select_pages_sample(r->ctx, a, &pg, np, m, (uint64_t)o->seed, &sel, err);
        if (st == AS_OK && method == M_TOPK_SAMPLE)
            st = as_gpu_select_topk_sample(r->ctx, a, kt, m, (uint64_t)o->seed, &sel, err);
        if (st == AS_OK) st = as_gpu_decode_sparse(r->ctx, a, &sel, d_o, d_l, 0, err);
        if (st == AS_OK) st = as_gpu_sync(r->ctx, err);
        if (st == AS_OK) st = sel_download(a, &sel, hsel, err);
    }
    if (st == AS_OK) st = as_gpu_sync(r->ctx, err);
    if (st == AS_OK) st = as_gpu_download(o_host, d_o, on * sizeof(float), err);
    as_gpu_sel_free(&sel);
    as_gpu_pages_free(&pg);
    as_gpu_free(d_o);
    as_gpu_free(d_l);
    return st;
}

/* The kernel's float32 tolerance (docs/gpu.md): 1e-4 ||o|| + 1e-6 max ||v||. */
#define R_REL_TOL 1e-4
#define R_V_TOL 1e-6

/* One record per query head of what as_sp_check_kernel_layer found. */
static int add_records(as_out *out, const as_layer *l, int m, const replay_opts *o, int64_t k,
                       as_gpu_dtype dt, const as_sp_kstats *ks, method_stats *ms)
{
    int viol = 0;
    for (int64_t h = 0; h < l->hq; h++) {
        const as_sp_kstats *s = &ks[h];
        ms->checks += s->queries;
        ms->violations += s->violations;
        ms->max_rel = fmax(ms->max_rel, s->max_rel_error);
        cJSON *rec = as_rec_new("gpu_replay", l->index, h);
        cJSON_AddStringToObject(rec, "method", method_names[m]);
        cJSON_AddStringToObject(rec, "mode", m == M_DENSE ? "-" : (o->mode == AS_GPU_SEL_Q ? "q" : "kv"));
        cJSON_AddStringToObject(rec, "kv_dtype", as_gpu_dtype_name(dt));
        cJSON_AddNumberToObject(rec, "k", m == M_DENSE ? (double)l->n : (double)k);
        cJSON_AddNumberToObject(rec, "queries", (double)s->queries);
        cJSON_AddNumberToObject(rec, "min_captured_mass", s->min_captured_mass);
        cJSON_AddNumberToObject(rec, "max_rel_error", s->max_rel_error);
        cJSON_AddNumberToObject(rec, "max_abs_error", s->max_abs_error);
        cJSON_AddNumberToObject(rec, "max_bound", s->max_bound);
        cJSON_AddNumberToObject(rec, "bound_at_worst", s->bound_at_worst);
        cJSON_AddNumberToObject(rec, "worst_error_over_bound", s->worst_ratio);
        cJSON_AddNumberToObject(rec, "violations", (double)s->violations);
        cJSON_AddStringToObject(rec, "status", s->violations ? "FAIL" : "PASS");
        as_out_add(out, rec);
        viol |= s->violations > 0;
    }
    return viol;
}

/* Every wanted method and budget on one layer: GPU run, check through analysis/as_sp_check,
 * records. Returns 0, 1 (a violation) or an exit code >= 2. */
static int replay_one_layer(as_gpu_ctx *ctx, const as_layer *l, const replay_opts *o, as_out *out,
                            method_stats *ms)
{
    char err[AS_ERR_LEN];
    replay_layer r;
    as_status st = layer_load(&r, ctx, l, err);
    float *og = malloc((size_t)l->t * l->hq * (r.dpad ? r.dpad : 1) * sizeof(float));
    as_sp_kstats *ks = malloc((size_t)l->hq * sizeof *ks);
    if (st == AS_OK && (!og || !ks)) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    int rc = 0;
    for (int m = 0; st == AS_OK && m < M_N; m++) {
        if (!o->want[m]) continue;
        for (size_t bi = 0; st == AS_OK && bi < (m == M_DENSE ? 1 : o->n_budgets); bi++) {
            const int64_t k = as_budget_keys(o->budgets[bi], r.n);
            as_gpu_sel hs;
            memset(&hs, 0, sizeof hs);
            int32_t n_det = -1;
            st = run_method(&r, m, (int32_t)(k > 0 ? k : 1), o, og, &hs, &n_det, err);
            if (st == AS_OK) {
                const as_sp_ksel ksel = {.per_query_head = hs.mode == AS_GPU_SEL_Q, .idx = hs.idx,
                                         .count = hs.count, .logw = hs.logw, .kcap = hs.kcap,
                                         .n_det = n_det, .sample_rest = m == M_PAGE_SAMPLE};
                st = as_sp_check_kernel_layer(l, og, r.dpad, m == M_DENSE ? NULL : &ksel,
                                              R_REL_TOL, R_V_TOL, ks, err);
            }
            if (st == AS_OK && add_records(out, l, m, o, k, r.dt, ks, &ms[m])) rc = 1;
            host_sel_free(&hs);
        }
    }
    if (st != AS_OK) rc = as_cli_fail("gpu replay", st, err);
    free(og);
    free(ks);
    layer_free(&r);
    return rc;
}

static void replay_summary(as_out *out, const replay_opts *o, const method_stats *ms)
{
    cJSON *summ = cJSON_CreateArray();
    for (int m = 0; m < M_N; m++) {
        if (!o->want[m]) continue;
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "method", method_names[m]);
        cJSON_AddNumberToObject(s, "checks", (double)ms[m].checks);
        cJSON_AddNumberToObject(s, "passed", (double)(ms[m].checks - ms[m].violations));
        cJSON_AddNumberToObject(s, "max_rel_error", ms[m].max_rel);
        cJSON_AddItemToArray(summ, s);
        if (o->cc.fmt == AS_FMT_TABLE)
            fprintf(stderr, "gpu replay %-11s %lld/%lld bound checks passed, max rel error %.3g\n",
                    method_names[m], (long long)(ms[m].checks - ms[m].violations),
                    (long long)ms[m].checks, ms[m].max_rel);
    }
    as_out_meta(out, "summary", summ);
    static const char *const cols[] = {"layer", "head", "method", "mode", "k", "queries",
                                       "min_captured_mass", "max_rel_error", "max_abs_error",
                                       "bound_at_worst", "worst_error_over_bound", "violations",
                                       "status", NULL};
    static const char *const heads[] = {"layer", "head", "method", "mode", "k", "queries",
                                        "min P_S", "max rel err", "max abs err", "bound",
                                        "err/(bound+tol)", "viol", "status", NULL};
    static const char *const fmts[] = {"%d", "%d", "%s", "%s", "%d", "%d", "%.4f", "%.3e",
                                       "%.3e", "%.3e", "%.3f", "%d", "%s", NULL};
    as_out_table(out, "gpu_replay", "GPU replay: error vs float64 dense and the subset bound",
                 cols, heads, fmts);
}

static int parse_methods(replay_opts *o, const char *arg)
{
    if (!strcmp(arg, "all")) {
        for (int m = 0; m < M_N; m++) o->want[m] = 1;
        return 0;
    }
    for (int m = 0; m < M_N; m++) o->want[m] = 0;
    const char *p = arg;
    while (*p) {
        const size_t len = strcspn(p, ",");
        int found = 0;
        for (int m = 0; m < M_N; m++) {
            as_sp_method sm;
            int hit = (strlen(method_names[m]) == len && !strncmp(p, method_names[m], len)) ||
                      (strlen(method_alias[m]) == len && !strncmp(p, method_alias[m], len));
            if (!hit && m != M_DENSE && len < 32) { /* the sparsity command's spellings */
                char tok[32];
                memcpy(tok, p, len);
                tok[len] = '\0';
                hit = !as_sp_method_parse(tok, &sm) && !strcmp(as_sp_method_name(sm), method_names[m]);
            }
            if (hit) o->want[m] = found = 1;
        }
        if (!found)
            return as_cli_usage("gpu replay",
                                "unknown method '%.*s' (dense, topk, page, topk-sample, "
                                "page-sample, all)",
                                (int)len, p);
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

enum { O_METHOD = 1, O_BUDGET, O_SPARSITY, O_MODE, O_PAGE, O_SEED };

static int replay_opt(void *ctx, int opt, const char *arg)
{
    replay_opts *o = ctx;
    char err[AS_ERR_LEN];
    switch (opt) {
    case O_METHOD: return parse_methods(o, arg) ? 2 : 0;
    case O_BUDGET:
    case O_SPARSITY: /* --budget 50x: the old spelling of --sparsity 50 */
        if (as_budget_parse_list(arg, opt == O_SPARSITY || strchr(arg, 'x'), o->budgets,
                                 R_MAX_BUDGETS, &o->n_budgets, err) != AS_OK)
            return as_cli_usage("gpu replay", "%s", err);
        return 0;
    case O_MODE:
        if (!strcmp(arg, "kv")) o->mode = AS_GPU_SEL_KV;
        else if (!strcmp(arg, "q")) o->mode = AS_GPU_SEL_Q;
        else return as_cli_usage("gpu replay", "--mode is kv or q");
        return 0;
    case O_PAGE: return as_cli_parse_int("gpu replay", "page", arg, 1, 1 << 20, &o->page) ? 2 : 0;
    case O_SEED: return as_cli_parse_int("gpu replay", "seed", arg, 0, 1L << 62, &o->seed) ? 2 : 0;
    default: return -1;
    }
}

/* Options; returns AS_CLI_GO to go on, else the exit code. */
static int replay_parse(int argc, char **argv, replay_opts *o)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"method", required_argument, 0, O_METHOD},
                                         {"budget", required_argument, 0, O_BUDGET},
                                         {"sparsity", required_argument, 0, O_SPARSITY},
                                         {"mode", required_argument, 0, O_MODE},
                                         {"page", required_argument, 0, O_PAGE},
                                         {"page-size", required_argument, 0, O_PAGE},
                                         {"seed", required_argument, 0, O_SEED},
                                         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    for (int m = 0; m < M_N; m++) o->want[m] = 1;
    o->budgets[0] = (as_budget){0.1, 0};
    o->n_budgets = 1;
    o->page = 16;
    o->seed = 1;
    o->mode = AS_GPU_SEL_KV;
    return as_cli_parse_trace("gpu replay", argc, argv, opts, NULL, replay_opt, o, &o->cc);
}

static int replay(int argc, char **argv)
{
    replay_opts o;
    int rc = replay_parse(argc, argv, &o);
    if (rc != AS_CLI_GO) return rc;
    char why[AS_ERR_LEN], err[AS_ERR_LEN];
    if (!as_gpu_available(why)) return as_cli_fail("gpu replay", AS_ERR_IO, why);
    as_cli_job job;
    if ((rc = as_cli_job_open(&job, "gpu replay", &o.cc, -1, AS_CLI_UNITS_NONE)) != 0) return rc;
    as_trace *tr = job.tr;
    as_gpu_ctx *ctx = as_gpu_ctx_new(0, err);
    if (!ctx) {
        as_cli_job_close(&job);
        return as_cli_fail("gpu replay", AS_ERR_IO, err);
    }
    as_out *out = as_out_new(o.cc.fmt, "gpu replay", o.cc.trace);
    char dev[256] = "";
    as_gpu_device_name(dev, sizeof dev, err);
    as_out_meta(out, "device", cJSON_CreateString(dev));
    method_stats ms[M_N];
    memset(ms, 0, sizeof ms);
    rc = 0;
    for (size_t li = 0; li < as_trace_n_layers(tr) && rc <= 1; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (o.cc.layer >= 0 && l->index != o.cc.layer) continue;
        const int lrc = replay_one_layer(ctx, l, &o, out, ms);
        if (lrc > rc) rc = lrc;
    }
    replay_summary(out, &o, ms);
    as_cli_job_close(&job);
    as_gpu_ctx_free(ctx);
    if (rc > 1) {
        as_out_free(out);
        return rc;
    }
    const int orc = as_out_finish(out, stdout);
    return rc ? rc : orc;
}

/* ---- bench ------------------------------------------------------------------------------- */
static void bench_progress(const as_gpu_bench_row *r, void *user)
{
    if (*(int *)user) return;
    fprintf(stderr, "  %-13s B=%-3d d=%-3d N=%-8d %6.0fx %10.1f us %8.1f GB/s %5.1f%%\n",
            r->method, r->batch, r->d, r->n, r->sparsity, r->us, r->gbps, r->pct_copy);
}

static int bench(int argc, char **argv)
{
    enum { O_QUICK = 1, O_BATCHES, O_NS, O_DS, O_SP, O_HQ, O_HKV, O_REPS, O_MAXGIB, O_NOSEL, O_VAR,
           O_SPLIT, O_ONLY, O_PAGED };
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"quick", no_argument, 0, O_QUICK},
                                         {"batches", required_argument, 0, O_BATCHES},
                                         {"ns", required_argument, 0, O_NS},
                                         {"ds", required_argument, 0, O_DS},
                                         {"sparsities", required_argument, 0, O_SP},
                                         {"hq", required_argument, 0, O_HQ},
                                         {"hkv", required_argument, 0, O_HKV},
                                         {"reps", required_argument, 0, O_REPS},
                                         {"max-gib", required_argument, 0, O_MAXGIB},
                                         {"no-selection", no_argument, 0, O_NOSEL},
                                         {"variant", required_argument, 0, O_VAR},
                                         {"split-kv", no_argument, 0, O_SPLIT},
                                         {"paged", required_argument, 0, O_PAGED},
                                         {"only", required_argument, 0, O_ONLY},
                                         {0, 0, 0, 0}};
    as_cli_common cc;
    as_cli_common_init(&cc);
    double bl[16] = {1, 8, 32, 64}, nl[16] = {8192, 32768, 131072, 262144, 524288, 1048576};
    double dl[4] = {128}, sl[16] = {1, 10, 20, 50, 100};
    int nb = 4, nn = 6, nd = 1, ns = 5;
    long hq = 32, hkv = 8, reps = 30, variant = 0;
    double max_gib = 36;
    int selection = 1, split_kv = 0;
    long paged = 0;
    const char *only = NULL;
    int opt, rr;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((rr = as_cli_common_opt(&cc, "gpu bench", opt, optarg)) == 1) continue;
        if (rr == 2) return 0;
        if (rr < 0) return 2;
        switch (opt) {
        case O_QUICK:
            nb = 2; bl[0] = 1; bl[1] = 8;
            nn = 2; nl[0] = 8192; nl[1] = 65536;
            break;
        case O_BATCHES: if (parse_list("gpu bench", "batches", optarg, bl, 16, &nb)) return 2; break;
        case O_NS: if (parse_list("gpu bench", "ns", optarg, nl, 16, &nn)) return 2; break;
        case O_DS: if (parse_list("gpu bench", "ds", optarg, dl, 4, &nd)) return 2; break;
        case O_SP: if (parse_list("gpu bench", "sparsities", optarg, sl, 16, &ns)) return 2; break;
        case O_HQ: if (as_cli_parse_int("gpu bench", "hq", optarg, 1, 4096, &hq)) return 2; break;
        case O_HKV: if (as_cli_parse_int("gpu bench", "hkv", optarg, 1, 4096, &hkv)) return 2; break;
        case O_REPS: if (as_cli_parse_int("gpu bench", "reps", optarg, 20, 100000, &reps)) return 2; break;
        case O_VAR: if (as_cli_parse_int("gpu bench", "variant", optarg, 0, AS_GPU_VARIANTS - 1, &variant)) return 2; break;
        case O_MAXGIB:
            if (as_cli_parse_real("gpu bench", "max-gib", optarg, 0, INFINITY, AS_OPEN_LO,
                                  &max_gib))
                return 2;
            break;
        case O_NOSEL: selection = 0; break;
        case O_SPLIT: split_kv = 1; break;
        case O_PAGED:
            if (as_cli_parse_int("gpu bench", "paged", optarg, 0, 1 << 20, &paged)) return 2;
            if (paged > 0 && (paged & (paged - 1)))
                return as_cli_usage("gpu bench", "--paged: the block size must be a power of two");
            break;
        case O_ONLY: only = optarg; break;
        default: return as_cli_bad_option("gpu bench", opt, argv);
        }
    }
    if (optind != argc) return as_cli_usage("gpu bench", "takes no positional arguments");
    if (hq % hkv) return as_cli_usage("gpu bench", "--hq must be a multiple of --hkv");
    int32_t bi[16], ni[16], di[4];
    for (int i = 0; i < nb; i++) bi[i] = (int32_t)bl[i];
    for (int i = 0; i < nn; i++) ni[i] = (int32_t)nl[i];
    for (int i = 0; i < nd; i++) {
        di[i] = (int32_t)dl[i];
        if (di[i] != 64 && di[i] != 128 && di[i] != 256)
            return as_cli_usage("gpu bench", "--ds: head dims are 64, 128 or 256");
    }
    char why[AS_ERR_LEN], err[AS_ERR_LEN];
    if (!as_gpu_available(why)) return as_cli_fail("gpu bench", AS_ERR_IO, why);
    as_gpu_ctx *ctx = as_gpu_ctx_new(0, err);
    if (!ctx) return as_cli_fail("gpu bench", AS_ERR_IO, err);
    char dev[256] = "";
    as_gpu_device_name(dev, sizeof dev, err);
    if (!cc.quiet) fprintf(stderr, "attnscope gpu bench on %s\n", dev);
    as_gpu_bench_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.batches = bi; cfg.n_batches = nb;
    cfg.ns = ni; cfg.n_ns = nn;
    cfg.ds = di; cfg.n_ds = nd;
    cfg.sparsities = sl; cfg.n_sparsities = ns;
    cfg.hq = (int32_t)hq; cfg.hkv = (int32_t)hkv;
    cfg.reps = (int32_t)reps; cfg.warmup = 3;
    cfg.max_gib = max_gib;
    cfg.selection = selection;
    cfg.variant = (int)variant;
    cfg.split_kv = split_kv;
    cfg.paged = (int32_t)paged;
    cfg.only = only;
    cfg.progress = bench_progress;
    int quiet = cc.quiet;
    cfg.user = &quiet;
    as_gpu_bench_row *rows = NULL;
    size_t nrows = 0;
    as_status st = as_gpu_bench(ctx, &cfg, &rows, &nrows, err);
    as_gpu_ctx_free(ctx);
    if (st != AS_OK) return as_cli_fail("gpu bench", st, err);
    as_out *out = as_out_new(cc.fmt, "gpu bench", NULL);
    as_out_meta(out, "device", cJSON_CreateString(dev));
    as_out_meta(out, "variant", cJSON_CreateNumber((double)variant));
    as_out_meta(out, "paged", cJSON_CreateNumber((double)paged));
    for (size_t i = 0; i < nrows; i++) {
        const as_gpu_bench_row *r = &rows[i];
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "record", "gpu_bench");
        cJSON_AddStringToObject(rec, "method", r->method);
        cJSON_AddNumberToObject(rec, "batch", r->batch);
        cJSON_AddNumberToObject(rec, "hq", r->hq);
        cJSON_AddNumberToObject(rec, "hkv", r->hkv);
        cJSON_AddNumberToObject(rec, "d", r->d);
        cJSON_AddNumberToObject(rec, "n", r->n);
        cJSON_AddNumberToObject(rec, "sparsity", r->sparsity);
        cJSON_AddNumberToObject(rec, "us", r->us);
        cJSON_AddNumberToObject(rec, "us_min", r->us_min);
        cJSON_AddNumberToObject(rec, "us_max", r->us_max);
        cJSON_AddNumberToObject(rec, "launches", r->launches);
        cJSON_AddNumberToObject(rec, "bytes", r->bytes);
        cJSON_AddNumberToObject(rec, "gbps", r->gbps);
        cJSON_AddNumberToObject(rec, "pct_copy", r->pct_copy);
        cJSON_AddNumberToObject(rec, "pct_read", r->pct_read);
        cJSON_AddBoolToObject(rec, "graphed", r->graphed != 0);
        as_out_add(out, rec);
    }
    free(rows);
    static const char *const cols[] = {"method", "batch", "d", "n", "sparsity", "us", "bytes",
                                       "gbps", "pct_copy", "pct_read", NULL};
    static const char *const heads[] = {"method", "B", "d", "N", "sparsity", "us", "bytes",
                                        "GB/s", "% copy", "% read", NULL};
    static const char *const fmts[] = {"%s", "%d", "%d", "%d", "%.0f", "%.1f", "%.3g", "%.1f",
                                       "%.1f", "%.1f", NULL};
    as_out_table(out, "gpu_bench", "GPU kernels (median of timed launches)", cols, heads, fmts);
    return as_out_finish(out, stdout);
}

int as_cmd_gpu(int argc, char **argv)
{
    if (argc < 2) {
        fputs(as_help_gpu, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help") || !strcmp(argv[1], "-h")) {
        fputs(as_help_gpu, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "replay")) return replay(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench")) return bench(argc - 1, argv + 1);
    fprintf(stderr, "attnscope gpu: unknown subcommand '%s' (replay, bench)\n", argv[1]);
    return 2;
}

#else
typedef int as_cmd_gpu_absent; /* built without CUDA: no `gpu` command */
#endif
