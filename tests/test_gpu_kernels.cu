/* test_gpu_kernels: device tests of the gpu module against its float64 references.
 *
 * Fresh random inputs every run (seed printed; AS_TEST_SEED=N repeats one), many shapes (N not
 * a multiple of any tile, N = 1, empty sequences, GQA groups 1..12, d 64/128/256, padded
 * strides, a cache shared by the batch), outputs poisoned with NaN before each launch, every
 * CUDA call checked. Each kernel's error is compared with a threshold:
 *   - against the reference on the same stored (rounded) values: float32 arithmetic only, 1e-4;
 *   - against the reference on the unrounded float32 values: the storage type's rounding,
 *     f32 1e-4, f16 5e-3, bf16 4e-2 (relative L2 error of each output row).
 * Exit 0 all passed, 1 a check failed, 77 no usable GPU (skipped). AS_GPU_TEST_QUICK=1 runs
 * small shapes only (for compute-sanitizer). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "as_gpu.h"

static int g_checks = 0, g_failed = 0, g_quick = 0;
static char err[AS_ERR_LEN];
static double g_max_rel[8][3]; /* [kernel][dtype] max relative error vs the rounded-input ref */
static double g_max_true[3];   /* dense vs unrounded-input ref, per dtype */
static const char *g_kname[8] = {"dense", "sparse", "scores", "topk", "pages", "tks", "", ""};

#define OK(x)                                                                                 \
    do {                                                                                      \
        if ((x) != AS_OK) {                                                                   \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #x, err);           \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static void check(int cond, const char *what, ...)
{
    g_checks++;
    if (cond) return;
    g_failed++;
    va_list ap;
    va_start(ap, what);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, what, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- random numbers (host) ------------------------------------------------------------------- */
static uint64_t g_rng;
static uint64_t rnd64(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unif(void) { return (double)(rnd64() >> 11) * (1.0 / 9007199254740992.0); }
static int irand(int n) { return n <= 0 ? 0 : (int)(rnd64() % (uint64_t)n); }

/* ---- a problem on host and device ----------------------------------------------------------- */
typedef struct {
    int batch, hq, hkv, d, nmax;
    as_gpu_dtype dt;
    int shared; /* stride_b == 0 */
    int64_t sb, sh, sn, elems;
    float *kf, *vf;       /* unrounded values (f32) in the strided layout */
    void *kraw, *vraw;    /* stored values (dtype) */
    float *q;
    int32_t *lens;
    void *dk, *dv;
    float *dq;
    int32_t *dlens;
    as_gpu_attn ha, hf, da; /* host (stored), host (unrounded f32), device */
    /* paged (block size > 0): the device K/V are a pool of blocks, each sequence's blocks a
     * random permutation of it read through a block table, the unused blocks NaN; hp is the
     * same pool on the host (ha stays contiguous: the references) */
    int paged;
    void *pk, *pv;
    int32_t *tbl, *dtbl;
    as_gpu_attn hp;
} prob;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* q ~ U(-g_qmul, g_qmul): 1.5 gives scores of a few units; the sharp problems of main raise it
 * to 18, so that the base-2 scores have sum_i |q_i k_i| of ~70 (~220 at the heavy keys), like
 * a real trace's attention sinks: a q rounded to 16 bits, or split into only two bf16 terms
 * (2^-18), would put the weights off by more than TOL there */
static float g_qmul = 1.5f;

/* The device descriptor: a's layout over p's device buffers. */
static as_gpu_attn dev_attn(const prob *p, as_gpu_attn a)
{
    a.k = p->dk;
    a.v = p->dv;
    a.q = p->dq;
    a.lens = p->dlens;
    return a;
}

/* Copy the contiguous host cache of p into a paged pool (p->paged keys per block; layout
 * [blocks][hkv][bs][d] or [blocks][bs][hkv][d] at random), pools and table on host and device;
 * p->da then addresses the pool. */
static void prob_page(prob *p)
{
    const int bs = p->paged, nseq = p->shared ? 1 : p->batch;
    const int mb = (p->nmax + bs - 1) / bs + 1; /* one more than needed: the table's row stride */
    const int64_t nphys = (int64_t)nseq * mb + 3;
    const int hnd = irand(2);
    const int64_t sn = hnd ? p->d : (int64_t)p->hkv * p->d, sh = hnd ? (int64_t)bs * p->d : p->d;
    const int64_t sblk = (int64_t)p->hkv * bs * p->d;
    const size_t es = as_gpu_dtype_size(p->dt), pe = (size_t)(nphys * sblk);
    int32_t *perm = (int32_t *)xmalloc((size_t)nphys * 4);
    for (int64_t i = 0; i < nphys; i++) perm[i] = (int32_t)i;
    for (int64_t i = nphys - 1; i > 0; i--) {
        const int64_t j = irand((int)(i + 1));
        const int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    p->tbl = (int32_t *)xmalloc((size_t)p->batch * mb * 4);
    for (int b = 0; b < p->batch; b++)
        for (int j = 0; j < mb; j++) p->tbl[(int64_t)b * mb + j] = perm[(int64_t)(p->shared ? 0 : b) * mb + j];
    free(perm);
    float *nan = (float *)xmalloc(pe * 4);
    for (size_t i = 0; i < pe; i++) nan[i] = NAN;
    p->pk = xmalloc(pe * es);
    p->pv = xmalloc(pe * es);
    as_gpu_pack(p->dt, nan, p->pk, pe);
    as_gpu_pack(p->dt, nan, p->pv, pe);
    free(nan);
    for (int s = 0; s < nseq; s++)
        for (int h = 0; h < p->hkv; h++)
            for (int n = 0; n < p->nmax; n++) {
                const int64_t src = s * p->sb + h * p->sh + n * p->sn;
                const int64_t dst = (int64_t)p->tbl[(int64_t)s * mb + n / bs] * sblk + (n % bs) * sn + h * sh;
                memcpy((char *)p->pk + dst * es, (const char *)p->kraw + src * es, (size_t)p->d * es);
                memcpy((char *)p->pv + dst * es, (const char *)p->vraw + src * es, (size_t)p->d * es);
            }
    as_gpu_free(p->dk);
    as_gpu_free(p->dv);
    OK(as_gpu_malloc(&p->dk, pe * es, err));
    OK(as_gpu_malloc(&p->dv, pe * es, err));
    OK(as_gpu_malloc((void **)&p->dtbl, (size_t)p->batch * mb * 4, err));
    OK(as_gpu_upload(p->dk, p->pk, pe * es, err));
    OK(as_gpu_upload(p->dv, p->pv, pe * es, err));
    OK(as_gpu_upload(p->dtbl, p->tbl, (size_t)p->batch * mb * 4, err));
    as_gpu_attn a = p->ha;
    a.stride_b = 0;
    a.stride_n = sn;
    a.stride_h = sh;
    a.stride_block = sblk;
    a.block_size = bs;
    a.max_blocks = mb;
    p->hp = a;
    p->hp.k = p->pk;
    p->hp.v = p->pv;
    p->hp.blocks = p->tbl;
    p->da = dev_attn(p, a);
    p->da.blocks = p->dtbl;
}

static void prob_make(prob *p, int batch, int hq, int hkv, int d, int nmax, as_gpu_dtype dt,
                      int padded, int shared, int empty_ok, int paged)
{
    memset(p, 0, sizeof *p);
    p->batch = batch;
    p->hq = hq;
    p->hkv = hkv;
    p->d = d;
    p->nmax = nmax;
    p->dt = dt;
    p->shared = shared;
    const int align = dt == AS_GPU_F32 ? 4 : 8; /* 16-byte rows */
    p->sn = d + (padded ? align * (1 + irand(2)) : 0);
    p->sh = (int64_t)nmax * p->sn + (padded ? align * 3 : 0);
    p->sb = shared ? 0 : (int64_t)hkv * p->sh + (padded ? align : 0);
    /* the last sequence's base is (batch - 1) * sb, sb including its padding */
    p->elems = (shared ? 0 : (int64_t)(batch - 1) * p->sb) + (int64_t)hkv * p->sh + 64;
    p->kf = (float *)xmalloc(p->elems * sizeof(float));
    p->vf = (float *)xmalloc(p->elems * sizeof(float));
    for (int64_t i = 0; i < p->elems; i++) {
        p->kf[i] = (float)(2 * unif() - 1);
        p->vf[i] = (float)(2 * unif() - 1);
    }
    /* a few heavy keys per head so attention is peaked somewhere */
    for (int b = 0; b < (shared ? 1 : batch); b++)
        for (int h = 0; h < hkv; h++)
            for (int t = 0; t < 3 && nmax > 0; t++) {
                const int n = irand(nmax);
                for (int c = 0; c < d; c++) p->kf[b * p->sb + h * p->sh + (int64_t)n * p->sn + c] *= 3.0f;
            }
    const size_t es = as_gpu_dtype_size(dt);
    p->kraw = xmalloc(p->elems * es);
    p->vraw = xmalloc(p->elems * es);
    as_gpu_pack(dt, p->kf, p->kraw, p->elems);
    as_gpu_pack(dt, p->vf, p->vraw, p->elems);
    p->q = (float *)xmalloc((size_t)batch * hq * d * sizeof(float));
    for (int i = 0; i < batch * hq * d; i++) p->q[i] = (float)(2 * unif() - 1) * g_qmul;
    p->lens = (int32_t *)xmalloc((size_t)batch * sizeof(int32_t));
    for (int b = 0; b < batch; b++) p->lens[b] = nmax > 0 ? 1 + irand(nmax) : 0;
    if (batch > 0) p->lens[irand(batch)] = nmax;
    if (empty_ok && batch >= 3) p->lens[(irand(batch - 1) + 1) % batch] = 0;

    OK(as_gpu_malloc(&p->dk, p->elems * es, err));
    OK(as_gpu_malloc(&p->dv, p->elems * es, err));
    OK(as_gpu_malloc((void **)&p->dq, (size_t)batch * hq * d * 4, err));
    OK(as_gpu_malloc((void **)&p->dlens, (size_t)batch * 4, err));
    OK(as_gpu_upload(p->dk, p->kraw, p->elems * es, err));
    OK(as_gpu_upload(p->dv, p->vraw, p->elems * es, err));
    OK(as_gpu_upload(p->dq, p->q, (size_t)batch * hq * d * 4, err));
    OK(as_gpu_upload(p->dlens, p->lens, (size_t)batch * 4, err));

    as_gpu_attn a;
    memset(&a, 0, sizeof a);
    a.batch = batch;
    a.hq = hq;
    a.hkv = hkv;
    a.d = d;
    a.kv_dtype = dt;
    a.stride_b = p->sb;
    a.stride_h = p->sh;
    a.stride_n = p->sn;
    a.nmax = nmax;
    a.scale = (float)(1.0 / sqrt((double)d));
    p->ha = a;
    p->ha.k = p->kraw;
    p->ha.v = p->vraw;
    p->ha.q = p->q;
    p->ha.lens = p->lens;
    p->hf = p->ha;
    p->hf.kv_dtype = AS_GPU_F32;
    p->hf.k = p->kf;
    p->hf.v = p->vf;
    p->da = dev_attn(p, a);
    p->paged = paged;
    if (paged > 0) prob_page(p);
}

static void prob_free(prob *p)
{
    free(p->pk);
    free(p->pv);
    free(p->tbl);
    as_gpu_free(p->dtbl);
    free(p->kf);
    free(p->vf);
    free(p->kraw);
    free(p->vraw);
    free(p->q);
    free(p->lens);
    as_gpu_free(p->dk);
    as_gpu_free(p->dv);
    as_gpu_free(p->dq);
    as_gpu_free(p->dlens);
}

static void desc(const prob *p, char *buf, size_t n)
{
    char pg[32] = "";
    if (p->paged) snprintf(pg, sizeof pg, " paged %d%s", p->paged, p->hp.stride_n == p->d ? " HND" : " NHD");
    snprintf(buf, n, "B=%d hq=%d hkv=%d d=%d N=%d %s%s%s", p->batch, p->hq, p->hkv, p->d, p->nmax,
             as_gpu_dtype_name(p->dt), p->shared ? " shared" : "", pg);
}

/* Largest relative L2 error over output rows; rows whose reference is empty (lse = -inf) must
 * be exactly zero. Also checks every element was written (no NaN left from the poison). */
static double row_errors(const prob *p, const float *o, const float *lse, const double *ro,
                         const double *rlse, double *lse_err, int *bad_rows)
{
    const int rows = p->batch * p->hq, d = p->d;
    double worst = 0, lworst = 0;
    *bad_rows = 0;
    for (int r = 0; r < rows; r++) {
        double num = 0, den = 0;
        int nan = 0;
        for (int c = 0; c < d; c++) {
            const double x = o[(int64_t)r * d + c], y = ro[(int64_t)r * d + c];
            if (x != x) nan = 1;
            num += (x - y) * (x - y);
            den += y * y;
        }
        if (nan) {
            (*bad_rows)++;
            continue;
        }
        if (rlse[r] == -INFINITY) {
            if (num != 0 || lse[r] != -INFINITY) (*bad_rows)++;
            continue;
        }
        const double rel = sqrt(num) / (sqrt(den) > 1e-30 ? sqrt(den) : 1e-30);
        if (rel > worst) worst = rel;
        const double le = fabs((double)lse[r] - rlse[r]) / (1.0 + fabs(rlse[r]));
        if (!(le <= 1e300)) (*bad_rows)++;
        if (le > lworst) lworst = le;
    }
    *lse_err = lworst;
    return worst;
}

static double true_tol(as_gpu_dtype t)
{
    return t == AS_GPU_F32 ? 1e-4 : (t == AS_GPU_F16 ? 5e-3 : 4e-2);
}
static const double TOL = 1e-4;

static void note(int kernel, as_gpu_dtype dt, double e)
{
    if (e > g_max_rel[kernel][dt]) g_max_rel[kernel][dt] = e;
}

/* ---- 1. dense ---------------------------------------------------------------------------------- */
static void test_dense(as_gpu_ctx *c, prob *p)
{
    char ds[128];
    desc(p, ds, sizeof ds);
    const int rows = p->batch * p->hq;
    double *ro = (double *)xmalloc((size_t)rows * p->d * 8), *rl = (double *)xmalloc((size_t)rows * 8);
    double *fo = (double *)xmalloc((size_t)rows * p->d * 8), *fl = (double *)xmalloc((size_t)rows * 8);
    as_gpu_ref_decode_dense(&p->ha, ro, rl);
    as_gpu_ref_decode_dense(&p->hf, fo, fl);
    if (p->paged) { /* the reference through the block table: the same numbers, bit for bit */
        double *po = (double *)xmalloc((size_t)rows * p->d * 8), *pl = (double *)xmalloc((size_t)rows * 8);
        as_gpu_ref_decode_dense(&p->hp, po, pl);
        check(!memcmp(po, ro, (size_t)rows * p->d * 8) && !memcmp(pl, rl, (size_t)rows * 8),
              "paged reference %s differs from the contiguous one", ds);
        free(po);
        free(pl);
    }
    float *o = (float *)xmalloc((size_t)rows * p->d * 4), *lse = (float *)xmalloc((size_t)rows * 4);
    float *d_o, *d_l;
    OK(as_gpu_malloc((void **)&d_o, (size_t)rows * p->d * 4, err));
    OK(as_gpu_malloc((void **)&d_l, (size_t)rows * 4, err));
    for (int v = 0; v < AS_GPU_VARIANTS; v++) {
        OK(as_gpu_memset(d_o, 0xFF, (size_t)rows * p->d * 4, err));
        OK(as_gpu_memset(d_l, 0xFF, (size_t)rows * 4, err));
        OK(as_gpu_decode_dense(c, &p->da, d_o, d_l, v, err));
        OK(as_gpu_sync(c, err));
        OK(as_gpu_download(o, d_o, (size_t)rows * p->d * 4, err));
        OK(as_gpu_download(lse, d_l, (size_t)rows * 4, err));
        double le, le2;
        int bad, bad2;
        const double e = row_errors(p, o, lse, ro, rl, &le, &bad);
        const double et = row_errors(p, o, lse, fo, fl, &le2, &bad2);
        note(0, p->dt, e);
        const int plain = g_qmul <= 1.5f; /* sharp q: the 16-bit rounding of K alone moves the
                                              scores by more than true_tol, so only the stored
                                              values are the reference there */
        if (plain && et > g_max_true[p->dt]) g_max_true[p->dt] = et;
        check(bad == 0, "dense v%d %s: %d rows unwritten/NaN or empty rows not zero", v, ds, bad);
        check(e <= TOL, "dense v%d %s: rel error %.3g > %.1g", v, ds, e, TOL);
        check(le <= TOL, "dense v%d %s: lse error %.3g > %.1g", v, ds, le, TOL);
        if (plain)
            check(et <= true_tol(p->dt), "dense v%d %s: error vs unrounded %.3g > %.1g", v, ds,
                  et, true_tol(p->dt));
    }
    as_gpu_free(d_o);
    as_gpu_free(d_l);
    free(ro); free(rl); free(fo); free(fl); free(o); free(lse);
}

/* ---- 2. sparse over given indices ------------------------------------------------------------ */
/* A host copy of a device selection (idx, count and, when present, logw); free with
 * host_sel_free. */
static as_gpu_sel sel_to_host(const as_gpu_sel *dsel, int64_t nr)
{
    as_gpu_sel hs = *dsel;
    const size_t ne = (size_t)nr * dsel->kcap;
    hs.idx = (int32_t *)xmalloc(ne * 4);
    hs.count = (int32_t *)xmalloc((size_t)nr * 4);
    hs.logw = dsel->logw ? (float *)xmalloc(ne * 4) : NULL;
    OK(as_gpu_download(hs.idx, dsel->idx, ne * 4, err));
    OK(as_gpu_download(hs.count, dsel->count, (size_t)nr * 4, err));
    if (dsel->logw) OK(as_gpu_download(hs.logw, dsel->logw, ne * 4, err));
    return hs;
}

static void host_sel_free(as_gpu_sel *hs)
{
    free(hs->idx);
    free(hs->count);
    free(hs->logw);
}

/* The sparse decode (variant 0) over a device selection against the float64 reference over its
 * host copy hs; output poisoned first; the error is noted under kernel (< 0: not noted). */
static void check_attention_over(as_gpu_ctx *c, prob *p, const as_gpu_sel *dsel,
                                 const as_gpu_sel *hs, int kernel, const char *what)
{
    char ds[160];
    desc(p, ds, sizeof ds);
    const int rows = p->batch * p->hq;
    double *ro = (double *)xmalloc((size_t)rows * p->d * 8), *rl = (double *)xmalloc((size_t)rows * 8);
    as_gpu_ref_decode_sparse(&p->ha, hs, ro, rl);
    float *o = (float *)xmalloc((size_t)rows * p->d * 4), *lse = (float *)xmalloc((size_t)rows * 4);
    float *d_o, *d_l;
    OK(as_gpu_malloc((void **)&d_o, (size_t)rows * p->d * 4, err));
    OK(as_gpu_malloc((void **)&d_l, (size_t)rows * 4, err));
    OK(as_gpu_memset(d_o, 0xFF, (size_t)rows * p->d * 4, err));
    OK(as_gpu_decode_sparse(c, &p->da, dsel, d_o, d_l, 0, err));
    OK(as_gpu_sync(c, err));
    OK(as_gpu_download(o, d_o, (size_t)rows * p->d * 4, err));
    OK(as_gpu_download(lse, d_l, (size_t)rows * 4, err));
    double le;
    int bad;
    const double e = row_errors(p, o, lse, ro, rl, &le, &bad);
    if (kernel >= 0) note(kernel, p->dt, e);
    check(bad == 0 && e <= TOL && le <= TOL, "%s attention %s mode %d: err %.3g lse %.3g bad %d",
          what, ds, (int)dsel->mode, e, le, bad);
    as_gpu_free(d_o);
    as_gpu_free(d_l);
    free(ro); free(rl); free(o); free(lse);
}

static void test_sparse(as_gpu_ctx *c, prob *p, as_gpu_sel_mode mode, int with_logw)
{
    char ds[160];
    desc(p, ds, sizeof ds);
    const int64_t nr = as_gpu_sel_rows(&p->ha, mode);
    const int kcap = 1 + irand(p->nmax > 0 ? 2 * p->nmax : 4);
    as_gpu_sel hs;
    memset(&hs, 0, sizeof hs);
    hs.mode = mode;
    hs.kcap = kcap;
    hs.idx = (int32_t *)xmalloc((size_t)nr * kcap * 4);
    hs.count = (int32_t *)xmalloc((size_t)nr * 4);
    hs.logw = with_logw ? (float *)xmalloc((size_t)nr * kcap * 4) : NULL;
    for (int64_t r = 0; r < nr; r++) {
        const int len = p->lens[r / (mode == AS_GPU_SEL_Q ? p->hq : p->hkv)];
        const int tiny = irand(4) == 0;
        hs.count[r] = tiny ? irand(3) : irand(kcap + 1);
        if (hs.count[r] > kcap) hs.count[r] = kcap;
        for (int j = 0; j < kcap; j++) {
            int x = irand(len > 0 ? len : 1);
            const int u = irand(20);
            if (u == 0) x = -1;                       /* skipped */
            if (u == 1) x = len + irand(3);           /* past the end: skipped */
            if (u == 2 && j > 0) x = hs.idx[r * kcap + j - 1]; /* duplicate */
            hs.idx[r * kcap + j] = x;
            if (hs.logw) hs.logw[r * kcap + j] = irand(10) == 0 ? -INFINITY : (float)(2 * unif() - 1);
        }
    }
    as_gpu_sel dsel;
    OK(as_gpu_sel_alloc(&dsel, &p->da, mode, kcap, with_logw, err));
    OK(as_gpu_upload(dsel.idx, hs.idx, (size_t)nr * kcap * 4, err));
    OK(as_gpu_upload(dsel.count, hs.count, (size_t)nr * 4, err));
    if (with_logw) OK(as_gpu_upload(dsel.logw, hs.logw, (size_t)nr * kcap * 4, err));
    const int rows = p->batch * p->hq;
    double *ro = (double *)xmalloc((size_t)rows * p->d * 8), *rl = (double *)xmalloc((size_t)rows * 8);
    as_gpu_ref_decode_sparse(&p->ha, &hs, ro, rl);
    float *o = (float *)xmalloc((size_t)rows * p->d * 4), *lse = (float *)xmalloc((size_t)rows * 4);
    float *d_o, *d_l;
    OK(as_gpu_malloc((void **)&d_o, (size_t)rows * p->d * 4, err));
    OK(as_gpu_malloc((void **)&d_l, (size_t)rows * 4, err));
    for (int v = 0; v < AS_GPU_VARIANTS; v++) {
        OK(as_gpu_memset(d_o, 0xFF, (size_t)rows * p->d * 4, err));
        OK(as_gpu_memset(d_l, 0xFF, (size_t)rows * 4, err));
        OK(as_gpu_decode_sparse(c, &p->da, &dsel, d_o, d_l, v, err));
        OK(as_gpu_sync(c, err));
        OK(as_gpu_download(o, d_o, (size_t)rows * p->d * 4, err));
        OK(as_gpu_download(lse, d_l, (size_t)rows * 4, err));
        double le;
        int bad;
        const double e = row_errors(p, o, lse, ro, rl, &le, &bad);
        note(1, p->dt, e);
        check(bad == 0, "sparse v%d %s mode %d logw %d: %d bad rows", v, ds, mode, with_logw, bad);
        check(e <= TOL, "sparse v%d %s mode %d logw %d: rel error %.3g", v, ds, mode, with_logw, e);
        check(le <= TOL, "sparse v%d %s mode %d logw %d: lse error %.3g", v, ds, mode, with_logw, le);
    }
    as_gpu_sel_free(&dsel);
    as_gpu_free(d_o);
    as_gpu_free(d_l);
    free(hs.idx); free(hs.count); free(hs.logw);
    free(ro); free(rl); free(o); free(lse);
}

/* ---- 3. scores, exact top-k ------------------------------------------------------------------ */
static void test_scores(as_gpu_ctx *c, prob *p)
{
    char ds[128];
    desc(p, ds, sizeof ds);
    const int64_t lds = p->nmax + 3;
    const size_t n = (size_t)p->batch * p->hq * lds;
    double *rs = (double *)xmalloc(n * 8);
    float *s = (float *)xmalloc(n * 4), *d_s;
    as_gpu_ref_scores(&p->ha, rs, lds);
    OK(as_gpu_malloc((void **)&d_s, n * 4, err));
    OK(as_gpu_memset(d_s, 0xFF, n * 4, err));
    OK(as_gpu_scores(c, &p->da, d_s, lds, err));
    OK(as_gpu_sync(c, err));
    OK(as_gpu_download(s, d_s, n * 4, err));
    double worst = 0;
    int bad = 0;
    for (int b = 0; b < p->batch; b++)
        for (int h = 0; h < p->hq; h++) {
            double mx = 1e-30, e = 0;
            for (int j = 0; j < p->lens[b]; j++) {
                const int64_t i = ((int64_t)b * p->hq + h) * lds + j;
                if (s[i] != s[i]) bad++;
                mx = fmax(mx, fabs(rs[i]));
                e = fmax(e, fabs(s[i] - rs[i]));
            }
            if (e / mx > worst) worst = e / mx;
        }
    note(2, p->dt, worst);
    check(bad == 0, "scores %s: %d entries unwritten", ds, bad);
    check(worst <= TOL, "scores %s: error %.3g (relative to max |s|)", ds, worst);
    as_gpu_free(d_s);
    free(rs);
    free(s);
}

/* ties: 0 random values (with a few -inf and 1e30), 1 four distinct values, 2 one value (every
 * element tied), 3 values 1 + i 2^-23 for i < 3000 (all in one top bucket, many ties) */
static void test_topk_rows(as_gpu_ctx *c, int rows, int n, int ldx, int k, int ties, int variant)
{
    float *x = (float *)xmalloc((size_t)rows * ldx * 4);
    int32_t *lens = (int32_t *)xmalloc((size_t)rows * 4);
    for (int r = 0; r < rows; r++) {
        lens[r] = r == 0 ? n : irand(n + 1);
        for (int j = 0; j < ldx; j++) {
            float v = ties == 1 ? (float)irand(4)
                      : ties == 2 ? 0.5f
                      : ties == 3 ? 1.f + (float)irand(3000) * 0x1p-23f
                                  : (float)((2 * unif() - 1) * 100);
            if (!ties && irand(1000) == 0) v = -INFINITY;
            if (!ties && irand(1000) == 0) v = 1e30f;
            x[(int64_t)r * ldx + j] = v;
        }
    }
    const int ki = k > 0 ? k : 1;
    float *dx;
    int32_t *dl, *di, *dc;
    OK(as_gpu_malloc((void **)&dx, (size_t)rows * ldx * 4, err));
    OK(as_gpu_malloc((void **)&dl, (size_t)rows * 4, err));
    OK(as_gpu_malloc((void **)&di, (size_t)rows * ki * 4, err));
    OK(as_gpu_malloc((void **)&dc, (size_t)rows * 4, err));
    OK(as_gpu_upload(dx, x, (size_t)rows * ldx * 4, err));
    OK(as_gpu_upload(dl, lens, (size_t)rows * 4, err));
    OK(as_gpu_memset(di, 0xFF, (size_t)rows * ki * 4, err));
    OK(as_gpu_memset(dc, 0xFF, (size_t)rows * 4, err));
    as_gpu_ctx *cc = c;
    OK(as_gpu_topk_rows(cc, dx, ldx, rows, dl, 1, k, di, ki, dc, variant, err));
    OK(as_gpu_sync(c, err));
    int32_t *idx = (int32_t *)xmalloc((size_t)rows * ki * 4), *cnt = (int32_t *)xmalloc((size_t)rows * 4);
    OK(as_gpu_download(idx, di, (size_t)rows * ki * 4, err));
    OK(as_gpu_download(cnt, dc, (size_t)rows * 4, err));
    for (int r = 0; r < rows; r++) {
        char why[AS_ERR_LEN];
        const int ok = variant == 1
                           ? as_gpu_ref_check_topk(x + (int64_t)r * ldx, lens[r], k,
                                                   idx + (int64_t)r * ki, cnt[r], why)
                           : as_gpu_ref_check_topk_pos(x + (int64_t)r * ldx, lens[r], k,
                                                       idx + (int64_t)r * ki, cnt[r], why);
        check(ok, "topk v%d rows=%d n=%d ldx=%d k=%d ties=%d row %d (len %d): %s", variant, rows,
              n, ldx, k, ties, r, lens[r], why);
        if (!ok) break;
    }
    as_gpu_free(dx); as_gpu_free(dl); as_gpu_free(di); as_gpu_free(dc);
    free(x); free(lens); free(idx); free(cnt);
}

/* The k largest of the reference scores (Q mode) or of max_g (s_g - lse_g) (KV mode), up to a
 * tolerance: every selected value >= every unselected value - tol. */
static void ref_rank_values(const prob *p, as_gpu_sel_mode mode, const double *rs, int64_t lds,
                            double *vals /* [rows][lds] */)
{
    const int group = p->hq / p->hkv;
    if (mode == AS_GPU_SEL_Q) {
        memcpy(vals, rs, (size_t)p->batch * p->hq * lds * 8);
        return;
    }
    for (int b = 0; b < p->batch; b++)
        for (int kvh = 0; kvh < p->hkv; kvh++) {
            double *out = vals + ((int64_t)b * p->hkv + kvh) * lds;
            for (int j = 0; j < p->lens[b]; j++) out[j] = -INFINITY;
            for (int g = 0; g < group; g++) {
                const double *s = rs + ((int64_t)b * p->hq + kvh * group + g) * lds;
                double mx = -INFINITY, z = 0;
                for (int j = 0; j < p->lens[b]; j++) mx = fmax(mx, s[j]);
                for (int j = 0; j < p->lens[b]; j++) z += exp(s[j] - mx);
                const double lse = mx + log(z);
                for (int j = 0; j < p->lens[b]; j++) out[j] = fmax(out[j], s[j] - lse);
            }
        }
}

static int check_selected_top(const double *v, int len, const int32_t *idx, int cnt, int k,
                              double tol, char *why)
{
    const int want = k < len ? k : len;
    if (cnt != want) {
        snprintf(why, AS_ERR_LEN, "count %d != %d", cnt, want);
        return 0;
    }
    unsigned char *in = (unsigned char *)calloc((size_t)(len > 0 ? len : 1), 1);
    double mins = INFINITY, maxu = -INFINITY;
    int ok = 1;
    for (int i = 0; i < cnt && ok; i++) {
        const int j = idx[i];
        if (j < 0 || j >= len || in[j]) {
            snprintf(why, AS_ERR_LEN, "entry %d: position %d invalid or repeated", i, j);
            ok = 0;
            break;
        }
        in[j] = 1;
        mins = fmin(mins, v[j]);
    }
    for (int j = 0; ok && j < len; j++)
        if (!in[j]) maxu = fmax(maxu, v[j]);
    if (ok && cnt > 0 && maxu > mins + tol) {
        snprintf(why, AS_ERR_LEN, "unselected %.9g > selected %.9g", maxu, mins);
        ok = 0;
    }
    free(in);
    return ok;
}

static void test_select_topk(as_gpu_ctx *c, prob *p, as_gpu_sel_mode mode, int k)
{
    char ds[128];
    desc(p, ds, sizeof ds);
    const int64_t lds = p->nmax > 0 ? p->nmax : 1;
    double *rs = (double *)xmalloc((size_t)p->batch * p->hq * lds * 8);
    double *vals = (double *)xmalloc((size_t)p->batch * p->hq * lds * 8);
    as_gpu_ref_scores(&p->ha, rs, lds);
    ref_rank_values(p, mode, rs, lds, vals);
    const int64_t nr = as_gpu_sel_rows(&p->ha, mode);
    const int kcap = k > 0 ? k : 1;
    as_gpu_sel dsel;
    OK(as_gpu_sel_alloc(&dsel, &p->da, mode, kcap, 0, err));
    OK(as_gpu_memset(dsel.idx, 0xFF, (size_t)nr * kcap * 4, err));
    OK(as_gpu_select_topk(c, &p->da, k, &dsel, err));
    OK(as_gpu_sync(c, err));
    as_gpu_sel hs = sel_to_host(&dsel, nr);
    const int rpl = mode == AS_GPU_SEL_Q ? p->hq : p->hkv;
    int fails = 0;
    for (int64_t r = 0; r < nr && !fails; r++) {
        char why[AS_ERR_LEN];
        double smax = 1e-30;
        const int len = p->lens[r / rpl];
        for (int j = 0; j < len; j++) smax = fmax(smax, fabs(vals[r * lds + j]));
        if (!check_selected_top(vals + r * lds, len, hs.idx + r * kcap, hs.count[r], k,
                                1e-4 * (1 + smax), why)) {
            fails++;
            check(0, "select_topk %s mode %d k=%d row %lld: %s", ds, mode, k, (long long)r, why);
        }
    }
    g_checks++;
    char what[32];
    snprintf(what, sizeof what, "topk k=%d", k);
    check_attention_over(c, p, &dsel, &hs, 3, what);
    as_gpu_sel_free(&dsel);
    host_sel_free(&hs);
    free(rs); free(vals);
}

/* ---- 6. pages plus sampling ------------------------------------------------------------------
 * The heavy part must be exactly as_gpu_select_pages's set (padded with -1 to keep * page entries),
 * every sample a key outside it with log-weight log(n_rest / m); the estimator is checked against
 * the float64 sparse decode of the same weighted list; with many draws, the draws must fall
 * evenly over the rest (8 bins by rank among the keys outside H, each within 6 sigma). */
static void test_page_sample(as_gpu_ctx *c, prob *p, int page, as_gpu_sel_mode mode, int keep, int m)
{
    char ds[128];
    desc(p, ds, sizeof ds);
    as_gpu_pages pg;
    OK(as_gpu_pages_alloc(&pg, &p->da, page, err));
    OK(as_gpu_pages_build(c, &p->da, &pg, err));
    const int kp = keep < pg.npages ? keep : pg.npages;
    const int kdet = kp * page, kcap = kdet + m > 0 ? kdet + m : 1;
    const int64_t nr = as_gpu_sel_rows(&p->ha, mode);
    as_gpu_sel dsel, dref;
    OK(as_gpu_sel_alloc(&dsel, &p->da, mode, kcap, 1, err));
    OK(as_gpu_sel_alloc(&dref, &p->da, mode, kdet > 0 ? kdet : 1, 0, err));
    OK(as_gpu_memset(dsel.idx, 0xFF, (size_t)nr * kcap * 4, err));
    OK(as_gpu_memset(dsel.logw, 0xFF, (size_t)nr * kcap * 4, err));
    OK(as_gpu_memset(dsel.count, 0xFF, (size_t)nr * 4, err));
    OK(as_gpu_select_pages_sample(c, &p->da, &pg, keep, m, rnd64(), &dsel, err));
    OK(as_gpu_select_pages(c, &p->da, &pg, keep, &dref, err));
    OK(as_gpu_sync(c, err));
    as_gpu_sel hs = sel_to_host(&dsel, nr);
    const int rk = kdet > 0 ? kdet : 1;
    int32_t *ridx = (int32_t *)xmalloc((size_t)nr * rk * 4), *rcnt = (int32_t *)xmalloc((size_t)nr * 4);
    OK(as_gpu_download(ridx, dref.idx, (size_t)nr * rk * 4, err));
    OK(as_gpu_download(rcnt, dref.count, (size_t)nr * 4, err));
    const int rpl = mode == AS_GPU_SEL_Q ? p->hq : p->hkv;
    unsigned char *inH = (unsigned char *)xmalloc((size_t)p->nmax + 1);
    int fails = 0;
    for (int64_t r = 0; r < nr && !fails; r++) {
        const int len = p->lens[r / rpl];
        memset(inH, 0, (size_t)p->nmax + 1);
        int nh = 0;
        for (int i = 0; i < rcnt[r]; i++) {
            const int j = ridx[r * rk + i];
            if (j >= 0 && j < len && !inH[j]) inH[j] = 1, nh++;
        }
        const int nrest = len - nh;
        const int want = kdet + (nrest > 0 ? m : 0);
        char why[AS_ERR_LEN] = "";
        int ok = hs.count[r] == want;
        if (!ok) snprintf(why, sizeof why, "count %d != %d", hs.count[r], want);
        int seen = 0;
        for (int i = 0; ok && i < kdet; i++) {
            const int j = hs.idx[r * kcap + i];
            ok = hs.logw[r * kcap + i] == 0.f && (j == -1 || (j >= 0 && j < len && inH[j] == 1));
            if (ok && j >= 0) inH[j] = 2, seen++;
            if (!ok) snprintf(why, sizeof why, "heavy entry %d: position %d not in the page set", i, j);
        }
        if (ok && seen != nh) ok = 0, snprintf(why, sizeof why, "heavy part has %d of %d keys", seen, nh);
        for (int i = 0; ok && i < want - kdet; i++) {
            const int j = hs.idx[r * kcap + kdet + i];
            const float w = hs.logw[r * kcap + kdet + i];
            ok = j >= 0 && j < len && !inH[j] && fabs(w - log((double)nrest / m)) < 1e-5;
            if (!ok) snprintf(why, sizeof why, "sample %d: position %d weight %g (n_rest %d)", i, j, w, nrest);
        }
        if (!ok) {
            fails++;
            check(0, "page-sample %s mode %d page %d keep %d m %d row %lld: %s", ds, mode, page,
                  keep, m, (long long)r, why);
        }
        /* uniformity over the rest, on row 0 when the draws are many */
        if (ok && r == 0 && m >= 80000 && nrest >= 8) {
            int32_t *rank = (int32_t *)xmalloc((size_t)len * 4);
            int rr = 0;
            for (int j = 0; j < len; j++) rank[j] = inH[j] ? -1 : rr++;
            double bin[8] = {0};
            for (int i = 0; i < m; i++) {
                const int j = hs.idx[kdet + i];
                bin[(int64_t)rank[j] * 8 / nrest] += 1;
            }
            for (int b = 0; b < 8; b++) {
                const int64_t lo = ((int64_t)b * nrest + 7) / 8, hi = ((int64_t)(b + 1) * nrest + 7) / 8;
                const double pb = (double)(hi - lo) / nrest, mu = m * pb, sd = sqrt(m * pb * (1 - pb));
                check(fabs(bin[b] - mu) <= 6 * sd + 1, "page-sample %s: rank bin %d has %.0f draws, expected %.0f +- %.0f",
                      ds, b, bin[b], mu, sd);
            }
            free(rank);
        }
    }
    g_checks++;
    check_attention_over(c, p, &dsel, &hs, -1, "page-sample");
    as_gpu_sel_free(&dsel);
    as_gpu_sel_free(&dref);
    as_gpu_pages_free(&pg);
    host_sel_free(&hs);
    free(ridx); free(rcnt); free(inH);
}

/* ---- 4. pages ---------------------------------------------------------------------------------- */
static void test_pages(as_gpu_ctx *c, prob *p, int page, as_gpu_sel_mode mode, int keep)
{
    char ds[128];
    desc(p, ds, sizeof ds);
    as_gpu_pages pg;
    OK(as_gpu_pages_alloc(&pg, &p->da, page, err));
    const int np = pg.npages;
    const size_t me = (size_t)p->batch * p->hkv * np * p->d;
    OK(as_gpu_memset(pg.kmin, 0xFF, me * as_gpu_dtype_size(p->dt), err));
    OK(as_gpu_memset(pg.kmax, 0xFF, me * as_gpu_dtype_size(p->dt), err));
    OK(as_gpu_pages_build(c, &p->da, &pg, err));
    OK(as_gpu_sync(c, err));
    double *rmin = (double *)xmalloc(me * 8), *rmax = (double *)xmalloc(me * 8);
    double *rub = (double *)xmalloc((size_t)p->batch * p->hq * np * 8);
    as_gpu_ref_pages(&p->ha, page, rmin, rmax, rub);
    void *raw = xmalloc(me * as_gpu_dtype_size(p->dt));
    float *f = (float *)xmalloc(me * 4);
    int mism = 0;
    for (int w = 0; w < 2; w++) {
        OK(as_gpu_download(raw, w ? pg.kmax : pg.kmin, me * as_gpu_dtype_size(p->dt), err));
        as_gpu_unpack(p->dt, raw, f, me);
        for (int b = 0; b < p->batch; b++)
            for (int h = 0; h < p->hkv; h++)
                for (int q = 0; q < (p->lens[b] + page - 1) / page; q++)
                    for (int cc = 0; cc < p->d; cc++) {
                        const size_t i = (((size_t)b * p->hkv + h) * np + q) * p->d + cc;
                        if ((double)f[i] != (w ? rmax[i] : rmin[i])) mism++;
                    }
    }
    check(mism == 0, "pages %s page %d: %d min/max entries differ from the reference", ds, page, mism);
    /* bounds */
    const int64_t ldu = np + 1;
    float *ub = (float *)xmalloc((size_t)p->batch * p->hq * ldu * 4), *d_ub;
    OK(as_gpu_malloc((void **)&d_ub, (size_t)p->batch * p->hq * ldu * 4, err));
    OK(as_gpu_page_bounds(c, &p->da, &pg, d_ub, ldu, err));
    OK(as_gpu_sync(c, err));
    OK(as_gpu_download(ub, d_ub, (size_t)p->batch * p->hq * ldu * 4, err));
    const int64_t lds = p->nmax > 0 ? p->nmax : 1;
    double *rs = (double *)xmalloc((size_t)p->batch * p->hq * lds * 8);
    as_gpu_ref_scores(&p->ha, rs, lds);
    double worst = 0;
    int viol = 0;
    for (int b = 0; b < p->batch; b++)
        for (int h = 0; h < p->hq; h++)
            for (int q = 0; q < (p->lens[b] + page - 1) / page; q++) {
                const double g = ub[((int64_t)b * p->hq + h) * ldu + q];
                const double r = rub[((int64_t)b * p->hq + h) * np + q];
                worst = fmax(worst, fabs(g - r) / (1 + fabs(r)));
                for (int j = q * page; j < (q + 1) * page && j < p->lens[b]; j++)
                    if (rs[((int64_t)b * p->hq + h) * lds + j] > r + 1e-9 * (1 + fabs(r))) viol++;
            }
    note(4, p->dt, worst);
    check(worst <= TOL, "page bounds %s: error %.3g", ds, worst);
    check(viol == 0, "page bounds %s: %d scores above their page's bound", ds, viol);
    /* selection */
    const int64_t nr = as_gpu_sel_rows(&p->ha, mode);
    const int kcap = (keep > 0 ? keep : 1) * page;
    as_gpu_sel dsel;
    OK(as_gpu_sel_alloc(&dsel, &p->da, mode, kcap, 0, err));
    OK(as_gpu_memset(dsel.idx, 0xFF, (size_t)nr * kcap * 4, err));
    OK(as_gpu_select_pages(c, &p->da, &pg, keep, &dsel, err));
    OK(as_gpu_sync(c, err));
    int32_t *idx = (int32_t *)xmalloc((size_t)nr * kcap * 4), *cnt = (int32_t *)xmalloc((size_t)nr * 4);
    OK(as_gpu_download(idx, dsel.idx, (size_t)nr * kcap * 4, err));
    OK(as_gpu_download(cnt, dsel.count, (size_t)nr * 4, err));
    const int group = p->hq / p->hkv;
    const int rpl = mode == AS_GPU_SEL_Q ? p->hq : p->hkv;
    double *v = (double *)xmalloc((size_t)(np + 1) * 8);
    int32_t *pl = (int32_t *)xmalloc((size_t)(np + 1) * 4);
    int fails = 0;
    for (int64_t r = 0; r < nr && !fails; r++) {
        const int b = (int)(r / rpl), len = p->lens[b];
        const int npb = (len + page - 1) / page;
        for (int q = 0; q < npb; q++) {
            if (mode == AS_GPU_SEL_Q) {
                v[q] = rub[r * np + q];
            } else {
                const int kvh = (int)(r % p->hkv);
                v[q] = -INFINITY;
                for (int g = 0; g < group; g++)
                    v[q] = fmax(v[q], rub[((int64_t)b * p->hq + kvh * group + g) * np + q]);
            }
        }
        const int kp = keep < npb ? keep : npb;
        char why[AS_ERR_LEN] = "";
        int ok = cnt[r] == kp * page;
        if (!ok) snprintf(why, sizeof why, "count %d != %d", cnt[r], kp * page);
        for (int i = 0; ok && i < kp; i++) {
            const int t0 = idx[r * kcap + i * page];
            ok = t0 >= 0 && t0 % page == 0;
            for (int t = 0; ok && t < page; t++) {
                const int want = t0 + t < len ? t0 + t : -1;
                ok = idx[r * kcap + i * page + t] == want;
            }
            pl[i] = t0 / page;
            if (!ok) snprintf(why, sizeof why, "page entry %d malformed", i);
        }
        double smax = 1e-30;
        for (int q = 0; q < npb; q++) smax = fmax(smax, fabs(v[q]));
        if (ok) ok = check_selected_top(v, npb, pl, kp, keep, 1e-4 * (1 + smax), why);
        if (!ok) {
            fails++;
            check(0, "select_pages %s mode %d keep %d row %lld: %s", ds, mode, keep, (long long)r, why);
        }
    }
    g_checks++;
    as_gpu_sel_free(&dsel);
    as_gpu_pages_free(&pg);
    as_gpu_free(d_ub);
    free(rmin); free(rmax); free(rub); free(raw); free(f); free(ub); free(rs); free(idx); free(cnt);
    free(v); free(pl);
}

/* ---- 5. top-k plus sampling -------------------------------------------------------------------- */
static void test_tks(as_gpu_ctx *c, prob *p, as_gpu_sel_mode mode, int kt, int m)
{
    char ds[128];
    desc(p, ds, sizeof ds);
    const int64_t nr = as_gpu_sel_rows(&p->ha, mode);
    const int kcap = kt + m > 0 ? kt + m : 1;
    as_gpu_sel dsel;
    OK(as_gpu_sel_alloc(&dsel, &p->da, mode, kcap, 1, err));
    OK(as_gpu_memset(dsel.idx, 0xFF, (size_t)nr * kcap * 4, err));
    OK(as_gpu_memset(dsel.logw, 0xFF, (size_t)nr * kcap * 4, err));
    const uint64_t seed = rnd64();
    OK(as_gpu_select_topk_sample(c, &p->da, kt, m, seed, &dsel, err));
    OK(as_gpu_sync(c, err));
    as_gpu_sel hs = sel_to_host(&dsel, nr);
    const int rpl = mode == AS_GPU_SEL_Q ? p->hq : p->hkv;
    const int64_t lds = p->nmax > 0 ? p->nmax : 1;
    double *rs = (double *)xmalloc((size_t)p->batch * p->hq * lds * 8);
    double *vals = (double *)xmalloc((size_t)p->batch * p->hq * lds * 8);
    as_gpu_ref_scores(&p->ha, rs, lds);
    ref_rank_values(p, mode, rs, lds, vals);
    int fails = 0;
    for (int64_t r = 0; r < nr && !fails; r++) {
        const int len = p->lens[r / rpl];
        const int ktr = kt < len ? kt : len;
        const int mr = len > ktr ? m : 0;
        char why[AS_ERR_LEN] = "";
        int ok = hs.count[r] == ktr + mr;
        if (!ok) snprintf(why, sizeof why, "count %d != %d + %d", hs.count[r], ktr, mr);
        double smax = 1e-30;
        for (int j = 0; j < len; j++) smax = fmax(smax, fabs(vals[r * lds + j]));
        if (ok) ok = check_selected_top(vals + r * lds, len, hs.idx + r * kcap, ktr, kt, 1e-4 * (1 + smax), why);
        for (int i = 0; ok && i < ktr; i++) ok = hs.logw[r * kcap + i] == 0.f;
        for (int i = 0; ok && i < mr; i++) {
            const int j = hs.idx[r * kcap + ktr + i];
            int in = 0;
            for (int t = 0; t < ktr; t++) in |= hs.idx[r * kcap + t] == j;
            const float w = hs.logw[r * kcap + ktr + i];
            ok = j >= 0 && j < len &&
                 (in ? w == -INFINITY : fabs(w - log((double)len / m)) < 1e-5);
            if (!ok) snprintf(why, sizeof why, "sample %d: position %d weight %g", i, j, w);
        }
        if (!ok) {
            fails++;
            check(0, "tks %s mode %d k=%d m=%d row %lld: %s", ds, mode, kt, m, (long long)r, why);
        }
    }
    g_checks++;
    /* the estimator = attention over the weighted list */
    check_attention_over(c, p, &dsel, &hs, 5, "tks");
    /* same seed, same draws */
    int32_t *idx2 = (int32_t *)xmalloc((size_t)nr * kcap * 4);
    OK(as_gpu_select_topk_sample(c, &p->da, kt, m, seed, &dsel, err));
    OK(as_gpu_sync(c, err));
    OK(as_gpu_download(idx2, dsel.idx, (size_t)nr * kcap * 4, err));
    int same = 1;
    for (int64_t r = 0; r < nr; r++) {
        const int len = p->lens[r / rpl];
        const int ktr = kt < len ? kt : len;
        for (int i = ktr; i < hs.count[r]; i++) same &= idx2[r * kcap + i] == hs.idx[r * kcap + i];
    }
    check(same, "tks %s: the same seed drew different samples", ds);
    as_gpu_sel_free(&dsel);
    host_sel_free(&hs);
    free(rs); free(vals); free(idx2);
}

/* The estimator converges: with many samples its output approaches the dense output. */
static void test_tks_converges(as_gpu_ctx *c)
{
    prob p;
    prob_make(&p, 2, 4, 2, 64, 300, AS_GPU_F32, 0, 0, 0, 0);
    const int rows = p.batch * p.hq;
    double *ro = (double *)xmalloc((size_t)rows * p.d * 8), *rl = (double *)xmalloc((size_t)rows * 8);
    as_gpu_ref_decode_dense(&p.ha, ro, rl);
    as_gpu_sel dsel;
    const int m = 200000;
    OK(as_gpu_sel_alloc(&dsel, &p.da, AS_GPU_SEL_Q, 8 + m, 1, err));
    OK(as_gpu_select_topk_sample(c, &p.da, 8, m, rnd64(), &dsel, err));
    float *d_o, *d_l;
    OK(as_gpu_malloc((void **)&d_o, (size_t)rows * p.d * 4, err));
    OK(as_gpu_malloc((void **)&d_l, (size_t)rows * 4, err));
    OK(as_gpu_decode_sparse(c, &p.da, &dsel, d_o, d_l, 0, err));
    OK(as_gpu_sync(c, err));
    float *o = (float *)xmalloc((size_t)rows * p.d * 4), *lse = (float *)xmalloc((size_t)rows * 4);
    OK(as_gpu_download(o, d_o, (size_t)rows * p.d * 4, err));
    OK(as_gpu_download(lse, d_l, (size_t)rows * 4, err));
    double le;
    int bad;
    const double e = row_errors(&p, o, lse, ro, rl, &le, &bad);
    printf("  tks estimator with m=%d samples of n=300: rel error vs dense %.3g\n", m, e);
    check(bad == 0 && e < 0.05, "tks estimator does not converge: rel error %.3g", e);
    as_gpu_sel_free(&dsel);
    as_gpu_free(d_o);
    as_gpu_free(d_l);
    free(ro); free(rl); free(o); free(lse);
    prob_free(&p);
}

/* ---- 7. the planned decode step, eager and replayed from a CUDA graph ----------------------- */
static int cmp_double(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Plan a step, run it eagerly and check it against the float64 reference over the selection it
 * made; capture one run into a graph; change q, lens and (Quest) the page metadata in place;
 * replay the graph and check it against the reference on the new inputs and, bit for bit,
 * against an eager run on them. */
static void test_step(as_gpu_ctx *c, prob *p, as_gpu_step_method method, as_gpu_sel_mode mode)
{
    char ds[160], what[64];
    desc(p, ds, sizeof ds);
    snprintf(what, sizeof what, "step %d", (int)method);
    const int n = p->nmax, rows = p->batch * p->hq;
    as_gpu_pages pg;
    memset(&pg, 0, sizeof pg);
    const int page = irand(2) ? 16 : 32;
    OK(as_gpu_pages_alloc(&pg, &p->da, page, err));
    OK(as_gpu_pages_build(c, &p->da, &pg, err));
    as_gpu_step_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.method = method;
    cfg.mode = mode;
    cfg.k = 1 + n / 10;
    cfg.pages = 1 + pg.npages / 8;
    cfg.m = 1 + n / 20;
    cfg.seed = rnd64();
    float *d_o, *d_l, *d_o2, *d_l2;
    const size_t ob = (size_t)rows * p->d * 4, lb = (size_t)rows * 4;
    OK(as_gpu_malloc((void **)&d_o, ob, err));
    OK(as_gpu_malloc((void **)&d_l, lb, err));
    OK(as_gpu_malloc((void **)&d_o2, ob, err));
    OK(as_gpu_malloc((void **)&d_l2, lb, err));
    as_gpu_step *s = as_gpu_step_plan(c, &p->da, &pg, &cfg, NULL, NULL, err);
    if (!s) {
        check(0, "%s plan %s: %s", what, ds, err);
        as_gpu_pages_free(&pg);
        as_gpu_free(d_o); as_gpu_free(d_l); as_gpu_free(d_o2); as_gpu_free(d_l2);
        return;
    }
    cudaGraphExec_t ge = NULL;
    for (int round = 0; round < 2; round++) {
        if (round == 1) { /* new inputs in place: q, lens (the longest kept), page metadata */
            for (int i = 0; i < rows * p->d; i++) p->q[i] = (float)(2 * unif() - 1) * g_qmul;
            for (int b = 0; b < p->batch; b++)
                if (p->lens[b] != n) p->lens[b] = n > 0 ? irand(n + 1) : 0;
            OK(as_gpu_upload(p->dq, p->q, (size_t)rows * p->d * 4, err));
            OK(as_gpu_upload(p->dlens, p->lens, (size_t)p->batch * 4, err));
            OK(as_gpu_pages_build(c, &p->da, &pg, err));
            OK(as_gpu_sync(c, err));
        }
        /* round 0: eager; round 1: the graph captured before the inputs changed */
        cudaGraph_t g = NULL;
        cudaStream_t st = (cudaStream_t)as_gpu_ctx_stream(c);
        OK(as_gpu_memset(d_o, 0xFF, ob, err));
        OK(as_gpu_memset(d_l, 0xFF, lb, err));
        if (round == 0) {
            OK(as_gpu_step_run(s, &p->da, &pg, d_o, d_l, err));
            /* capture now, replay after the inputs change */
            check(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess,
                  "%s %s: begin capture", what, ds);
            const as_status rs = as_gpu_step_run(s, &p->da, &pg, d_o2, d_l2, err);
            check(cudaStreamEndCapture(st, &g) == cudaSuccess && rs == AS_OK,
                  "%s %s: capture failed (%s)", what, ds, rs == AS_OK ? "end" : err);
            check(g && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess, "%s %s: instantiate", what, ds);
            if (g) cudaGraphDestroy(g);
            OK(as_gpu_sync(c, err));
        } else {
            if (ge) {
                check(cudaGraphLaunch(ge, st) == cudaSuccess, "%s %s: graph launch", what, ds);
                OK(as_gpu_sync(c, err));
                cudaGraphExecDestroy(ge);
                ge = NULL;
            }
        }
        float *o = (float *)xmalloc(ob), *lse = (float *)xmalloc(lb);
        OK(as_gpu_download(o, round ? d_o2 : d_o, ob, err));
        OK(as_gpu_download(lse, round ? d_l2 : d_l, lb, err));
        double *ro = (double *)xmalloc((size_t)rows * p->d * 8), *rl = (double *)xmalloc((size_t)rows * 8);
        const as_gpu_sel *dsel = as_gpu_step_selection(s);
        as_gpu_sel hs;
        memset(&hs, 0, sizeof hs);
        if (dsel) {
            hs = sel_to_host(dsel, as_gpu_sel_rows(&p->ha, mode));
            as_gpu_ref_decode_sparse(&p->ha, &hs, ro, rl);
        } else {
            as_gpu_ref_decode_dense(&p->ha, ro, rl);
        }
        double le;
        int bad;
        const double e = row_errors(p, o, lse, ro, rl, &le, &bad);
        check(bad == 0 && e <= TOL && le <= TOL, "%s %s mode %d %s: err %.3g lse %.3g bad %d",
              what, ds, (int)mode, round ? "graph replay on new inputs" : "eager", e, le, bad);
        if (round == 1) { /* the replay selects what an eager run on the same inputs selects
                             (the same set per row: the top-k writes positions in no fixed
                             order, so the sums' order, hence the last bits, may differ) */
            OK(as_gpu_memset(d_o, 0xFF, ob, err));
            OK(as_gpu_step_run(s, &p->da, &pg, d_o, d_l, err));
            OK(as_gpu_sync(c, err));
            float *o2 = (float *)xmalloc(ob);
            OK(as_gpu_download(o2, d_o, ob, err));
            double dmax = 0, omax = 0;
            for (size_t i = 0; i < ob / 4; i++) {
                dmax = fmax(dmax, fabs((double)o[i] - o2[i]));
                omax = fmax(omax, fabs((double)o[i]));
            }
            int same = 1;
            if (dsel) {
                const int64_t nr = as_gpu_sel_rows(&p->ha, mode);
                as_gpu_sel he = sel_to_host(dsel, nr);
                for (int64_t r = 0; r < nr && same; r++) {
                    const int cnt = hs.count[r];
                    same = cnt == he.count[r];
                    double *a = (double *)xmalloc((size_t)(cnt + 1) * 16), *b2 = a + cnt + 1;
                    for (int j = 0; same && j < cnt; j++) { /* (position, weight) pairs as one key */
                        const size_t e = (size_t)r * hs.kcap + j;
                        a[j] = hs.idx[e] * 4.0 + (hs.logw ? atan(hs.logw[e]) : 0);
                        b2[j] = he.idx[e] * 4.0 + (he.logw ? atan(he.logw[e]) : 0);
                    }
                    if (same) {
                        qsort(a, (size_t)cnt, 8, cmp_double);
                        qsort(b2, (size_t)cnt, 8, cmp_double);
                        same = !memcmp(a, b2, (size_t)cnt * 8);
                    }
                    free(a);
                }
                host_sel_free(&he);
            }
            check(same && dmax <= 1e-5 * omax,
                  "%s %s mode %d: graph replay differs from the eager run (selection %s, max "
                  "|diff| %.3g of %.3g)", what, ds, (int)mode, same ? "same" : "differs", dmax, omax);
            free(o2);
        }
        if (dsel) host_sel_free(&hs);
        free(o); free(lse); free(ro); free(rl);
        if (round == 0 && !ge) break; /* no graph (a failed check above) */
    }
    { /* a problem of another shape is refused, not run */
        as_gpu_attn other = p->da;
        other.nmax = n + 1;
        check(as_gpu_step_run(s, &other, &pg, d_o, d_l, err) == AS_ERR_USAGE,
              "%s %s: a larger nmax was not refused", what, ds);
    }
    as_gpu_step_free(s);
    as_gpu_pages_free(&pg);
    as_gpu_free(d_o); as_gpu_free(d_l); as_gpu_free(d_o2); as_gpu_free(d_l2);
}

typedef struct {
    int batch, hq, hkv, d, nmax, padded, shared, paged;
} shape;

int main(void)
{
    char why[AS_ERR_LEN];
    if (!as_gpu_available(why)) {
        printf("SKIP test_gpu_kernels: %s\n", why);
        return 77;
    }
    const char *qs = getenv("AS_GPU_TEST_QUICK");
    g_quick = qs && *qs && strcmp(qs, "0");
    const char *ss = getenv("AS_TEST_SEED");
    const uint64_t seed = ss ? strtoull(ss, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    g_rng = seed;
    char dev[256];
    OK(as_gpu_device_name(dev, sizeof dev, err));
    printf("test_gpu_kernels: %s, seed %llu%s\n", dev, (unsigned long long)seed,
           g_quick ? " (quick)" : "");
    as_gpu_ctx *c = as_gpu_ctx_new(0, err);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const shape full[] = {
        {1, 1, 1, 64, 1, 0, 0, 0},     {3, 4, 2, 64, 17, 1, 0, 0},    {2, 12, 1, 128, 1000, 0, 0, 0},
        {4, 9, 3, 64, 2049, 1, 0, 0},  {2, 32, 8, 128, 4097, 0, 0, 0}, {1, 8, 8, 256, 3001, 1, 0, 0},
        {2, 16, 2, 128, 70001, 0, 0, 0}, {5, 6, 2, 128, 333, 0, 1, 0}, {1, 40, 8, 128, 1500, 0, 0, 0},
        {3, 2, 2, 256, 129, 1, 0, 0},
        /* more (sequence, kv head) units than an H100/H200 holds blocks (2 x 132): grids of
         * more than one wave, ragged lengths */
        {40, 16, 8, 128, 3000, 0, 0, 0}, {70, 4, 4, 64, 777, 1, 0, 0},
        /* paged K/V (block table, blocks of 16/32/1 keys, NHD or HND pools) */
        {2, 32, 8, 128, 4097, 0, 0, 16}, {3, 9, 3, 64, 2049, 1, 0, 32},
        {2, 16, 2, 128, 70001, 0, 0, 16}, {4, 6, 2, 256, 333, 0, 1, 1},
        {40, 16, 8, 128, 3000, 0, 0, 16},
    };
    const shape quick[] = {
        {1, 1, 1, 64, 1, 0, 0, 0}, {3, 4, 2, 64, 17, 1, 0, 0}, {2, 12, 1, 128, 300, 0, 0, 0},
        {2, 9, 3, 64, 513, 1, 1, 0}, {1, 4, 4, 256, 77, 0, 0, 0}, {36, 8, 8, 64, 200, 1, 0, 0},
        {3, 4, 2, 64, 17, 1, 0, 16}, {2, 9, 3, 64, 513, 1, 1, 32}, {2, 8, 2, 128, 300, 0, 0, 1},
    };
    const shape *sh = g_quick ? quick : full;
    const int nsh = g_quick ? (int)(sizeof quick / sizeof quick[0]) : (int)(sizeof full / sizeof full[0]);
    for (int si = 0; si < nsh; si++)
        for (int dt = 0; dt < 3; dt++) {
            prob p;
            prob_make(&p, sh[si].batch, sh[si].hq, sh[si].hkv, sh[si].d, sh[si].nmax,
                      (as_gpu_dtype)dt, sh[si].padded, sh[si].shared, 1, sh[si].paged);
            char ds[128];
            desc(&p, ds, sizeof ds);
            const int f0 = g_failed;
            test_dense(c, &p);
            test_sparse(c, &p, AS_GPU_SEL_KV, 0);
            test_sparse(c, &p, AS_GPU_SEL_Q, 1);
            test_scores(c, &p);
            const int n = p.nmax;
            const int ks[] = {1, n / 50 > 0 ? n / 50 : 2, n - 1 > 0 ? n - 1 : 1, n + 3};
            for (int ki = 0; ki < 4; ki++) {
                test_select_topk(c, &p, AS_GPU_SEL_Q, ks[ki]);
                test_select_topk(c, &p, AS_GPU_SEL_KV, ks[ki]);
            }
            const int pages = (n + 15) / 16;
            test_pages(c, &p, 16, AS_GPU_SEL_KV, pages / 8 > 0 ? pages / 8 : 1);
            test_pages(c, &p, 16, AS_GPU_SEL_Q, pages + 2);
            test_pages(c, &p, 5, AS_GPU_SEL_Q, 1);
            test_pages(c, &p, 32, AS_GPU_SEL_KV, (n + 31) / 32 / 4 > 0 ? (n + 31) / 32 / 4 : 1);
            test_tks(c, &p, AS_GPU_SEL_Q, n / 20 > 0 ? n / 20 : 1, 1 + n / 10);
            test_tks(c, &p, AS_GPU_SEL_KV, 1, 7);
            test_page_sample(c, &p, 16, AS_GPU_SEL_KV, pages / 8 > 0 ? pages / 8 : 1, 1 + n / 20);
            test_page_sample(c, &p, 32, AS_GPU_SEL_Q, 1, 5);
            test_page_sample(c, &p, 16, AS_GPU_SEL_KV, pages + 1, 3); /* every page: no samples */
            /* no page: every entry a draw (gpu replay's page-sample below two pages of budget) */
            test_page_sample(c, &p, 16, AS_GPU_SEL_KV, 0, 4);
            for (int m = 0; m <= (int)AS_GPU_STEP_PAGES_SAMPLE; m++)
                test_step(c, &p, (as_gpu_step_method)m, irand(2) ? AS_GPU_SEL_KV : AS_GPU_SEL_Q);
            printf("  %-40s %s\n", ds, g_failed == f0 ? "ok" : "FAILED");
            prob_free(&p);
        }
    /* sharp attention (large |q.k|): every decode variant must keep f32-level scores */
    g_qmul = 18.f;
    for (int dt = 1; dt < 3; dt++)
        for (int d = 64; d <= 128; d += 64) {
            prob p;
            prob_make(&p, 2, 8, 2, d, g_quick ? 700 : 4097, (as_gpu_dtype)dt, 0, 0, 1, 0);
            char ds[128];
            desc(&p, ds, sizeof ds);
            const int f0 = g_failed;
            test_dense(c, &p);
            test_sparse(c, &p, AS_GPU_SEL_KV, 1);
            printf("  sharp q: %-31s %s\n", ds, g_failed == f0 ? "ok" : "FAILED");
            prob_free(&p);
        }
    g_qmul = 1.5f;
    /* exact top-k on raw rows: huge N, ties, unaligned rows, both of its kernels (variants 2
     * and 3 run variant 0's top-k) */
    const int big = g_quick ? 5000 : (1 << 20) + 7;
    for (int v = 0; v < 2; v++) {
        test_topk_rows(c, 3, big, big + 1, big / 50, 0, v);
        test_topk_rows(c, 2, big, big, 1, 0, v);
        test_topk_rows(c, 4, 1000, 1000, 10, 1, v);
        test_topk_rows(c, 4, 1000, 1004, 999, 1, v);
        test_topk_rows(c, 5, 1, 4, 1, 0, v);
        test_topk_rows(c, 5, 4099, 4100, 0, 0, v);
        test_topk_rows(c, 3, 4099, 4100, 5000, 0, v);
        test_topk_rows(c, 8, 70000, 70000, 1400, 0, v);
        /* the multi-block select: many blocks per row, k up to n/2, every tie pattern */
        test_topk_rows(c, 2, big, big, big / 2, 0, v);
        test_topk_rows(c, 3, big, big + 3, big / 50, 3, v);
        test_topk_rows(c, 2, big, big, big / 3, 1, v);
        test_topk_rows(c, 2, 100000, 100000, 777, 2, v);
        test_topk_rows(c, 3, 20000, 20001, 1, 3, v);
        test_topk_rows(c, 3, 20000, 20000, 20000, 3, v);
        test_topk_rows(c, 300, 3000, 3000, 60, 0, v); /* more rows than SMs: one block per row */
        test_topk_rows(c, 200, 2000, 2001, 1000, 3, v);
    }
    if (!g_quick) test_tks_converges(c);
    { /* many draws: uniform over the keys outside the heavy pages */
        prob p;
        prob_make(&p, 1, 4, 2, 64, g_quick ? 3001 : 20011, AS_GPU_BF16, 0, 0, 1, 0);
        test_page_sample(c, &p, 16, AS_GPU_SEL_KV, 20, g_quick ? 80000 : 200000);
        prob_free(&p);
    }
    as_gpu_ctx_free(c);

    printf("max relative error vs float64 reference on the stored values (f32 / f16 / bf16):\n");
    for (int k = 0; k < 6; k++)
        printf("  %-7s %.3g / %.3g / %.3g\n", g_kname[k], g_max_rel[k][0], g_max_rel[k][1],
               g_max_rel[k][2]);
    printf("dense vs float64 reference on the unrounded values: %.3g / %.3g / %.3g\n",
           g_max_true[0], g_max_true[1], g_max_true[2]);
    printf("%d checks: %d passed, %d failed\n", g_checks, g_checks - g_failed, g_failed);
    return g_failed ? 1 : 0;
}
