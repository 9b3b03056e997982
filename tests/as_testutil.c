#include "as_testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "as_safetensors.h"
#include "as_trace.h"

static char tmpdir[256];

static void cleanup(void)
{
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

const char *as_test_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/attnscope-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(cleanup);
    }
    return tmpdir;
}

char *as_test_path(const char *name)
{
    const char *d = as_test_tmpdir();
    size_t n = strlen(d) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", d, name);
    return p;
}

int as_test_count_tmp_files(void)
{
    DIR *d = opendir(as_test_tmpdir());
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) n += strstr(de->d_name, ".tmp") != NULL;
    closedir(d);
    return n;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double as_test_uniform(uint64_t *s) { return ((double)(splitmix(s) >> 11) + 0.5) * 0x1p-53; }

double as_test_normal(uint64_t *s)
{
    double u1 = as_test_uniform(s), u2 = as_test_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int as_test_write_trace(const char *path, const as_test_trace_spec *sp)
{
    int nl = sp->n_layers;
    int per = sp->causal ? 4 : 3;
    as_st_spec *specs = calloc((size_t)(nl * per), sizeof *specs);
    char (*names)[32] = calloc((size_t)(nl * per), sizeof *names);
    int k = 0;
    for (int L = 0; L < nl; L++) {
        const char *parts[4] = {"q", "k", "v", "q_pos"};
        for (int p = 0; p < per; p++, k++) {
            snprintf(names[k], 32, "layers.%d.%s", L, parts[p]);
            specs[k].name = names[k];
            if (p == 3) {
                specs[k].dtype = AS_DT_I32;
                specs[k].ndim = 1;
                specs[k].shape[0] = sp->t;
            } else {
                specs[k].dtype = sp->dtype;
                specs[k].ndim = 3;
                specs[k].shape[0] = p == 0 ? sp->hq : sp->hkv;
                specs[k].shape[1] = p == 0 ? sp->t : sp->n;
                specs[k].shape[2] = sp->d;
            }
        }
    }
    char scale[64];
    as_meta meta[5] = {{"format", AS_TRACE_FORMAT_NAME},
                       {"format_version", AS_TRACE_FORMAT_VERSION},
                       {"model", (char *)(sp->model ? sp->model : "synthetic")},
                       {"rope_applied", "false"},
                       {"scale", scale}};
    size_t nmeta = 4;
    if (sp->scale > 0) {
        snprintf(scale, sizeof scale, "%.17g", sp->scale);
        nmeta = 5;
    }
    char err[AS_ERR_LEN];
    as_st_writer *w = as_st_writer_open(path, specs, (size_t)(nl * per), meta, nmeta, err);
    int rc = 0;
    if (!w) {
        fprintf(stderr, "as_test_write_trace: %s\n", err);
        rc = -1;
        goto out;
    }
    uint64_t st = sp->seed ? sp->seed : 1;
    size_t isz = as_dtype_size(sp->dtype);
    unsigned char *buf = malloc((size_t)sp->d * 8 + 8);
    for (int L = 0; L < nl && rc == 0; L++) {
        const char which[3] = {'q', 'k', 'v'};
        for (int p = 0; p < 3 && rc == 0; p++) {
            int64_t H = p == 0 ? sp->hq : sp->hkv, R = p == 0 ? sp->t : sp->n;
            double *row = malloc((size_t)sp->d * sizeof *row);
            for (int64_t h = 0; h < H && rc == 0; h++)
                for (int64_t r = 0; r < R && rc == 0; r++) {
                    for (int64_t c = 0; c < sp->d; c++)
                        row[c] = sp->gen ? sp->gen(sp->ctx, L, which[p], h, r, c)
                                         : as_test_normal(&st);
                    as_dtype_from_f64(sp->dtype, row, (size_t)sp->d, buf);
                    if (as_st_writer_write(w, buf, (size_t)sp->d * isz, err) != AS_OK) {
                        fprintf(stderr, "as_test_write_trace: %s\n", err);
                        rc = -1;
                    }
                }
            free(row);
        }
        if (sp->causal && rc == 0) {
            for (int64_t i = 0; i < sp->t; i++) {
                int32_t pos = (int32_t)(sp->n - sp->t + i);
                unsigned char b[4] = {(unsigned char)pos, (unsigned char)(pos >> 8),
                                      (unsigned char)(pos >> 16), (unsigned char)(pos >> 24)};
                if (as_st_writer_write(w, b, 4, err) != AS_OK) rc = -1;
            }
        }
    }
    free(buf);
    if (rc == 0) {
        if (as_st_writer_finish(w, err) != AS_OK) {
            fprintf(stderr, "as_test_write_trace: %s\n", err);
            rc = -1;
        }
    } else {
        as_st_writer_abort(w);
    }
out:
    free(specs);
    free(names);
    return rc;
}

int as_test_run_cli(const char *args, char **out)
{
    const char *bin = getenv("AS_BIN");
    if (!bin) bin = "./attnscope";
    size_t n = strlen(bin) + strlen(args) + 32;
    char *cmd = malloc(n);
    snprintf(cmd, n, "'%s' %s", bin, args);
    FILE *f = popen(cmd, "r");
    free(cmd);
    if (!f) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += k;
        if (cap - len < 1024) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int status = pclose(f);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

as_trace *as_test_open_new_trace(const char *name, const as_test_trace_spec *spec)
{
    char *p = as_test_path(name), err[AS_ERR_LEN];
    as_trace *tr = p && as_test_write_trace(p, spec) == 0 ? as_trace_open(p, err) : NULL;
    if (p && !tr) fprintf(stderr, "as_test_open_new_trace: %s\n", name);
    free(p);
    return tr;
}
