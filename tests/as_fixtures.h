/* as_fixtures: hand-built (possibly malformed) safetensors and .npy bytes for the data-module
 * tests (test_safetensors.c, test_npy.c, test_trace.c, test_cli.c, test_interop.c).
 * Header-only (static functions) so every test executable stays one .c file plus as_testutil. */
#ifndef AS_FIXTURES_H
#define AS_FIXTURES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    unsigned char *p;
    size_t n;
} fx_buf;

static inline void fx_put(fx_buf *b, const void *s, size_t n)
{
    b->p = realloc(b->p, b->n + n + 1);
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
}

static inline void fx_u64(fx_buf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++) x[i] = (unsigned char)(v >> (8 * i));
    fx_put(b, x, 8);
}

/* A safetensors file: 8-byte little-endian length of json (as given, no padding), json, data. */
static inline fx_buf fx_st(const char *json, const void *data, size_t dlen)
{
    fx_buf b = {0};
    fx_u64(&b, strlen(json));
    fx_put(&b, json, strlen(json));
    fx_put(&b, data, dlen);
    return b;
}

/* Same with an explicit header length field (to lie about it). */
static inline fx_buf fx_st_len(uint64_t hlen, const char *json, const void *data, size_t dlen)
{
    fx_buf b = {0};
    fx_u64(&b, hlen);
    fx_put(&b, json, strlen(json));
    fx_put(&b, data, dlen);
    return b;
}

/* A .npy file of format version major.0 with the given header dict text (padded with spaces
 * and a newline to a multiple of 64 bytes, as NumPy does) followed by data. */
static inline fx_buf fx_npy(int major, const char *dict, const void *data, size_t dlen)
{
    fx_buf b = {0};
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = pre + dl + 1, pad = (64 - total % 64) % 64, hlen = dl + pad + 1;
    unsigned char m[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0,
                           (unsigned char)hlen, (unsigned char)(hlen >> 8),
                           (unsigned char)(hlen >> 16), (unsigned char)(hlen >> 24)};
    fx_put(&b, m, pre);
    fx_put(&b, dict, dl);
    for (size_t i = 0; i < pad; i++) fx_put(&b, " ", 1);
    fx_put(&b, "\n", 1);
    fx_put(&b, data, dlen);
    return b;
}

static inline int fx_write(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = (n == 0 || fwrite(p, 1, n, f) == n);
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static inline int fx_write_buf(const char *path, fx_buf b)
{
    int r = fx_write(path, b.p, b.n);
    free(b.p);
    return r;
}

/* Whole file into a malloc'd NUL-terminated buffer (NULL if unreadable). */
static inline char *fx_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, k;
    char *p = malloc(cap);
    while ((k = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (cap - n < 2) p = realloc(p, cap *= 2);
    }
    fclose(f);
    p[n] = '\0';
    if (len) *len = n;
    return p;
}

/* Little-endian float32 / float16 bytes of small arrays. */
static inline void fx_f32le(const float *x, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        for (int k = 0; k < 4; k++) out[4 * i + (size_t)k] = (unsigned char)(u >> (8 * k));
    }
}

/* Run the CLI ($AS_BIN) with args through the shell, stdout and stderr to separate strings
 * (caller frees). Returns the exit status, or -1 (e.g. killed by a signal). */
static inline int fx_run(const char *args, char **out, char **err)
{
    const char *bin = getenv("AS_BIN");
    if (!bin) bin = "./attnscope";
    char of[] = "/tmp/as_fx_outXXXXXX", ef[] = "/tmp/as_fx_errXXXXXX";
    int fo = mkstemp(of), fe = mkstemp(ef);
    if (fo < 0 || fe < 0) { /* callers read *out and *err: give them empty strings */
        if (fo >= 0) close(fo), unlink(of);
        if (fe >= 0) close(fe), unlink(ef);
        if (out) *out = calloc(1, 1);
        if (err) *err = calloc(1, 1);
        return -1;
    }
    close(fo);
    close(fe);
    size_t n = strlen(bin) + strlen(args) + 128;
    char *cmd = malloc(n);
    snprintf(cmd, n, "'%s' %s >%s 2>%s </dev/null", bin, args, of, ef);
    int st = system(cmd);
    free(cmd);
    char *o = fx_slurp(of, NULL), *e = fx_slurp(ef, NULL);
    unlink(of);
    unlink(ef);
    if (out) *out = o;
    else free(o);
    if (err) *err = e;
    else free(e);
    return (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
}

static inline int fx_count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

/* One tensor of a hand-built safetensors file: data NULL means nbytes zero bytes. */
typedef struct {
    const char *name, *dtype, *shape; /* shape as JSON, e.g. "[2,3,4]" */
    size_t nbytes;
    const void *data;
} fx_t;

/* A safetensors file holding ts[0..n) laid out contiguously in order; meta is the JSON text of
 * __metadata__ (NULL: none). */
static inline fx_buf fx_st_tensors(const fx_t *ts, int n, const char *meta)
{
    size_t cap = 256 + (meta ? strlen(meta) : 0), off = 0, used = 0;
    for (int i = 0; i < n; i++) cap += strlen(ts[i].name) + strlen(ts[i].shape) + 96;
    char *j = malloc(cap);
    used += (size_t)snprintf(j + used, cap - used, "{");
    if (meta) used += (size_t)snprintf(j + used, cap - used, "\"__metadata__\":%s", meta);
    for (int i = 0; i < n; i++) {
        used += (size_t)snprintf(j + used, cap - used,
                                 "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                                 (meta || i) ? "," : "", ts[i].name, ts[i].dtype, ts[i].shape, off,
                                 off + ts[i].nbytes);
        off += ts[i].nbytes;
    }
    snprintf(j + used, cap - used, "}");
    unsigned char *data = calloc(1, off + 1);
    for (size_t i = 0, o = 0; i < (size_t)n; o += ts[i].nbytes, i++)
        if (ts[i].data) memcpy(data + o, ts[i].data, ts[i].nbytes);
    fx_buf b = fx_st(j, data, off);
    free(j);
    free(data);
    return b;
}

#endif
