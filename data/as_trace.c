#include "as_trace.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_outfile.h"
#include "as_npy.h"

typedef struct {
    void *addr;
    size_t len;
} as_map;

struct as_trace {
    char *path;
    const char *kind;
    uint64_t bytes;
    as_map *maps;
    size_t n_maps;
    as_st_file file; /* tensors + metadata (for npy dirs, filled by hand) */
    as_layer *layers;
    size_t n_layers;
    char **files; /* npy dirs: the path of every mapped .npy file */
    size_t n_files;
    int registered; /* inputs registered (so writers refuse to replace them) */
};

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

/* Map a whole file read-only. Empty files are mapped as a NULL, 0 region. */
static as_status map_file(const char *path, as_map *m, char *err)
{
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block */
    if (fd < 0) return as_err_set(err, AS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat s;
    if (fstat(fd, &s) != 0 || !S_ISREG(s.st_mode)) {
        close(fd);
        return as_err_set(err, AS_ERR_IO, "%s: not a regular file", path);
    }
    if (s.st_size > 0) {
        void *a = mmap(NULL, (size_t)s.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (a == MAP_FAILED) {
            close(fd);
            return as_err_set(err, AS_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
        madvise(a, (size_t)s.st_size, MADV_SEQUENTIAL);
        m->addr = a;
        m->len = (size_t)s.st_size;
    }
    close(fd);
    return AS_OK;
}

void as_trace_free(as_trace *tr)
{
    if (!tr) return;
    if (tr->registered) {
        as_input_unregister(tr->path);
        for (size_t i = 0; i < tr->n_files; i++) as_input_unregister(tr->files[i]);
    }
    for (size_t i = 0; i < tr->n_files; i++) free(tr->files[i]);
    free(tr->files);
    as_st_file_clear(&tr->file);
    for (size_t i = 0; i < tr->n_maps; i++)
        if (tr->maps[i].addr) munmap(tr->maps[i].addr, tr->maps[i].len);
    free(tr->maps);
    free(tr->layers);
    free(tr->path);
    free(tr);
}

/* ---- npy directory --------------------------------------------------------------- */

static int is_trace_npy(const char *name)
{
    size_t n = strlen(name);
    return n > 11 && strncmp(name, "layers.", 7) == 0 && strcmp(name + n - 4, ".npy") == 0;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static as_status load_meta_json(as_trace *tr, const char *dir, char *err)
{
    size_t n = strlen(dir) + 32;
    char *p = malloc(n);
    if (!p) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    snprintf(p, n, "%s/metadata.json", dir);
    as_map m;
    as_status st = map_file(p, &m, err);
    if (st != AS_OK) {
        if (access(p, F_OK) != 0) st = AS_OK; /* metadata.json is optional */
        free(p);
        return st;
    }
    cJSON *root = NULL;
    const char *end = NULL;
    char *text = m.addr ? malloc(m.len + 1) : NULL; /* NUL-terminated copy for cJSON */
    if (text) {
        memcpy(text, m.addr, m.len);
        text[m.len] = '\0';
        root = cJSON_ParseWithLengthOpts(text, m.len, &end, 0);
        for (const char *q = end; root && q < text + m.len; q++)
            if (*q != ' ' && *q != '\n' && *q != '\t' && *q != '\r') {
                cJSON_Delete(root);
                root = NULL;
                break;
            }
    }
    free(text);
    if (!cJSON_IsObject(root)) {
        st = as_err_set(err, AS_ERR_FORMAT, "%s: not a JSON object (malformed metadata)", p);
        goto out;
    }
    {   /* duplicate keys, sorted so that a huge file cannot make this quadratic */
        int cnt = cJSON_GetArraySize(root), k = 0;
        const char **keys = malloc(((size_t)cnt + 1) * sizeof *keys);
        if (!keys) {
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (const cJSON *a = root->child; a && k < cnt; a = a->next) keys[k++] = a->string;
        qsort(keys, (size_t)k, sizeof *keys, cmp_key);
        for (int i = 1; i < k; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0) {
                st = as_err_set(err, AS_ERR_FORMAT, "%s: duplicate key '%s'", p, keys[i]);
                break;
            }
        free(keys);
        if (st != AS_OK) goto out;
    }
    int cnt = cJSON_GetArraySize(root);
    tr->file.meta = calloc((size_t)cnt + 1, sizeof *tr->file.meta);
    if (!tr->file.meta) {
        st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
        goto out;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        char buf[64];
        const char *v;
        if (cJSON_IsString(e)) v = e->valuestring;
        else if (cJSON_IsBool(e)) v = cJSON_IsTrue(e) ? "true" : "false";
        else if (cJSON_IsNumber(e)) {
            snprintf(buf, sizeof buf, "%.17g", e->valuedouble);
            v = buf;
        } else {
            st = as_err_set(err, AS_ERR_FORMAT, "%s: value of '%s' must be a string or number",
                            p, e->string);
            goto out;
        }
        as_meta *mm = &tr->file.meta[tr->file.n_meta++];
        mm->key = dupstr(e->string);
        mm->value = dupstr(v);
        if (!mm->key || !mm->value) {
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
out:
    cJSON_Delete(root);
    if (m.addr) munmap(m.addr, m.len);
    free(p);
    return st;
}

static as_status open_npy_dir(as_trace *tr, const char *dir, char *err)
{
    DIR *d = opendir(dir);
    if (!d) return as_err_set(err, AS_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    as_status st = AS_OK;
    while ((de = readdir(d)) != NULL) {
        if (!is_trace_npy(de->d_name)) continue;
        if (tr->file.n_tensors == cap) {
            cap = cap ? 2 * cap : 16;
            as_tensor *t = realloc(tr->file.tensors, cap * sizeof *t);
            as_map *m = realloc(tr->maps, cap * sizeof *m);
            char **fl = realloc(tr->files, cap * sizeof *fl);
            if (t) tr->file.tensors = t;
            if (m) tr->maps = m;
            if (fl) tr->files = fl;
            if (!t || !m || !fl) {
                st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
                break;
            }
        }
        size_t n = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(p, n, "%s/%s", dir, de->d_name);
        as_map *m = &tr->maps[tr->n_maps];
        st = map_file(p, m, err);
        if (st == AS_OK) {
            tr->n_maps++;
            tr->bytes += m->len;
            as_tensor *t = &tr->file.tensors[tr->file.n_tensors];
            char sub[AS_ERR_LEN];
            st = as_npy_parse(m->addr, m->len, t, sub);
            if (st != AS_OK)
                as_err_set(err, st, "%s: %s", p, sub);
            else {
                t->name = dupstr(de->d_name);
                if (!t->name) st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
                else {
                    t->name[strlen(t->name) - 4] = '\0';
                    tr->file.n_tensors++;
                    tr->files[tr->n_files++] = p;
                    p = NULL;
                }
            }
        }
        free(p);
        if (st != AS_OK) break;
    }
    closedir(d);
    if (st == AS_OK && tr->file.n_tensors == 0)
        st = as_err_set(err, AS_ERR_FORMAT, "%s: directory holds no layers.*.npy files", dir);
    if (st == AS_OK) st = load_meta_json(tr, dir, err);
    return st;
}

/* ---- layers ---------------------------------------------------------------------- */

static as_layer *layer_slot(as_trace *tr, int idx, size_t *cap)
{
    for (size_t i = 0; i < tr->n_layers; i++)
        if (tr->layers[i].index == idx) return &tr->layers[i];
    if (tr->n_layers == *cap) {
        *cap = *cap ? 2 * *cap : 8;
        as_layer *l = realloc(tr->layers, *cap * sizeof *l);
        if (!l) return NULL;
        tr->layers = l;
    }
    as_layer *l = &tr->layers[tr->n_layers++];
    memset(l, 0, sizeof *l);
    l->index = idx;
    return l;
}

static int cmp_layer(const void *a, const void *b)
{
    const as_layer *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

/* Split "layers.L.part" -> L, part. Returns 0 if it has that form. */
static int split_name(const char *name, int *idx, const char **part)
{
    if (strncmp(name, "layers.", 7) != 0) return -1;
    const char *p = name + 7;
    if (*p < '0' || *p > '9') return -1; /* strtol would take " 1", "+1" as 1 */
    char *e = NULL;
    errno = 0;
    long v = strtol(p, &e, 10);
    if (e == p || *e != '.' || errno || v < 0 || v > 1000000 || (p[0] == '0' && e - p > 1))
        return -1;
    *idx = (int)v;
    *part = e + 1;
    return 0;
}

static as_status check_layer(const as_trace *tr, as_layer *l, char *err)
{
    char nm[64];
    const char *parts[3] = {"q", "k", "v"};
    const as_tensor *ts[3] = {l->q, l->k, l->v};
    for (int i = 0; i < 3; i++) {
        snprintf(nm, sizeof nm, "layers.%d.%s", l->index, parts[i]);
        if (!ts[i])
            return as_err_set(err, AS_ERR_FORMAT, "%s: layer %d has no tensor '%s'", tr->path,
                              l->index, nm);
        if (ts[i]->ndim != 3)
            return as_err_set(err, AS_ERR_FORMAT, "%s: tensor '%s' has rank %d, expected 3 (%s)",
                              tr->path, nm, ts[i]->ndim,
                              i == 0 ? "[Hq, T, d]" : "[Hkv, N, d]");
        if (!as_dtype_is_float(ts[i]->dtype))
            return as_err_set(err, AS_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float",
                              tr->path, nm, as_dtype_name(ts[i]->dtype));
        for (int k = 0; k < 3; k++)
            if (ts[i]->shape[k] == 0)
                return as_err_set(err, AS_ERR_FORMAT, "%s: tensor '%s' has an empty dimension",
                                  tr->path, nm);
    }
    l->hq = l->q->shape[0];
    l->t = l->q->shape[1];
    l->d = l->q->shape[2];
    l->hkv = l->k->shape[0];
    l->n = l->k->shape[1];
    if (l->k->shape[2] != l->d)
        return as_err_set(err, AS_ERR_FORMAT,
                          "%s: layers.%d.k has head dim %lld but layers.%d.q has %lld", tr->path,
                          l->index, (long long)l->k->shape[2], l->index, (long long)l->d);
    for (int k = 0; k < 3; k++)
        if (l->v->shape[k] != l->k->shape[k])
            return as_err_set(err, AS_ERR_FORMAT,
                              "%s: layers.%d.v has shape [%lld, %lld, %lld], expected the shape "
                              "of layers.%d.k [%lld, %lld, %lld]",
                              tr->path, l->index, (long long)l->v->shape[0],
                              (long long)l->v->shape[1], (long long)l->v->shape[2], l->index,
                              (long long)l->hkv, (long long)l->n, (long long)l->d);
    if (l->hq % l->hkv != 0)
        return as_err_set(err, AS_ERR_FORMAT,
                          "%s: layer %d has %lld query heads, not a multiple of its %lld kv heads",
                          tr->path, l->index, (long long)l->hq, (long long)l->hkv);
    if (l->q_pos) {
        const as_tensor *p = l->q_pos;
        if (p->ndim != 1 || p->shape[0] != l->t)
            return as_err_set(err, AS_ERR_FORMAT,
                              "%s: layers.%d.q_pos must have shape [%lld] (one position per query)",
                              tr->path, l->index, (long long)l->t);
        if (p->dtype != AS_DT_I32 && p->dtype != AS_DT_I64)
            return as_err_set(err, AS_ERR_FORMAT, "%s: layers.%d.q_pos has dtype %s, expected I32 or I64",
                              tr->path, l->index, as_dtype_name(p->dtype));
        for (int64_t i = 0; i < l->t; i++) {
            double v;
            as_tensor_read_f64(p, (uint64_t)i, 1, &v);
            if (v < 0 || v >= (double)l->n)
                return as_err_set(err, AS_ERR_VALUE,
                                  "%s: layers.%d.q_pos[%lld] = %.0f is outside [0, %lld) (N keys)",
                                  tr->path, l->index, (long long)i, v, (long long)l->n);
        }
    }
    return AS_OK;
}

static as_status build_layers(as_trace *tr, char *err)
{
    size_t cap = 0;
    for (size_t i = 0; i < tr->file.n_tensors; i++) {
        const as_tensor *t = &tr->file.tensors[i];
        int idx;
        const char *part;
        if (split_name(t->name, &idx, &part) != 0) continue; /* foreign tensors are ignored */
        int which = !strcmp(part, "q") ? 0 : !strcmp(part, "k") ? 1 : !strcmp(part, "v") ? 2
                  : !strcmp(part, "q_pos") ? 3 : -1;
        if (which < 0) continue; /* e.g. layers.0.attn_mask: not part of the trace */
        as_layer *l = layer_slot(tr, idx, &cap);
        if (!l) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
        const as_tensor **slots[4] = {&l->q, &l->k, &l->v, &l->q_pos};
        *slots[which] = t;
    }
    if (tr->n_layers == 0)
        return as_err_set(err, AS_ERR_FORMAT, "%s: no 'layers.L.{q,k,v}' tensors found", tr->path);
    qsort(tr->layers, tr->n_layers, sizeof *tr->layers, cmp_layer);
    const char *sc = as_trace_meta(tr, "scale");
    double scale = 0;
    if (sc) {
        char *e = NULL;
        scale = strtod(sc, &e);
        if (e == sc || *e || !(scale > 0) || !isfinite(scale))
            return as_err_set(err, AS_ERR_FORMAT, "%s: metadata 'scale' = '%s' is not a positive number",
                              tr->path, sc);
    }
    for (size_t i = 0; i < tr->n_layers; i++) {
        as_status st = check_layer(tr, &tr->layers[i], err);
        if (st != AS_OK) return st;
        tr->layers[i].scale = sc ? scale : 1.0 / sqrt((double)tr->layers[i].d);
    }
    const char *fmt = as_trace_meta(tr, "format");
    if (fmt && strcmp(fmt, AS_TRACE_FORMAT_NAME) != 0)
        return as_err_set(err, AS_ERR_FORMAT, "%s: metadata format is '%s', expected '%s'", tr->path,
                          fmt, AS_TRACE_FORMAT_NAME);
    return AS_OK;
}

as_trace *as_trace_open_status(const char *path, as_status *status, char *err)
{
    as_status st;
    as_trace *tr = calloc(1, sizeof *tr);
    if (!tr || !(tr->path = dupstr(path))) {
        free(tr);
        if (status) *status = AS_ERR_NOMEM;
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    struct stat s;
    if (stat(path, &s) != 0) {
        st = as_err_set(err, AS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    } else if (S_ISDIR(s.st_mode)) {
        tr->kind = "npy-dir";
        st = open_npy_dir(tr, path, err);
    } else {
        tr->kind = "safetensors";
        tr->maps = calloc(1, sizeof *tr->maps);
        st = tr->maps ? map_file(path, tr->maps, err) : as_err_set(err, AS_ERR_NOMEM, "out of memory");
        if (st == AS_OK) {
            tr->n_maps = 1;
            tr->bytes = tr->maps[0].len;
            char sub[AS_ERR_LEN];
            st = as_st_parse(tr->maps[0].addr, tr->maps[0].len, &tr->file, sub);
            if (st != AS_OK) as_err_set(err, st, "%s: %s", path, sub);
        }
    }
    if (st == AS_OK) st = build_layers(tr, err);
    if (status) *status = st;
    if (st != AS_OK) {
        as_trace_free(tr);
        return NULL;
    }
    as_input_register(path);
    for (size_t i = 0; i < tr->n_files; i++) as_input_register(tr->files[i]);
    tr->registered = 1;
    return tr;
}

as_trace *as_trace_open(const char *path, char *err) { return as_trace_open_status(path, NULL, err); }

const char *as_trace_path(const as_trace *tr) { return tr->path; }
const char *as_trace_kind(const as_trace *tr) { return tr->kind; }
uint64_t as_trace_file_bytes(const as_trace *tr) { return tr->bytes; }
size_t as_trace_n_layers(const as_trace *tr) { return tr->n_layers; }
const as_layer *as_trace_layer(const as_trace *tr, size_t i)
{
    return i < tr->n_layers ? &tr->layers[i] : NULL;
}
const as_layer *as_trace_find_layer(const as_trace *tr, int index)
{
    for (size_t i = 0; i < tr->n_layers; i++)
        if (tr->layers[i].index == index) return &tr->layers[i];
    return NULL;
}

const char *as_trace_meta(const as_trace *tr, const char *key)
{
    for (size_t i = 0; i < tr->file.n_meta; i++)
        if (strcmp(tr->file.meta[i].key, key) == 0) return tr->file.meta[i].value;
    return NULL;
}
size_t as_trace_n_meta(const as_trace *tr) { return tr->file.n_meta; }
const as_meta *as_trace_meta_at(const as_trace *tr, size_t i)
{
    return i < tr->file.n_meta ? &tr->file.meta[i] : NULL;
}
const char *as_trace_model(const as_trace *tr)
{
    const char *m = as_trace_meta(tr, "model");
    return m ? m : "unknown";
}
int as_trace_rope_applied(const as_trace *tr)
{
    const char *r = as_trace_meta(tr, "rope_applied");
    if (!r) return -1;
    if (!strcmp(r, "true") || !strcmp(r, "True") || !strcmp(r, "1")) return 1;
    if (!strcmp(r, "false") || !strcmp(r, "False") || !strcmp(r, "0")) return 0;
    return -1;
}

/* Non-finite test on raw bits: exponent all ones. */
static int bad_at(const as_tensor *t, uint64_t i)
{
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case AS_DT_F64: return ((p[8 * i + 7] & 0x7f) == 0x7f) && ((p[8 * i + 6] & 0xf0) == 0xf0);
    case AS_DT_F32: return ((p[4 * i + 3] & 0x7f) == 0x7f) && (p[4 * i + 2] & 0x80);
    case AS_DT_F16: return (p[2 * i + 1] & 0x7c) == 0x7c;
    case AS_DT_BF16: return ((p[2 * i + 1] & 0x7f) == 0x7f) && (p[2 * i] & 0x80);
    default: return 0;
    }
}

as_status as_trace_check_finite(const as_trace *tr, char *err)
{
    return as_trace_check_finite_progress(tr, NULL, NULL, err);
}

/* 1 when elements [j0, j0 + n) of t hold a NaN/Inf (bad_at's test on whole words, which the
 * compiler vectorises: the exponent bits all ones). */
#define AS_FINITE_BLOCK 4096
static int block_bad(const as_tensor *t, uint64_t j0, uint64_t n)
{
    const unsigned char *p = t->data;
    unsigned acc = 0;
    switch (t->dtype) {
    case AS_DT_F64:
        for (uint64_t i = 0; i < n; i++) {
            uint64_t x;
            memcpy(&x, p + 8 * (j0 + i), 8);
            acc |= (x & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
        }
        break;
    case AS_DT_F32:
        for (uint64_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, p + 4 * (j0 + i), 4);
            acc |= (x & 0x7f800000u) == 0x7f800000u;
        }
        break;
    case AS_DT_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t x;
            memcpy(&x, p + 2 * (j0 + i), 2);
            acc |= (x & 0x7c00u) == 0x7c00u;
        }
        break;
    case AS_DT_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t x;
            memcpy(&x, p + 2 * (j0 + i), 2);
            acc |= (x & 0x7f80u) == 0x7f80u;
        }
        break;
    default: return 0;
    }
    return acc != 0;
}

/* The first NaN/Inf of a float tensor: AS_ERR_VALUE naming the file, tensor and element.
 * Blocks without one are passed over whole (block_bad); a block with one is searched element
 * by element. */
static as_status check_range(const as_trace *tr, const as_tensor *t, uint64_t j0, uint64_t j1,
                             void (*progress)(void *ctx, uint64_t done, uint64_t total),
                             void *ctx, uint64_t done, uint64_t total, char *err)
{
    for (uint64_t j = j0; j < j1; j++) {
        if (progress && (j & ((1u << 22) - 1)) == 0) progress(ctx, done + j, total);
        if ((j - j0) % AS_FINITE_BLOCK == 0) {
            uint64_t n = j1 - j < AS_FINITE_BLOCK ? j1 - j : AS_FINITE_BLOCK;
            if (!block_bad(t, j, n)) {
                j += n - 1; /* the progress points (multiples of 2^22) are block starts */
                continue;
            }
        }
        if (!bad_at(t, j)) continue;
        double v;
        as_tensor_read_f64(t, j, 1, &v);
        char where[160] = "";
        if (t->ndim == 3) {
            uint64_t c = j % (uint64_t)t->shape[2], r = (j / (uint64_t)t->shape[2]) % (uint64_t)t->shape[1],
                     h = j / ((uint64_t)t->shape[2] * (uint64_t)t->shape[1]);
            snprintf(where, sizeof where, " [head %llu, row %llu, col %llu]",
                     (unsigned long long)h, (unsigned long long)r, (unsigned long long)c);
        }
        return as_err_set(err, AS_ERR_VALUE, "%s: tensor '%s' holds %s at element %llu%s",
                          tr->path, t->name, isnan(v) ? "NaN" : "Inf", (unsigned long long)j,
                          where);
    }
    return AS_OK;
}

static as_status check_tensor(const as_trace *tr, const as_tensor *t,
                              void (*progress)(void *ctx, uint64_t done, uint64_t total),
                              void *ctx, uint64_t done, uint64_t total, char *err)
{
    return check_range(tr, t, 0, t->numel, progress, ctx, done, total, err);
}

as_status as_trace_check_finite_progress(const as_trace *tr,
                                         void (*progress)(void *ctx, uint64_t done,
                                                          uint64_t total),
                                         void *ctx, char *err)
{
    uint64_t total = 0, done = 0;
    for (size_t i = 0; i < tr->file.n_tensors; i++)
        if (as_dtype_is_float(tr->file.tensors[i].dtype)) total += tr->file.tensors[i].numel;
    for (size_t i = 0; i < tr->file.n_tensors; i++) {
        const as_tensor *t = &tr->file.tensors[i];
        if (!as_dtype_is_float(t->dtype)) continue;
        as_status st = check_tensor(tr, t, progress, ctx, done, total, err);
        if (st != AS_OK) return st;
        done += t->numel;
    }
    if (progress) progress(ctx, done, total);
    return AS_OK;
}

as_status as_layer_check_finite(const as_trace *tr, const as_layer *l, char *err)
{
    const as_tensor *ts[3] = {l->q, l->k, l->v};
    for (int i = 0; i < 3; i++) {
        if (!ts[i] || !as_dtype_is_float(ts[i]->dtype)) continue;
        as_status st = check_tensor(tr, ts[i], NULL, NULL, 0, 0, err);
        if (st != AS_OK) return st;
    }
    return AS_OK;
}

as_status as_layer_check_finite_kv(const as_trace *tr, const as_layer *l, int64_t kvh,
                                   char *err)
{
    if (l->hkv <= 0) return AS_OK;
    const int64_t group = l->hq / l->hkv;
    const as_tensor *ts[3] = {l->q, l->k, l->v};
    /* [heads, rows, d]: q's heads kvh * group .. (kvh + 1) * group, k's and v's head kvh */
    const int64_t h0[3] = {kvh * group, kvh, kvh}, h1[3] = {(kvh + 1) * group, kvh + 1, kvh + 1};
    for (int i = 0; i < 3; i++) {
        if (!ts[i] || !as_dtype_is_float(ts[i]->dtype) || ts[i]->ndim != 3) continue;
        const uint64_t per = (uint64_t)ts[i]->shape[1] * (uint64_t)ts[i]->shape[2];
        as_status st = check_range(tr, ts[i], (uint64_t)h0[i] * per, (uint64_t)h1[i] * per, NULL,
                                   NULL, 0, 0, err);
        if (st != AS_OK) return st;
    }
    return AS_OK;
}

void as_tensor_read_f64(const as_tensor *t, uint64_t first, uint64_t count, double *out)
{
    assert(first + count <= t->numel);
    as_dtype_to_f64(t->dtype, t->data + first * as_dtype_size(t->dtype), (size_t)count, out);
}

void as_tensor_read_f32(const as_tensor *t, uint64_t first, uint64_t count, float *out)
{
    assert(first + count <= t->numel);
    as_dtype_to_f32(t->dtype, t->data + first * as_dtype_size(t->dtype), (size_t)count, out);
}

void as_layer_read_k(const as_layer *l, int64_t h, int64_t n0, int64_t count, double *out)
{
    as_tensor_read_f64(l->k, (uint64_t)((h * l->n + n0) * l->d), (uint64_t)(count * l->d), out);
}

void as_layer_read_v(const as_layer *l, int64_t h, int64_t n0, int64_t count, double *out)
{
    as_tensor_read_f64(l->v, (uint64_t)((h * l->n + n0) * l->d), (uint64_t)(count * l->d), out);
}

void as_layer_read_q(const as_layer *l, int64_t h, int64_t qi, double *out)
{
    as_tensor_read_f64(l->q, (uint64_t)((h * l->t + qi) * l->d), (uint64_t)l->d, out);
}

int64_t as_layer_kv_head(const as_layer *l, int64_t h) { return h / (l->hq / l->hkv); }

int64_t as_layer_q_position(const as_layer *l, int64_t qi)
{
    if (!l->q_pos) return l->n - 1;
    double v;
    as_tensor_read_f64(l->q_pos, (uint64_t)qi, 1, &v);
    return (int64_t)v;
}

int64_t as_layer_visible(const as_layer *l, int64_t qi)
{
    return l->q_pos ? as_layer_q_position(l, qi) + 1 : l->n;
}

int as_layer_is_causal(const as_layer *l) { return l->q_pos != NULL; }

/* ---- a layer over the caller's memory ---------------------------------------------------- */

static void view_tensor(as_tensor *t, const char *name, as_dtype dt, int ndim, const int64_t *shape,
                        const void *data)
{
    memset(t, 0, sizeof *t);
    t->name = (char *)name;
    t->dtype = dt;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (uint64_t)shape[i];
    }
    t->data = data;
    t->nbytes = t->numel * as_dtype_size(dt);
}

as_status as_layer_view_init(as_layer_view *vw, int index, as_dtype dtype, int64_t hq,
                             int64_t hkv, int64_t t, int64_t n, int64_t d, double scale,
                             const void *q, const void *k, const void *v, const int64_t *q_pos,
                             char *err)
{
    memset(vw, 0, sizeof *vw);
    if (hq < 1 || hkv < 1 || t < 1 || n < 1 || d < 1)
        return as_err_set(err, AS_ERR_USAGE,
                          "layer view: sizes must be >= 1 (hq %lld, hkv %lld, t %lld, n %lld, d %lld)",
                          (long long)hq, (long long)hkv, (long long)t, (long long)n, (long long)d);
    if (hq % hkv != 0)
        return as_err_set(err, AS_ERR_USAGE,
                          "layer view: %lld query heads is not a multiple of %lld kv heads",
                          (long long)hq, (long long)hkv);
    if ((unsigned)dtype >= AS_DT_COUNT || !as_dtype_is_float(dtype))
        return as_err_set(err, AS_ERR_USAGE, "layer view: q, k and v must be a float dtype");
    if (!q || !k || !v) return as_err_set(err, AS_ERR_USAGE, "layer view: q, k and v are needed");
    /* element counts (and bytes) must fit in 63 bits */
    const double lim = 9.2e18 / 8;
    if ((double)hq * (double)t * (double)d > lim || (double)hkv * (double)n * (double)d > lim)
        return as_err_set(err, AS_ERR_USAGE, "layer view: too many elements");
    if (q_pos)
        for (int64_t i = 0; i < t; i++)
            if (q_pos[i] < 0 || q_pos[i] >= n)
                return as_err_set(err, AS_ERR_VALUE,
                                  "layer view: q_pos[%lld] = %lld is outside [0, %lld) (N keys)",
                                  (long long)i, (long long)q_pos[i], (long long)n);
    const int64_t sq[3] = {hq, t, d}, skv[3] = {hkv, n, d}, sp[1] = {t};
    view_tensor(&vw->q, "view.q", dtype, 3, sq, q);
    view_tensor(&vw->k, "view.k", dtype, 3, skv, k);
    view_tensor(&vw->v, "view.v", dtype, 3, skv, v);
    as_layer *l = &vw->layer;
    l->index = index;
    l->hq = hq;
    l->hkv = hkv;
    l->t = t;
    l->n = n;
    l->d = d;
    l->scale = scale > 0 && isfinite(scale) ? scale : 1.0 / sqrt((double)d);
    l->q = &vw->q;
    l->k = &vw->k;
    l->v = &vw->v;
    if (q_pos) {
        view_tensor(&vw->q_pos, "view.q_pos", AS_DT_I64, 1, sp, q_pos);
        l->q_pos = &vw->q_pos;
    }
    return AS_OK;
}

as_layer_view *as_layer_view_new(int index, as_dtype dtype, int64_t hq, int64_t hkv, int64_t t,
                                 int64_t n, int64_t d, double scale, const void *q, const void *k,
                                 const void *v, const int64_t *q_pos, char *err)
{
    as_layer_view *vw = malloc(sizeof *vw);
    if (!vw) {
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (as_layer_view_init(vw, index, dtype, hq, hkv, t, n, d, scale, q, k, v, q_pos, err) != AS_OK) {
        free(vw);
        return NULL;
    }
    return vw;
}

void as_layer_view_free(as_layer_view *vw) { free(vw); }
