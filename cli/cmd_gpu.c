/* attnscope gpu: replay a trace through the GPU kernels and check every head against the
 * float64 dense output and the subset bound; benchmark the kernels (docs/gpu.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_help.h"

#ifdef AS_HAVE_CUDA
#include "as_attn.h"
#include "as_gpu.h"
#include "cli_util.h"

const char as_help_gpu[] =
    "usage: attnscope gpu replay TRACE [--method M] [--budget B] [--mode kv|q] [--page P]\n"
    "                            [--seed S] [--layer L] [--json|--csv]\n"
    "       attnscope gpu bench [--quick] [--batches 1,8,32,64] [--ns 8192,...] [--ds 128,64]\n"
    "                           [--sparsities 1,10,20,50,100] [--hq 32] [--hkv 8] [--reps 30]\n"
    "                           [--max-gib G] [--no-selection] [--variant V] [--json|--csv]\n\n"
    "replay: load each layer's K/V (stored type kept: bf16, f16 or f32) and queries to the GPU\n"
    "(the queries of a trace form the batch, each seeing its causal prefix), run the method and\n"
    "compare every query head's output with the float64 dense output (analysis/as_attn.h):\n"
    "  dense   the dense decode kernel (bound 0)\n"
    "  topk    exact top-k of the scores on the GPU (radix select), sparse decode\n"
    "  pages   Quest page selection (pages of P keys, per-page min/max keys), sparse decode\n"
    "  tks     top-k heavy hitters (half the budget) + uniform samples of the rest (the other\n"
    "          half), numerator and denominator estimated separately\n"
    "  all     every method (default)\n"
    "Budget: '2%', '0.02', '50x' (keep 1/50) or a key count (default 10%); the number of keys\n"
    "k = ceil(fraction * N) is the same for every query. --mode kv (default) selects per kv\n"
    "head (shared by its query heads), q per query head.\n"
    "Bound (docs/theory.md): for the kept set S with captured mass P_S,\n"
    "  ||o - o_S|| <= (1 - P_S) max_{i not in S} ||v_i - o_S||;\n"
    "for tks, whose output mixes S with reweighted samples of the rest (estimated share 1-lam\n"
    "of the mass), ||o - o_hat|| <= ((1 - P_S) + (1 - lam)) max_{i not in S} ||v_i - o_S||.\n"
    "A head fails when a query's error exceeds its bound plus the kernel's float32 tolerance\n"
    "(1e-4 ||o|| + 1e-6 max ||v||). Records 'gpu_replay' per layer x head x method; exit 1 on\n"
    "any violation, 2 on bad input or no usable GPU.\n\n"
    "bench: time the kernels (CUDA events, warm-up, inputs rotating over > 4x L2, median of\n"
    ">= 20 launches) beside a device-to-device copy measured in the same run; rows 'gpu_bench':\n"
    "method, shape, microseconds, bytes that must move, GB/s, % of the copy's GB/s.\n"
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

/* "2%", "0.02", "1/50", "50x" -> fraction; an integer >= 1 -> count */
static int parse_budget(const char *s, double *frac, long *count)
{
    char *end;
    *frac = 0;
    *count = 0;
    const char *slash = strchr(s, '/');
    if (slash) {
        double a = strtod(s, &end), b = strtod(slash + 1, NULL);
        if (end != slash || !(a > 0) || !(b > 0) || a > b) return -1;
        *frac = a / b;
        return 0;
    }
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    if (*end == '%' && !end[1]) {
        if (v > 100) return -1;
        *frac = v / 100;
    } else if (*end == 'x' && !end[1]) {
        if (v < 1) return -1;
        *frac = 1 / v;
    } else if (!*end) {
        if (strchr(s, '.') || strchr(s, 'e')) {
            if (v > 1) return -1;
            *frac = v;
        } else {
            *count = (long)v;
        }
    } else {
        return -1;
    }
    return 0;
}

/* ---- replay ------------------------------------------------------------------------------- */
enum { M_DENSE = 0, M_TOPK, M_PAGES, M_TKS, M_N };
static const char *const method_names[M_N] = {"dense", "topk", "pages", "tks"};

typedef struct {
    int64_t checks, violations;
    double max_rel;
} method_stats;

typedef struct {
    as_gpu_ctx *ctx;
    const as_layer *l;
    int dpad;
    as_gpu_dtype dt;
    int64_t T, n;
    as_gpu_attn da;
    void *dk, *dv;
    float *dq;
    int32_t *dlens;
    float *qhost;    /* [T][hq][dpad] */
    double **vrows;  /* per kv head: n x d */
    double **vnorm;  /* per kv head: n norms */
} replay_layer;

static as_gpu_dtype dtype_of(const as_layer *l)
{
    switch (l->k->dtype) {
    case AS_DT_BF16: return AS_GPU_BF16;
    case AS_DT_F16: return AS_GPU_F16;
    default: return AS_GPU_F32;
    }
}

static void layer_free(replay_layer *r)
{
    as_gpu_free(r->dk);
    as_gpu_free(r->dv);
    as_gpu_free(r->dq);
    as_gpu_free(r->dlens);
    free(r->qhost);
    if (r->vrows)
        for (int64_t h = 0; h < r->l->hkv; h++) free(r->vrows[h]);
    if (r->vnorm)
        for (int64_t h = 0; h < r->l->hkv; h++) free(r->vnorm[h]);
    free(r->vrows);
    free(r->vnorm);
}

static as_status layer_load(replay_layer *r, as_gpu_ctx *ctx, const as_layer *l, char *err)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->l = l;
    if (l->d > 256) return as_err_set(err, AS_ERR_USAGE, "layer %d: head dim %lld > 256 unsupported", l->index, (long long)l->d);
    r->dpad = l->d <= 64 ? 64 : (l->d <= 128 ? 128 : 256);
    r->dt = dtype_of(l);
    r->T = l->t;
    r->n = l->n;
    if (l->t > 65535 || l->n > INT32_MAX / 2)
        return as_err_set(err, AS_ERR_USAGE, "layer %d: too many queries or keys", l->index);
    const int64_t hkv = l->hkv, n = l->n, d = l->d, dp = r->dpad;
    const size_t es = as_gpu_dtype_size(r->dt);
    const size_t kv_elems = (size_t)hkv * n * dp;
    float *buf = calloc(kv_elems ? kv_elems : 1, sizeof(float));
    void *raw = malloc((kv_elems ? kv_elems : 1) * es);
    double *row = malloc((size_t)(n > 0 ? n : 1) * d * sizeof(double));
    r->vrows = calloc((size_t)hkv, sizeof(double *));
    r->vnorm = calloc((size_t)hkv, sizeof(double *));
    as_status st = AS_OK;
    if (!buf || !raw || !row || !r->vrows || !r->vnorm) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
    for (int w = 0; st == AS_OK && w < 2; w++) {
        for (int64_t h = 0; h < hkv; h++) {
            if (w == 0)
                as_layer_read_k(l, h, 0, n, row);
            else
                as_layer_read_v(l, h, 0, n, row);
            for (int64_t i = 0; i < n; i++)
                for (int64_t c = 0; c < d; c++) buf[((size_t)h * n + i) * dp + c] = (float)row[i * d + c];
            if (w == 1) {
                r->vrows[h] = malloc((size_t)(n > 0 ? n : 1) * d * sizeof(double));
                r->vnorm[h] = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
                if (!r->vrows[h] || !r->vnorm[h]) {
                    st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
                    break;
                }
                memcpy(r->vrows[h], row, (size_t)n * d * sizeof(double));
                for (int64_t i = 0; i < n; i++) {
                    double s = 0;
                    for (int64_t c = 0; c < d; c++) s += row[i * d + c] * row[i * d + c];
                    r->vnorm[h][i] = sqrt(s);
                }
            }
        }
        if (st != AS_OK) break;
        as_gpu_pack(r->dt, buf, raw, kv_elems);
        void **dst = w == 0 ? &r->dk : &r->dv;
        st = as_gpu_malloc(dst, kv_elems * es, err);
        if (st == AS_OK) st = as_gpu_upload(*dst, raw, kv_elems * es, err);
    }
    free(buf);
    free(raw);
    free(row);
    if (st != AS_OK) return st;
    const size_t qe = (size_t)l->t * l->hq * dp;
    r->qhost = calloc(qe ? qe : 1, sizeof(float));
    double *qd = malloc((size_t)d * sizeof(double));
    int32_t *lens = malloc((size_t)(l->t > 0 ? l->t : 1) * sizeof(int32_t));
    if (!r->qhost || !qd || !lens) {
        free(qd);
        free(lens);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    for (int64_t t = 0; t < l->t; t++) {
        lens[t] = (int32_t)as_layer_visible(l, t);
        for (int64_t h = 0; h < l->hq; h++) {
            as_layer_read_q(l, h, t, qd);
            for (int64_t c = 0; c < d; c++) r->qhost[((size_t)t * l->hq + h) * dp + c] = (float)qd[c];
        }
    }
    free(qd);
    st = as_gpu_malloc((void **)&r->dq, qe * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_upload(r->dq, r->qhost, qe * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_malloc((void **)&r->dlens, (size_t)l->t * sizeof(int32_t), err);
    if (st == AS_OK) st = as_gpu_upload(r->dlens, lens, (size_t)l->t * sizeof(int32_t), err);
    free(lens);
    if (st != AS_OK) return st;
    as_gpu_attn *a = &r->da;
    memset(a, 0, sizeof *a);
    a->batch = (int32_t)l->t;
    a->hq = (int32_t)l->hq;
    a->hkv = (int32_t)l->hkv;
    a->d = dp;
    a->kv_dtype = r->dt;
    a->k = r->dk;
    a->v = r->dv;
    a->stride_b = 0; /* every query reads the one cache */
    a->stride_h = (int64_t)n * dp;
    a->stride_n = dp;
    a->lens = r->dlens;
    a->nmax = (int32_t)n;
    a->q = r->dq;
    a->scale = (float)l->scale;
    return AS_OK;
}

/* Run one method on the GPU; host copies of outputs [T][hq][dpad] and of the selection. */
static as_status run_method(replay_layer *r, int method, int64_t k, as_gpu_sel_mode mode,
                            int page, uint64_t seed, float *o_host, as_gpu_sel *hsel,
                            int32_t *kt_out, char *err)
{
    as_gpu_attn *a = &r->da;
    const size_t on = (size_t)a->batch * a->hq * a->d;
    float *d_o = NULL, *d_l = NULL;
    as_gpu_sel sel;
    as_gpu_pages pg;
    memset(&sel, 0, sizeof sel);
    memset(&pg, 0, sizeof pg);
    as_status st = as_gpu_malloc((void **)&d_o, on * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_malloc((void **)&d_l, (size_t)a->batch * a->hq * sizeof(float), err);
    if (st == AS_OK) st = as_gpu_memset(d_o, 0xFF, on * sizeof(float), err);
    int32_t kk = (int32_t)(k < r->n ? k : r->n);
    if (kk < 1) kk = 1;
    *kt_out = kk;
    if (st == AS_OK && method == M_DENSE) {
        st = as_gpu_decode_dense(r->ctx, a, d_o, d_l, 0, err);
    } else if (st == AS_OK) {
        int32_t kcap = kk, kt = kk, m = 0, np = 0;
        if (method == M_PAGES) {
            np = (kk + page - 1) / page;
            kcap = np * page;
        } else if (method == M_TKS) {
            kt = (kk + 1) / 2;
            m = kk - kt;
            kcap = kt + m;
            *kt_out = kt;
        }
        st = as_gpu_sel_alloc(&sel, a, mode, kcap, method == M_TKS, err);
        if (st == AS_OK && method == M_TOPK) st = as_gpu_select_topk(r->ctx, a, kk, &sel, err);
        if (st == AS_OK && method == M_PAGES) {
            st = as_gpu_pages_alloc(&pg, a, page, err);
            if (st == AS_OK) st = as_gpu_pages_build(r->ctx, a, &pg, err);
            if (st == AS_OK) st = as_gpu_select_pages(r->ctx, a, &pg, np, &sel, err);
        }
        if (st == AS_OK && method == M_TKS)
            st = as_gpu_select_topk_sample(r->ctx, a, kt, m, seed, &sel, err);
        if (st == AS_OK) st = as_gpu_decode_sparse(r->ctx, a, &sel, d_o, d_l, 0, err);
        if (st == AS_OK) st = as_gpu_sync(r->ctx, err);
        if (st == AS_OK) {
            const int64_t nr = as_gpu_sel_rows(a, mode);
            hsel->mode = mode;
            hsel->kcap = sel.kcap;
            hsel->idx = malloc((size_t)nr * sel.kcap * sizeof(int32_t));
            hsel->count = malloc((size_t)nr * sizeof(int32_t));
            hsel->logw = sel.logw ? malloc((size_t)nr * sel.kcap * sizeof(float)) : NULL;
            if (!hsel->idx || !hsel->count || (sel.logw && !hsel->logw))
                st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
            if (st == AS_OK) st = as_gpu_download(hsel->idx, sel.idx, (size_t)nr * sel.kcap * 4, err);
            if (st == AS_OK) st = as_gpu_download(hsel->count, sel.count, (size_t)nr * 4, err);
            if (st == AS_OK && sel.logw)
                st = as_gpu_download(hsel->logw, sel.logw, (size_t)nr * sel.kcap * 4, err);
        }
    }
    if (st == AS_OK) st = as_gpu_sync(r->ctx, err);
    if (st == AS_OK) st = as_gpu_download(o_host, d_o, on * sizeof(float), err);
    as_gpu_sel_free(&sel);
    as_gpu_pages_free(&pg);
    as_gpu_free(d_o);
    as_gpu_free(d_l);
    return st;
}

/* One query head x query: error, bound, captured mass. */
typedef struct {
    double abs_err, rel_err, bound, mass, norm_o, tol;
    int violated;
} q_eval;

/* error of the GPU output against the float64 output (bound filled by the caller) */
static void base_errors(int64_t d, const double *o_ref, const float *o_gpu, q_eval *ev)
{
    double no = 0, e2 = 0;
    for (int64_t c = 0; c < d; c++) {
        no += o_ref[c] * o_ref[c];
        e2 += (o_gpu[c] - o_ref[c]) * (o_gpu[c] - o_ref[c]);
    }
    ev->norm_o = sqrt(no);
    ev->abs_err = sqrt(e2);
    ev->rel_err = ev->norm_o > 0 ? ev->abs_err / ev->norm_o : ev->abs_err;
    ev->bound = 0;
    ev->mass = 1;
}

static int cmp_i32(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int replay(int argc, char **argv)
{
    enum { O_METHOD = 1, O_BUDGET, O_MODE, O_PAGE, O_SEED };
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"method", required_argument, 0, O_METHOD},
                                         {"budget", required_argument, 0, O_BUDGET},
                                         {"mode", required_argument, 0, O_MODE},
                                         {"page", required_argument, 0, O_PAGE},
                                         {"seed", required_argument, 0, O_SEED},
                                         {0, 0, 0, 0}};
    as_cli_common cc;
    as_cli_common_init(&cc);
    int want[M_N] = {1, 1, 1, 1};
    double frac = 0.1;
    long count = 0, page = 16, seed = 1;
    as_gpu_sel_mode mode = AS_GPU_SEL_KV;
    int opt, rr;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if ((rr = as_cli_common_opt(&cc, "gpu replay", opt, optarg)) == 1) continue;
        if (rr == 2) return 0;
        if (rr < 0) return 2;
        switch (opt) {
        case O_METHOD:
            if (!strcmp(optarg, "all")) {
                for (int m = 0; m < M_N; m++) want[m] = 1;
                break;
            }
            for (int m = 0; m < M_N; m++) want[m] = 0;
            {
                int found = 0;
                for (int m = 0; m < M_N; m++)
                    if (!strcmp(optarg, method_names[m]) ||
                        (m == M_PAGES && !strcmp(optarg, "quest")) ||
                        (m == M_TKS && !strcmp(optarg, "topk-sample")) ||
                        (m == M_PAGES && !strcmp(optarg, "page"))) {
                        want[m] = 1;
                        found = 1;
                    }
                if (!found)
                    return as_cli_usage("gpu replay", "unknown method '%s' (dense, topk, pages, tks, all)", optarg);
            }
            break;
        case O_BUDGET:
            if (parse_budget(optarg, &frac, &count))
                return as_cli_usage("gpu replay", "bad budget '%s' (e.g. 2%%, 0.02, 50x, 128)", optarg);
            break;
        case O_MODE:
            if (!strcmp(optarg, "kv")) mode = AS_GPU_SEL_KV;
            else if (!strcmp(optarg, "q")) mode = AS_GPU_SEL_Q;
            else return as_cli_usage("gpu replay", "--mode is kv or q");
            break;
        case O_PAGE:
            if (as_cli_parse_int("gpu replay", "page", optarg, 1, 1 << 20, &page)) return 2;
            break;
        case O_SEED:
            if (as_cli_parse_int("gpu replay", "seed", optarg, 0, 1L << 62, &seed)) return 2;
            break;
        default:
            return as_cli_bad_option("gpu replay", opt, argv);
        }
    }
    if (optind != argc - 1) return as_cli_usage("gpu replay", "expects exactly one TRACE");
    cc.trace = argv[optind];
    char why[AS_ERR_LEN], err[AS_ERR_LEN];
    if (!as_gpu_available(why)) return as_cli_fail("gpu replay", AS_ERR_IO, why);
    int code;
    as_trace *tr = as_cli_open_trace("gpu replay", cc.trace, 1, &code);
    if (!tr) return code;
    if (cc.layer >= 0 && !as_trace_find_layer(tr, cc.layer)) {
        as_trace_free(tr);
        return as_cli_usage("gpu replay", "%s has no layer %d", cc.trace, cc.layer);
    }
    as_gpu_ctx *ctx = as_gpu_ctx_new(0, err);
    if (!ctx) {
        as_trace_free(tr);
        return as_cli_fail("gpu replay", AS_ERR_IO, err);
    }
    as_out *out = as_out_new(cc.fmt, "gpu replay", cc.trace);
    char dev[256] = "";
    as_gpu_device_name(dev, sizeof dev, err);
    as_out_meta(out, "device", cJSON_CreateString(dev));
    method_stats ms[M_N];
    memset(ms, 0, sizeof ms);
    int rc = 0;
    for (size_t li = 0; li < as_trace_n_layers(tr) && rc == 0; li++) {
        const as_layer *l = as_trace_layer(tr, li);
        if (cc.layer >= 0 && l->index != cc.layer) continue;
        replay_layer r;
        as_status st = layer_load(&r, ctx, l, err);
        if (st != AS_OK) {
            rc = as_cli_fail("gpu replay", st, err);
            layer_free(&r);
            break;
        }
        const int64_t d = l->d, dp = r.dpad, n = l->n, group = l->hq / l->hkv;
        const int64_t k = count > 0 ? count : (int64_t)ceil(frac * (double)n);
        /* float64 dense references for every head and query */
        double *P = malloc((size_t)l->hq * l->t * (n > 0 ? n : 1) * sizeof(double));
        double *O = malloc((size_t)l->hq * l->t * d * sizeof(double));
        int64_t *NV = malloc((size_t)l->hq * l->t * sizeof(int64_t));
        float *og = malloc((size_t)l->t * l->hq * dp * sizeof(float));
        unsigned char *inS = malloc((size_t)(n > 0 ? n : 1));
        double *oS = malloc((size_t)d * sizeof(double));
        int32_t *tmp = malloc((size_t)(n > 0 ? n : 1) * 4 + 4);
        if (!P || !O || !NV || !og || !inS || !oS || !tmp) {
            rc = as_cli_fail("gpu replay", AS_ERR_NOMEM, "out of memory");
        }
        for (int64_t h = 0; rc == 0 && h < l->hq; h++)
            for (int64_t t = 0; t < l->t; t++) {
                double lse;
                st = as_attn_dense(l, h, t, P + (h * l->t + t) * n, O + (h * l->t + t) * d,
                                   &NV[h * l->t + t], &lse, err);
                if (st != AS_OK) {
                    rc = as_cli_fail("gpu replay", st, err);
                    break;
                }
            }
        for (int m = 0; rc == 0 && m < M_N; m++) {
            if (!want[m]) continue;
            as_gpu_sel hs;
            memset(&hs, 0, sizeof hs);
            int32_t kt = 0;
            st = run_method(&r, m, k, mode, (int)page, (uint64_t)seed, og, &hs, &kt, err);
            if (st != AS_OK) {
                rc = as_cli_fail("gpu replay", st, err);
                free(hs.idx);
                free(hs.count);
                free(hs.logw);
                break;
            }
            for (int64_t h = 0; h < l->hq; h++) {
                const int64_t kvh = h / group;
                double worst_ratio = 0, max_rel = 0, max_abs = 0, bound_at = 0, min_mass = 1;
                double max_bound = 0;
                int64_t viol = 0, nq = 0;
                for (int64_t t = 0; t < l->t; t++) {
                    const double *p = P + (h * l->t + t) * n;
                    const double *o_ref = O + (h * l->t + t) * d;
                    const int64_t nv = NV[h * l->t + t];
                    const float *o_g = og + ((size_t)t * l->hq + h) * dp;
                    q_eval ev;
                    base_errors(d, o_ref, o_g, &ev);
                    double maxv = 0;
                    for (int64_t i = 0; i < nv; i++) maxv = fmax(maxv, r.vnorm[kvh][i]);
                    if (m != M_DENSE) {
                        /* S: the kept set (tks: its deterministic top-k part) */
                        const int64_t srow = mode == AS_GPU_SEL_Q ? t * l->hq + h : t * l->hkv + kvh;
                        const int32_t *ids = hs.idx + srow * hs.kcap;
                        const int32_t cnt = hs.count[srow];
                        const int32_t ndet = m == M_TKS ? (kt < nv ? kt : (int32_t)nv) : cnt;
                        memset(inS, 0, (size_t)(n > 0 ? n : 1));
                        int64_t ns = 0;
                        for (int32_t e = 0; e < ndet && e < cnt; e++) {
                            const int32_t j = ids[e];
                            if (j >= 0 && j < nv && !inS[j]) {
                                inS[j] = 1;
                                tmp[ns++] = j;
                            }
                        }
                        qsort(tmp, (size_t)ns, sizeof(int32_t), cmp_i32);
                        double PS = 0;
                        for (int64_t c = 0; c < d; c++) oS[c] = 0;
                        for (int64_t e = 0; e < ns; e++) {
                            const int32_t j = tmp[e];
                            PS += p[j];
                            for (int64_t c = 0; c < d; c++) oS[c] += p[j] * r.vrows[kvh][(int64_t)j * d + c];
                        }
                        if (PS > 0)
                            for (int64_t c = 0; c < d; c++) oS[c] /= PS;
                        double devmax = 0;
                        for (int64_t i = 0; i < nv; i++) {
                            if (inS[i]) continue;
                            double s = 0;
                            for (int64_t c = 0; c < d; c++) {
                                const double x = r.vrows[kvh][i * d + c] - oS[c];
                                s += x * x;
                            }
                            devmax = fmax(devmax, sqrt(s));
                        }
                        double rest = 1 - PS;
                        if (rest < 0) rest = 0;
                        double share = 0; /* tks: estimated share of the samples, 1 - lambda */
                        if (m == M_TKS && cnt > ndet) {
                            const int32_t mm = cnt - ndet;
                            const double w = (double)nv / mm;
                            double zs = 0;
                            for (int32_t e = ndet; e < cnt; e++) {
                                const int32_t j = ids[e];
                                const float lw = hs.logw ? hs.logw[srow * hs.kcap + e] : 0.f;
                                if (j >= 0 && j < nv && !inS[j] && lw != -INFINITY) zs += p[j];
                            }
                            zs *= w;
                            share = (PS + zs) > 0 ? zs / (PS + zs) : 0;
                        }
                        ev.bound = (rest + share) * devmax;
                        ev.mass = PS;
                    }
                    ev.tol = 1e-4 * ev.norm_o + 1e-6 * maxv;
                    ev.violated = !(ev.abs_err <= ev.bound + ev.tol);
                    nq++;
                    viol += ev.violated;
                    const double ratio = ev.abs_err / (ev.bound + ev.tol);
                    if (ratio > worst_ratio) {
                        worst_ratio = ratio;
                        bound_at = ev.bound;
                    }
                    max_rel = fmax(max_rel, ev.rel_err);
                    max_abs = fmax(max_abs, ev.abs_err);
                    max_bound = fmax(max_bound, ev.bound);
                    min_mass = fmin(min_mass, ev.mass);
                }
                ms[m].checks += nq;
                ms[m].violations += viol;
                ms[m].max_rel = fmax(ms[m].max_rel, max_rel);
                cJSON *rec = as_rec_new("gpu_replay", l->index, h);
                cJSON_AddStringToObject(rec, "method", method_names[m]);
                cJSON_AddStringToObject(rec, "mode", m == M_DENSE ? "-" : (mode == AS_GPU_SEL_Q ? "q" : "kv"));
                cJSON_AddStringToObject(rec, "kv_dtype", as_gpu_dtype_name(r.dt));
                cJSON_AddNumberToObject(rec, "k", m == M_DENSE ? (double)n : (double)k);
                cJSON_AddNumberToObject(rec, "queries", (double)nq);
                cJSON_AddNumberToObject(rec, "min_captured_mass", min_mass);
                cJSON_AddNumberToObject(rec, "max_rel_error", max_rel);
                cJSON_AddNumberToObject(rec, "max_abs_error", max_abs);
                cJSON_AddNumberToObject(rec, "max_bound", max_bound);
                cJSON_AddNumberToObject(rec, "bound_at_worst", bound_at);
                cJSON_AddNumberToObject(rec, "worst_error_over_bound", worst_ratio);
                cJSON_AddNumberToObject(rec, "violations", (double)viol);
                cJSON_AddStringToObject(rec, "status", viol ? "FAIL" : "PASS");
                as_out_add(out, rec);
                if (viol) rc = 1;
            }
            free(hs.idx);
            free(hs.count);
            free(hs.logw);
        }
        free(P);
        free(O);
        free(NV);
        free(og);
        free(inS);
        free(oS);
        free(tmp);
        layer_free(&r);
        if (rc > 1) break;
    }
    cJSON *summ = cJSON_CreateArray();
    for (int m = 0; m < M_N; m++) {
        if (!want[m]) continue;
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "method", method_names[m]);
        cJSON_AddNumberToObject(s, "checks", (double)ms[m].checks);
        cJSON_AddNumberToObject(s, "passed", (double)(ms[m].checks - ms[m].violations));
        cJSON_AddNumberToObject(s, "max_rel_error", ms[m].max_rel);
        cJSON_AddItemToArray(summ, s);
        if (cc.fmt == AS_FMT_TABLE)
            fprintf(stderr, "gpu replay %-6s %lld/%lld bound checks passed, max rel error %.3g\n",
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
    as_trace_free(tr);
    as_gpu_ctx_free(ctx);
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
    enum { O_QUICK = 1, O_BATCHES, O_NS, O_DS, O_SP, O_HQ, O_HKV, O_REPS, O_MAXGIB, O_NOSEL, O_VAR };
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
                                         {0, 0, 0, 0}};
    as_cli_common cc;
    as_cli_common_init(&cc);
    double bl[16] = {1, 8, 32, 64}, nl[16] = {8192, 32768, 131072, 262144, 524288, 1048576};
    double dl[4] = {128}, sl[16] = {1, 10, 20, 50, 100};
    int nb = 4, nn = 6, nd = 1, ns = 5;
    long hq = 32, hkv = 8, reps = 30, variant = 0;
    double max_gib = 36;
    int selection = 1;
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
        as_out_add(out, rec);
    }
    free(rows);
    static const char *const cols[] = {"method", "batch", "d", "n", "sparsity", "us", "bytes",
                                       "gbps", "pct_copy", NULL};
    static const char *const heads[] = {"method", "B", "d", "N", "sparsity", "us", "bytes",
                                        "GB/s", "% copy", NULL};
    static const char *const fmts[] = {"%s", "%d", "%d", "%d", "%.0f", "%.1f", "%.3g", "%.1f",
                                       "%.1f", NULL};
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
