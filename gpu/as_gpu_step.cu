/* as_gpu_step.cu: one decode step (selection + attention) planned once and run many times with
 * no allocation and no host synchronisation, so that serving engines can capture it into a
 * CUDA graph (as_gpu.h, kernel 7; docs/gpu.md). */
#include <stdlib.h>
#include <string.h>

#include "as_gpu_impl.h"

struct as_gpu_step {
    as_gpu_ctx *c;
    as_gpu_step_cfg cfg;
    as_gpu_attn shape; /* the planned problem (pointers not used) */
    int32_t page, npages;
    as_gpu_sel sel;
    float *scratch_o, *scratch_lse; /* the plan's run when the caller gives no output */
};

static int uses_pages(as_gpu_step_method m)
{
    return m == AS_GPU_STEP_PAGES || m == AS_GPU_STEP_PAGES_SAMPLE;
}

static int same_shape(const as_gpu_attn *p, const as_gpu_attn *a)
{
    return p->batch == a->batch && p->hq == a->hq && p->hkv == a->hkv && p->d == a->d &&
           p->kv_dtype == a->kv_dtype && a->nmax <= p->nmax && !p->blocks == !a->blocks;
}

extern "C" as_status as_gpu_step_run(as_gpu_step *s, const as_gpu_attn *a, const as_gpu_pages *pg,
                                     float *o, float *lse, char *err)
{
    if (!s || !a) return as_err_set(err, AS_ERR_USAGE, "gpu step: NULL step or problem");
    if (!same_shape(&s->shape, a))
        return as_err_set(err, AS_ERR_USAGE,
                          "gpu step: problem (B=%d hq=%d hkv=%d d=%d N<=%d %s) is not the planned "
                          "shape (B=%d hq=%d hkv=%d d=%d N<=%d %s)", a->batch, a->hq, a->hkv, a->d,
                          a->nmax, a->blocks ? "paged" : "contiguous", s->shape.batch, s->shape.hq,
                          s->shape.hkv, s->shape.d, s->shape.nmax,
                          s->shape.blocks ? "paged" : "contiguous");
    const as_gpu_step_cfg *g = &s->cfg;
    if (uses_pages(g->method) &&
        (!pg || pg->page != s->page || pg->npages != s->npages || pg->dtype != a->kv_dtype))
        return as_err_set(err, AS_ERR_USAGE, "gpu step: page metadata is not the planned shape "
                                             "(pages of %d, %d per row)", s->page, s->npages);
    switch (g->method) {
    case AS_GPU_STEP_DENSE: return as_gpu_decode_dense(s->c, a, o, lse, 0, err);
    case AS_GPU_STEP_TOPK: AS_TRY(as_gpu_select_topk(s->c, a, g->k, &s->sel, err)); break;
    case AS_GPU_STEP_PAGES: AS_TRY(as_gpu_select_pages(s->c, a, pg, g->pages, &s->sel, err)); break;
    case AS_GPU_STEP_TOPK_SAMPLE:
        AS_TRY(as_gpu_select_topk_sample(s->c, a, g->k, g->m, g->seed, &s->sel, err));
        break;
    case AS_GPU_STEP_PAGES_SAMPLE:
        AS_TRY(as_gpu_select_pages_sample(s->c, a, pg, g->pages, g->m, g->seed, &s->sel, err));
        break;
    }
    return as_gpu_decode_sparse(s->c, a, &s->sel, o, lse, 0, err);
}

extern "C" void as_gpu_step_free(as_gpu_step *s)
{
    if (!s) return;
    as_gpu_sel_free(&s->sel);
    as_gpu_free(s->scratch_o);
    as_gpu_free(s->scratch_lse);
    free(s);
}

extern "C" as_gpu_step *as_gpu_step_plan(as_gpu_ctx *c, const as_gpu_attn *a,
                                         const as_gpu_pages *pg, const as_gpu_step_cfg *cfg,
                                         float *o, float *lse, char *err)
{
    if (!c || !cfg) {
        as_err_set(err, AS_ERR_USAGE, "gpu step: NULL context or configuration");
        return NULL;
    }
    if (as_gpu_check_attn(a, err) != AS_OK) return NULL;
    const as_gpu_step_method m = cfg->method;
    if ((int)m < AS_GPU_STEP_DENSE || (int)m > AS_GPU_STEP_PAGES_SAMPLE) {
        as_err_set(err, AS_ERR_USAGE, "gpu step: unknown method %d", (int)m);
        return NULL;
    }
    if (cfg->mode != AS_GPU_SEL_KV && cfg->mode != AS_GPU_SEL_Q) {
        as_err_set(err, AS_ERR_USAGE, "gpu step: unknown selection mode %d", (int)cfg->mode);
        return NULL;
    }
    const int topk = m == AS_GPU_STEP_TOPK || m == AS_GPU_STEP_TOPK_SAMPLE;
    const int sample = m == AS_GPU_STEP_TOPK_SAMPLE || m == AS_GPU_STEP_PAGES_SAMPLE;
    if ((topk && cfg->k < 1) || (uses_pages(m) && cfg->pages < 0) || (sample && cfg->m < 1)) {
        as_err_set(err, AS_ERR_USAGE, "gpu step: k=%d pages=%d m=%d out of range for the method",
                   cfg->k, cfg->pages, cfg->m);
        return NULL;
    }
    if (uses_pages(m) && (!pg || !pg->kmin || !pg->kmax || pg->page < 1)) {
        as_err_set(err, AS_ERR_USAGE, "gpu step: Quest methods need built page metadata");
        return NULL;
    }
    as_gpu_step *s = (as_gpu_step *)calloc(1, sizeof *s);
    if (!s) {
        as_err_set(err, AS_ERR_NOMEM, "gpu step: out of memory");
        return NULL;
    }
    s->c = c;
    s->cfg = *cfg;
    s->shape = *a;
    if (uses_pages(m)) {
        s->page = pg->page;
        s->npages = pg->npages;
    }
    int64_t kcap = 0;
    switch (m) {
    case AS_GPU_STEP_DENSE: break;
    case AS_GPU_STEP_TOPK: kcap = cfg->k; break;
    case AS_GPU_STEP_PAGES: kcap = (int64_t)cfg->pages * pg->page; break;
    case AS_GPU_STEP_TOPK_SAMPLE: kcap = (int64_t)cfg->k + cfg->m; break;
    case AS_GPU_STEP_PAGES_SAMPLE: kcap = (int64_t)cfg->pages * pg->page + cfg->m; break;
    }
    if (kcap > INT32_MAX) {
        as_err_set(err, AS_ERR_USAGE, "gpu step: selection of %lld entries per row is too large",
                   (long long)kcap);
        as_gpu_step_free(s);
        return NULL;
    }
    as_status st = AS_OK;
    if (m != AS_GPU_STEP_DENSE)
        st = as_gpu_sel_alloc(&s->sel, a, cfg->mode, (int32_t)(kcap < 1 ? 1 : kcap), sample, err);
    const size_t rows = (size_t)a->batch * a->hq;
    if (st == AS_OK && !o) {
        st = as_gpu_malloc((void **)&s->scratch_o, rows * a->d * sizeof(float), err);
        o = s->scratch_o;
    }
    if (st == AS_OK && !lse) {
        st = as_gpu_malloc((void **)&s->scratch_lse, rows * sizeof(float), err);
        lse = s->scratch_lse;
    }
    /* the first run grows the context's workspaces to their final size (growing synchronises,
     * which a capture could not do) */
    if (st == AS_OK) st = as_gpu_step_run(s, a, pg, o, lse, err);
    if (st == AS_OK) st = as_gpu_sync(c, err);
    if (st != AS_OK) {
        as_gpu_step_free(s);
        return NULL;
    }
    return s;
}

extern "C" const as_gpu_sel *as_gpu_step_selection(const as_gpu_step *s)
{
    return s && s->cfg.method != AS_GPU_STEP_DENSE ? &s->sel : NULL;
}
