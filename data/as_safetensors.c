#include "as_safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_outfile.h"

/* ------------------------------------------------------------------ parsing */

static int cmp_offset(const void *a, const void *b)
{
    const as_tensor *x = a, *y = b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : (x->nbytes > y->nbytes);
}

/* A JSON number that must be a non-negative integer representable exactly (<= 2^53).
 * Returns 0, -1 when it is not a non-negative integer, -2 when it is one above 2^53. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double x = v->valuedouble;
    if (!(x >= 0) || floor(x) != x) return -1;
    if (x > 9007199254740992.0) return -2;
    *out = (uint64_t)x;
    return 0;
}

void as_st_file_clear(as_st_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* First key that appears twice among the members of object o (NULL if none); O(n log n), so
 * a 100 MB header of tiny entries cannot stall the parser. *oom set on allocation failure. */
static const char *duplicate_key(const cJSON *o, int *oom)
{
    int n = cJSON_GetArraySize(o), k = 0;
    *oom = 0;
    if (n < 2) return NULL;
    const char **keys = malloc((size_t)n * sizeof *keys);
    if (!keys) {
        *oom = 1;
        return NULL;
    }
    for (const cJSON *e = o->child; e && k < n; e = e->next) keys[k++] = e->string ? e->string : "";
    qsort(keys, (size_t)k, sizeof *keys, cmp_str);
    const char *dup = NULL;
    for (int i = 1; i < k && !dup; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0) dup = keys[i];
    free(keys);
    return dup;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid (overlong forms,
 * surrogates and code points past U+10FFFF are invalid, as in RFC 3629). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = c & (0x7fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* What a strict JSON reader (the reference implementation's serde_json) requires and cJSON
 * does not check: UTF-8 text, no raw control characters inside strings or between tokens, no
 * "\u0000" (it would cut a C string short, so two different names could look alike). NUL
 * and whitespace are allowed as trailing padding. */
static as_status check_header_text(const unsigned char *h, size_t n, char *err)
{
    int in_str = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = h[i];
        if (c >= 0x80) {
            size_t k = utf8_len(h + i, n - i);
            if (!k)
                return as_err_set(err, AS_ERR_FORMAT, "header is not valid UTF-8 (byte %zu)", i);
            i += k;
            continue;
        }
        if (in_str) {
            if (c == '"') in_str = 0;
            else if (c == '\\') {
                if (i + 5 < n && h[i + 1] == 'u' && memcmp(h + i + 2, "0000", 4) == 0)
                    return as_err_set(err, AS_ERR_FORMAT,
                                      "header string holds \\u0000 (byte %zu)", i);
                i += 2;
                continue;
            } else if (c < 0x20)
                return as_err_set(err, AS_ERR_FORMAT,
                                  "header string holds a raw control character (byte %zu)", i);
        } else if (c == '"') {
            in_str = 1;
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            for (size_t j = i; j < n; j++)
                if (h[j] != 0 && h[j] != ' ' && h[j] != '\t' && h[j] != '\n' && h[j] != '\r')
                    return as_err_set(err, AS_ERR_FORMAT,
                                      "header holds a control character (byte %zu)", i);
            break; /* trailing padding */
        }
        i++;
    }
    return AS_OK;
}

static as_status parse_tensor(const cJSON *e, const unsigned char *data, uint64_t data_len,
                              as_tensor *t, char *err)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return as_err_set(err, AS_ERR_FORMAT, "tensor '%s': entry is not a JSON object", name);
    static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
    for (int k = 0; k < 3; k++) {
        int seen = 0;
        for (const cJSON *f = e->child; f; f = f->next)
            seen += f->string && strcmp(f->string, fields[k]) == 0;
        if (seen > 1)
            return as_err_set(err, AS_ERR_FORMAT, "tensor '%s': duplicate field '%s'", name,
                              fields[k]);
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of))
        return as_err_set(err, AS_ERR_FORMAT,
                          "tensor '%s': needs string 'dtype', array 'shape' and 'data_offsets'",
                          name);
    if (as_dtype_parse(dt->valuestring, &t->dtype) != 0)
        return as_err_set(err, AS_ERR_FORMAT,
                          "tensor '%s': unsupported dtype '%s' (F64, F32, F16, BF16, I32, I64)",
                          name, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > AS_MAX_DIMS)
        return as_err_set(err, AS_ERR_FORMAT, "tensor '%s': rank %d exceeds %d", name, nd,
                          AS_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t s;
        int r = json_uint(cJSON_GetArrayItem(sh, i), &s);
        if (r == -2)
            return as_err_set(err, AS_ERR_FORMAT,
                              "tensor '%s': shape[%d] = %.0f is too large (at most 2^53)", name,
                              i, cJSON_GetArrayItem(sh, i)->valuedouble);
        if (r != 0)
            return as_err_set(err, AS_ERR_FORMAT,
                              "tensor '%s': shape[%d] is not a non-negative integer", name, i);
        t->shape[i] = (int64_t)s;
        if (s != 0 && numel > UINT64_MAX / s)
            return as_err_set(err, AS_ERR_FORMAT, "tensor '%s': shape product overflows", name);
        numel *= s;
    }
    t->numel = numel;
    uint64_t b, en, isz = as_dtype_size(t->dtype);
    if (cJSON_GetArraySize(of) != 2 || json_uint(cJSON_GetArrayItem(of, 0), &b) != 0 ||
        json_uint(cJSON_GetArrayItem(of, 1), &en) != 0)
        return as_err_set(err, AS_ERR_FORMAT,
                          "tensor '%s': data_offsets must be two non-negative integers", name);
    if (en < b)
        return as_err_set(err, AS_ERR_FORMAT, "tensor '%s': data_offsets end %llu < begin %llu",
                          name, (unsigned long long)en, (unsigned long long)b);
    if (en > data_len)
        return as_err_set(err, AS_ERR_FORMAT,
                          "tensor '%s': data_offsets [%llu, %llu) past the end of the data area "
                          "(%llu bytes; file truncated?)",
                          name, (unsigned long long)b, (unsigned long long)en,
                          (unsigned long long)data_len);
    if (numel > UINT64_MAX / isz || numel * isz != en - b)
        return as_err_set(err, AS_ERR_FORMAT,
                          "tensor '%s': shape needs %llu x %llu bytes but data_offsets span %llu",
                          name, (unsigned long long)numel, (unsigned long long)isz,
                          (unsigned long long)(en - b));
    t->data = data + b;
    t->nbytes = en - b;
    return AS_OK;
}

as_status as_st_parse(const unsigned char *buf, size_t len, as_st_file *out, char *err)
{
    memset(out, 0, sizeof *out);
    if (len < 8)
        return as_err_set(err, AS_ERR_FORMAT,
                          "file is %zu bytes, too short for the 8-byte header length", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > AS_ST_MAX_HEADER)
        return as_err_set(err, AS_ERR_FORMAT, "header length %llu exceeds the %u-byte limit",
                          (unsigned long long)hlen, AS_ST_MAX_HEADER);
    if (hlen > len - 8)
        return as_err_set(err, AS_ERR_FORMAT,
                          "header length %llu runs past the end of the file (%zu bytes)",
                          (unsigned long long)hlen, len);
    if (hlen < 2 || buf[8] != '{')
        return as_err_set(err, AS_ERR_FORMAT, "header does not start with a JSON object");
    as_status st = check_header_text(buf + 8, (size_t)hlen, err);
    if (st != AS_OK) return st;
    /* parse a NUL-terminated copy of the header (never the map itself): cJSON must not be
     * able to read past it whatever the bytes are */
    char *hdr = malloc((size_t)hlen + 1);
    if (!hdr) return as_err_set(err, AS_ERR_NOMEM, "out of memory (header of %llu bytes)",
                                (unsigned long long)hlen);
    memcpy(hdr, buf + 8, (size_t)hlen);
    hdr[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        size_t off = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        cJSON_Delete(root);
        free(hdr);
        return as_err_set(err, AS_ERR_FORMAT, "header is not valid JSON (near byte %zu)", off);
    }
    for (const char *p = end; p < hdr + hlen; p++) /* the format pads with spaces */
        if (*p != ' ' && *p != '\0' && *p != '\n' && *p != '\t' && *p != '\r') {
            cJSON_Delete(root);
            free(hdr);
            return as_err_set(err, AS_ERR_FORMAT, "trailing garbage after the header JSON");
        }
    free(hdr); /* cJSON keeps its own copies of every string */
    const unsigned char *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    int n = cJSON_GetArraySize(root);
    out->tensors = calloc((size_t)n + 1, sizeof *out->tensors);
    out->meta = NULL;
    if (!out->tensors) {
        cJSON_Delete(root);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    int oom = 0;
    const char *dup = duplicate_key(root, &oom);
    if (oom || dup) {
        st = oom ? as_err_set(err, AS_ERR_NOMEM, "out of memory")
                 : as_err_set(err, AS_ERR_FORMAT, "duplicate key '%s' in header", dup);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                st = as_err_set(err, AS_ERR_FORMAT, "__metadata__ is not a JSON object");
                goto done;
            }
            if ((dup = duplicate_key(e, &oom)) != NULL || oom) {
                st = oom ? as_err_set(err, AS_ERR_NOMEM, "out of memory")
                         : as_err_set(err, AS_ERR_FORMAT, "duplicate key '%s' in __metadata__",
                                      dup);
                goto done;
            }
            int m = cJSON_GetArraySize(e);
            out->meta = calloc((size_t)m + 1, sizeof *out->meta);
            if (!out->meta) {
                st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
                goto done;
            }
            const cJSON *kv;
            cJSON_ArrayForEach(kv, e)
            {
                if (!cJSON_IsString(kv)) {
                    st = as_err_set(err, AS_ERR_FORMAT, "__metadata__ value '%s' is not a string",
                                    kv->string);
                    goto done;
                }
                as_meta *mm = &out->meta[out->n_meta];
                mm->key = dupstr(kv->string);
                mm->value = dupstr(kv->valuestring);
                out->n_meta++;
                if (!mm->key || !mm->value) {
                    st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
                    goto done;
                }
            }
            continue;
        }
        as_tensor *t = &out->tensors[out->n_tensors];
        if ((st = parse_tensor(e, data, data_len, t, err)) != AS_OK) goto done;
        if (!(t->name = dupstr(e->string))) {
            st = as_err_set(err, AS_ERR_NOMEM, "out of memory");
            goto done;
        }
        out->n_tensors++;
    }
    /* offsets: sorted, contiguous, non-overlapping, covering the data area exactly */
    qsort(out->tensors, out->n_tensors, sizeof *out->tensors, cmp_offset);
    uint64_t pos = 0;
    for (size_t i = 0; i < out->n_tensors; i++) {
        const as_tensor *t = &out->tensors[i];
        uint64_t b = (uint64_t)(t->data - data);
        if (b < pos) {
            st = as_err_set(err, AS_ERR_FORMAT, "tensor '%s': data overlaps the previous tensor",
                            t->name);
            goto done;
        }
        if (b > pos) {
            st = as_err_set(err, AS_ERR_FORMAT,
                            "tensor '%s': gap of %llu bytes before its data (offsets must be "
                            "contiguous)",
                            t->name, (unsigned long long)(b - pos));
            goto done;
        }
        pos = b + t->nbytes;
    }
    if (pos != data_len)
        st = as_err_set(err, AS_ERR_FORMAT,
                        "data area is %llu bytes but tensors cover %llu (trailing bytes)",
                        (unsigned long long)data_len, (unsigned long long)pos);
done:
    cJSON_Delete(root);
    if (st != AS_OK) as_st_file_clear(out);
    return st;
}

const as_tensor *as_st_find(const as_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* ------------------------------------------------------------------ writer */

struct as_st_writer {
    as_outfile *out;
    uint64_t total, written;
};

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_json_string(sbuf *b, const char *s)
{
    cJSON *j = cJSON_CreateString(s);
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    if (t)
        sb_str(b, t);
    else
        b->oom = 1;
    free(t);
    cJSON_Delete(j);
}

as_st_writer *as_st_writer_open(const char *path, const as_st_spec *specs, size_t n_specs,
                                const as_meta *meta, size_t n_meta, char *err)
{
    for (size_t i = 0; i < n_meta; i++) {
        int bad = !meta[i].key || !meta[i].value;
        for (size_t j = 0; !bad && j < i; j++) bad = strcmp(meta[j].key, meta[i].key) == 0;
        if (bad) {
            as_err_set(err, AS_ERR_USAGE, "%s: metadata key '%s' is missing, has no value or "
                       "is used twice", path, meta[i].key ? meta[i].key : "(null)");
            return NULL;
        }
    }
    sbuf h = {0};
    char num[64];
    uint64_t off = 0;
    sb_str(&h, "{");
    if (n_meta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_string(&h, meta[i].key);
            sb_str(&h, ":");
            sb_json_string(&h, meta[i].value);
        }
        sb_str(&h, "}");
    }
    for (size_t i = 0; i < n_specs; i++) {
        const as_st_spec *s = &specs[i];
        const char *bad = NULL;
        if (!s->name || !*s->name || strcmp(s->name, "__metadata__") == 0)
            bad = "an empty or reserved name";
        else if (s->ndim < 0 || s->ndim > AS_MAX_DIMS || as_dtype_size(s->dtype) == 0)
            bad = "a bad rank or dtype";
        uint64_t numel = 1, nb = 0;
        for (int k = 0; !bad && k < s->ndim; k++) {
            uint64_t d = (uint64_t)s->shape[k];
            if (s->shape[k] < 0 || s->shape[k] > (int64_t)9007199254740992LL)
                bad = "a negative or too large dimension";
            else if (d && numel > UINT64_MAX / d)
                bad = "a shape whose product overflows";
            else
                numel *= d;
        }
        if (!bad) {
            uint64_t isz = as_dtype_size(s->dtype);
            if (numel > (UINT64_MAX - off) / isz) bad = "too many bytes";
            else nb = numel * isz;
        }
        for (size_t j = 0; !bad && j < i; j++)
            if (strcmp(specs[j].name, s->name) == 0) bad = "a name used twice";
        if (bad) {
            free(h.p);
            as_err_set(err, AS_ERR_USAGE, "%s: tensor '%s' has %s", path,
                       s->name ? s->name : "(null)", bad);
            return NULL;
        }
        if (n_meta || i) sb_str(&h, ",");
        sb_json_string(&h, s->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, as_dtype_name(s->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int k = 0; k < s->ndim; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)s->shape[k]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        sb_str(&h, num);
        off += nb;
    }
    sb_str(&h, "}");
    while (!h.oom && h.n % 8) sb_str(&h, " ");
    if (!h.oom && h.n > AS_ST_MAX_HEADER) {
        free(h.p);
        as_err_set(err, AS_ERR_USAGE, "%s: header of %zu bytes exceeds the %u-byte limit", path,
                   h.n, AS_ST_MAX_HEADER);
        return NULL;
    }
    as_st_writer *w = calloc(1, sizeof *w);
    if (h.oom || !w) {
        free(h.p);
        free(w);
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (as_outfile_open(path, &w->out, err) != AS_OK) {
        free(h.p);
        free(w);
        return NULL;
    }
    w->total = off;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    w->written = 0;
    uint64_t save = w->total;
    w->total = UINT64_MAX; /* let the header through the byte count */
    as_status st = as_st_writer_write(w, len8, 8, err);
    if (st == AS_OK) st = as_st_writer_write(w, h.p, h.n, err);
    free(h.p);
    if (st != AS_OK) {
        as_st_writer_abort(w);
        return NULL;
    }
    w->total = save;
    w->written = 0;
    return w;
}

as_status as_st_writer_write(as_st_writer *w, const void *bytes, size_t nbytes, char *err)
{
    if (w->written + nbytes > w->total)
        return as_err_set(err, AS_ERR_USAGE, "%s: more data written than the tensors declare",
                          as_outfile_path(w->out));
    as_status st = as_outfile_write(w->out, bytes, nbytes, err);
    if (st == AS_OK) w->written += nbytes;
    return st;
}

as_status as_st_writer_finish(as_st_writer *w, char *err)
{
    as_status st;
    if (w->written != w->total) {
        st = as_err_set(err, AS_ERR_USAGE, "%s: %llu of %llu data bytes written",
                        as_outfile_path(w->out), (unsigned long long)w->written,
                        (unsigned long long)w->total);
        as_outfile_abort(w->out);
    } else {
        st = as_outfile_commit(w->out, err);
    }
    free(w);
    return st;
}

void as_st_writer_abort(as_st_writer *w)
{
    if (!w) return;
    as_outfile_abort(w->out);
    free(w);
}
