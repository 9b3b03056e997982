#include "as_select_index.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_outfile.h"
#include "as_safetensors.h"
#include "as_select.h"

typedef struct {
    int layer;
    const as_tensor *idx, *out;
} ix_layer;

struct as_index {
    char *path;
    void *addr;
    size_t len;
    as_st_file file;
    ix_layer *layers;
    size_t n_layers;
};

static const ix_layer *find(const as_index *ix, int layer)
{
    for (size_t i = 0; i < ix->n_layers; i++)
        if (ix->layers[i].layer == layer) return &ix->layers[i];
    return NULL;
}

const char *as_index_path(const as_index *ix) { return ix->path; }

void as_index_free(as_index *ix)
{
    if (!ix) return;
    if (ix->path && ix->addr) as_input_unregister(ix->path);
    as_st_file_clear(&ix->file);
    if (ix->addr) munmap(ix->addr, ix->len);
    free(ix->layers);
    free(ix->path);
    free(ix);
}

/* "layers.L.part" with L a decimal without leading zeros; returns 1 and fills on a match. */
static int split_name(const char *name, int *layer, const char **part)
{
    if (strncmp(name, "layers.", 7) != 0) return 0;
    const char *p = name + 7;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return 0;
    long v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        if (v > 1000000) return 0;
    }
    if (*p != '.') return 0;
    *layer = (int)v;
    *part = p + 1;
    return 1;
}

as_index *as_index_open(const char *path, as_status *status, char *err)
{
    as_status st = AS_OK;
    as_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->path = strdup(path))) {
        free(ix);
        if (status) *status = AS_ERR_NOMEM;
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat s;
    if (fd < 0) {
        st = as_err_set(err, AS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &s) != 0 || !S_ISREG(s.st_mode)) {
        close(fd);
        st = as_err_set(err, AS_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    if (s.st_size < 8) {
        close(fd);
        st = as_err_set(err, AS_ERR_FORMAT, "%s: too short for a safetensors file (%lld bytes)",
                        path, (long long)s.st_size);
        goto fail;
    }
    void *a = mmap(NULL, (size_t)s.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (a == MAP_FAILED) {
        st = as_err_set(err, AS_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    ix->addr = a;
    ix->len = (size_t)s.st_size;
    char sub[AS_ERR_LEN];
    st = as_st_parse(ix->addr, ix->len, &ix->file, sub);
    if (st != AS_OK) {
        as_err_set(err, st, "%s: %s", path, sub);
        goto fail;
    }
    for (size_t i = 0; i < ix->file.n_meta; i++)
        if (strcmp(ix->file.meta[i].key, "format") == 0 &&
            strcmp(ix->file.meta[i].value, AS_INDEX_FORMAT_NAME) != 0) {
            st = as_err_set(err, AS_ERR_FORMAT, "%s: metadata format is '%s', expected '%s'", path,
                            ix->file.meta[i].value, AS_INDEX_FORMAT_NAME);
            goto fail;
        }
    ix->layers = calloc(ix->file.n_tensors + 1, sizeof *ix->layers);
    if (!ix->layers) {
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < ix->file.n_tensors; i++) {
        const as_tensor *t = &ix->file.tensors[i];
        int L;
        const char *part;
        if (!split_name(t->name, &L, &part)) continue;
        int is_idx = strcmp(part, "idx") == 0, is_out = strcmp(part, "out") == 0;
        if (!is_idx && !is_out) continue;
        if (t->ndim != 3) {
            st = as_err_set(err, AS_ERR_FORMAT, "%s: tensor '%s' has rank %d, expected 3", path,
                            t->name, t->ndim);
            goto fail;
        }
        if (is_idx && t->dtype != AS_DT_I32 && t->dtype != AS_DT_I64) {
            st = as_err_set(err, AS_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected I32 or I64",
                            path, t->name, as_dtype_name(t->dtype));
            goto fail;
        }
        if (is_out && !as_dtype_is_float(t->dtype)) {
            st = as_err_set(err, AS_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float",
                            path, t->name, as_dtype_name(t->dtype));
            goto fail;
        }
        ix_layer *slot = (ix_layer *)find(ix, L);
        if (!slot) {
            slot = &ix->layers[ix->n_layers++];
            slot->layer = L;
        }
        if (is_idx) slot->idx = t;
        else slot->out = t;
    }
    for (size_t i = 0; i < ix->n_layers; i++)
        if (!ix->layers[i].idx) {
            st = as_err_set(err, AS_ERR_FORMAT, "%s: layer %d has 'out' but no 'layers.%d.idx'",
                            path, ix->layers[i].layer, ix->layers[i].layer);
            goto fail;
        }
    if (ix->n_layers == 0) {
        st = as_err_set(err, AS_ERR_FORMAT, "%s: no 'layers.L.idx' tensors found", path);
        goto fail;
    }
    as_input_register(path);
    if (status) *status = AS_OK;
    return ix;
fail:
    if (status) *status = st;
    if (ix->addr) {
        munmap(ix->addr, ix->len);
        ix->addr = NULL;
    }
    as_index_free(ix);
    return NULL;
}

as_status as_index_check_layer(const as_index *ix, const as_layer *l, char *err)
{
    const ix_layer *e = find(ix, l->index);
    if (!e)
        return as_err_set(err, AS_ERR_FORMAT, "%s: no tensor 'layers.%d.idx' for trace layer %d",
                          ix->path, l->index, l->index);
    const as_tensor *t = e->idx;
    if ((t->shape[0] != l->hq && t->shape[0] != l->hkv) || t->shape[1] != l->t)
        return as_err_set(err, AS_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld (Hq) or "
                          "%lld (Hkv), %lld (T), K]",
                          ix->path, t->name, (long long)t->shape[0], (long long)t->shape[1],
                          (long long)t->shape[2], (long long)l->hq, (long long)l->hkv,
                          (long long)l->t);
    if (e->out && (e->out->shape[0] != l->hq || e->out->shape[1] != l->t ||
                   e->out->shape[2] != l->d))
        return as_err_set(err, AS_ERR_FORMAT,
                          "%s: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld]",
                          ix->path, e->out->name, (long long)e->out->shape[0],
                          (long long)e->out->shape[1], (long long)e->out->shape[2],
                          (long long)l->hq, (long long)l->t, (long long)l->d);
    if (e->out) {
        double *row = malloc((size_t)l->d * sizeof *row);
        if (!row) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
        for (uint64_t r = 0; r < (uint64_t)(l->hq * l->t); r++) {
            as_tensor_read_f64(e->out, r * (uint64_t)l->d, (uint64_t)l->d, row);
            for (int64_t c = 0; c < l->d; c++)
                if (row[c] != row[c] || row[c] - row[c] != 0) {
                    free(row);
                    return as_err_set(err, AS_ERR_VALUE, "%s: tensor '%s' holds NaN or Inf at "
                                      "element %llu", ix->path, e->out->name,
                                      (unsigned long long)(r * (uint64_t)l->d + (uint64_t)c));
                }
        }
        free(row);
    }
    return AS_OK;
}

int64_t as_index_width(const as_index *ix, int layer)
{
    const ix_layer *e = find(ix, layer);
    return e ? e->idx->shape[2] : 0;
}

as_status as_index_get(const as_index *ix, const as_layer *l, int64_t h, int64_t qi, int64_t *out,
                       int64_t *k, char *err)
{
    const ix_layer *e = find(ix, l->index);
    if (!e)
        return as_err_set(err, AS_ERR_FORMAT, "%s: no tensor 'layers.%d.idx'", ix->path, l->index);
    const as_tensor *t = e->idx;
    int64_t row_h = t->shape[0] == l->hq ? h : as_layer_kv_head(l, h);
    int64_t K = t->shape[2], n = as_layer_visible(l, qi);
    uint64_t first = ((uint64_t)row_h * (uint64_t)t->shape[1] + (uint64_t)qi) * (uint64_t)K;
    int64_t c = 0;
    size_t isz = as_dtype_size(t->dtype);
    for (int64_t j = 0; j < K; j++) {
        const unsigned char *b = t->data + (first + (uint64_t)j) * isz;
        int64_t v;
        if (t->dtype == AS_DT_I32) {
            uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                         (uint32_t)b[3] << 24;
            v = (int32_t)u;
        } else {
            uint64_t u = 0;
            for (int byte = 7; byte >= 0; byte--) u = u << 8 | b[byte];
            v = (int64_t)u;
        }
        if (v == -1) continue;
        if (v < 0 || v >= n)
            return as_err_set(err, AS_ERR_VALUE,
                              "%s: tensor '%s' [%lld, %lld, %lld] = %lld is not a key query %lld "
                              "may see (0..%lld)",
                              ix->path, t->name, (long long)row_h, (long long)qi, (long long)j,
                              (long long)v, (long long)qi, (long long)(n - 1));
        out[c++] = v;
    }
    int64_t u = as_select_sort_unique(out, c);
    if (u != c)
        return as_err_set(err, AS_ERR_VALUE, "%s: tensor '%s' row [%lld, %lld] lists a position "
                          "more than once", ix->path, t->name, (long long)row_h, (long long)qi);
    *k = c;
    return AS_OK;
}

int as_index_has_output(const as_index *ix, int layer)
{
    const ix_layer *e = find(ix, layer);
    return e && e->out;
}

void as_index_get_output(const as_index *ix, const as_layer *l, int64_t h, int64_t qi, double *o)
{
    const ix_layer *e = find(ix, l->index);
    as_tensor_read_f64(e->out, ((uint64_t)h * (uint64_t)l->t + (uint64_t)qi) * (uint64_t)l->d,
                       (uint64_t)l->d, o);
}

as_status as_index_write(const char *path, const as_index_layer_data *layers, size_t n_layers,
                         const as_meta *meta, size_t n_meta, char *err)
{
    size_t ns = 0;
    as_st_spec *specs = calloc(2 * n_layers + 1, sizeof *specs);
    char (*names)[48] = calloc(2 * n_layers + 1, sizeof *names);
    as_meta *m = calloc(n_meta + 2, sizeof *m);
    as_status st = AS_OK;
    if (!specs || !names || !m) {
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_layers; i++) {
        const as_index_layer_data *L = &layers[i];
        snprintf(names[ns], 48, "layers.%d.idx", L->layer);
        specs[ns] = (as_st_spec){names[ns], AS_DT_I32, 3, {L->h, L->t, L->k}};
        ns++;
        if (L->out) {
            snprintf(names[ns], 48, "layers.%d.out", L->layer);
            specs[ns] = (as_st_spec){names[ns], AS_DT_F64, 3, {L->h, L->t, L->d}};
            ns++;
        }
    }
    m[0] = (as_meta){"format", AS_INDEX_FORMAT_NAME};
    m[1] = (as_meta){"format_version", "1"};
    for (size_t i = 0; i < n_meta; i++) m[i + 2] = meta[i];
    as_st_writer *w = as_st_writer_open(path, specs, ns, m, n_meta + 2, err);
    if (!w) {
        st = AS_ERR_IO;
        if (as_input_is_open(path)) st = AS_ERR_USAGE;
        goto out;
    }
    unsigned char buf[4096];
    for (size_t i = 0; i < n_layers && st == AS_OK; i++) {
        const as_index_layer_data *L = &layers[i];
        /* little-endian bytes, in chunks */
        uint64_t cnt = (uint64_t)(L->h * L->t * L->k);
        for (uint64_t j = 0; j < cnt && st == AS_OK;) {
            size_t c = 0;
            for (; c + 4 <= sizeof buf && j < cnt; j++, c += 4) {
                uint32_t u = (uint32_t)L->idx[j];
                buf[c] = (unsigned char)u;
                buf[c + 1] = (unsigned char)(u >> 8);
                buf[c + 2] = (unsigned char)(u >> 16);
                buf[c + 3] = (unsigned char)(u >> 24);
            }
            st = as_st_writer_write(w, buf, c, err);
        }
        if (L->out && st == AS_OK) {
            uint64_t cnt2 = (uint64_t)(L->h * L->t * L->d);
            for (uint64_t j = 0; j < cnt2 && st == AS_OK;) {
                uint64_t c = cnt2 - j < 512 ? cnt2 - j : 512;
                as_dtype_from_f64(AS_DT_F64, L->out + j, (size_t)c, buf);
                st = as_st_writer_write(w, buf, (size_t)c * 8, err);
                j += c;
            }
        }
    }
    if (st == AS_OK)
        st = as_st_writer_finish(w, err);
    else
        as_st_writer_abort(w);
out:
    free(specs);
    free(names);
    free(m);
    return st;
}
