#include "cli_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "as_safetensors.h"
#include "cli_help.h"

void as_cli_common_init(as_cli_common *c)
{
    memset(c, 0, sizeof *c);
    c->layer = -1;
    c->head = -1;
    c->fmt = AS_FMT_TABLE;
}

int as_cli_parse_int(const char *cmd, const char *opt, const char *arg, long lo, long hi,
                     long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end != '\0' || v < lo || v > hi) {
        as_cli_usage(cmd, "--%s expects an integer in [%ld, %ld], got '%s'", opt, lo, hi, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int as_cli_parse_u64(const char *cmd, const char *opt, const char *arg, uint64_t *out)
{
    int hex = arg[0] == '0' && (arg[1] == 'x' || arg[1] == 'X');
    const char *p = hex ? arg + 2 : arg;
    uint64_t v = 0;
    int ok = *p != '\0';
    for (; ok && *p; p++) {
        unsigned dgt;
        if (*p >= '0' && *p <= '9') dgt = (unsigned)(*p - '0');
        else if (hex && *p >= 'a' && *p <= 'f') dgt = (unsigned)(*p - 'a' + 10);
        else if (hex && *p >= 'A' && *p <= 'F') dgt = (unsigned)(*p - 'A' + 10);
        else {
            ok = 0;
            break;
        }
        unsigned base = hex ? 16 : 10;
        if (v > (UINT64_MAX - dgt) / base) ok = 0; /* above 2^64 - 1 */
        else v = v * base + dgt;
    }
    if (!ok) {
        as_cli_usage(cmd, "--%s expects an integer in [0, 2^64-1] (decimal or 0x hex), got '%s'",
                     opt, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int as_cli_parse_real(const char *cmd, const char *opt, const char *arg, double lo, double hi,
                      int open, double *out)
{
    char *end = NULL;
    double v = strtod(arg, &end);
    int ok = end != arg && *end == '\0' && isfinite(v) &&
             ((open & AS_OPEN_LO) ? v > lo : v >= lo) && ((open & AS_OPEN_HI) ? v < hi : v <= hi);
    if (!ok) {
        char range[96];
        if (isinf(hi))
            snprintf(range, sizeof range, "a number %s %g", (open & AS_OPEN_LO) ? ">" : ">=", lo);
        else
            snprintf(range, sizeof range, "a number in %c%g, %g%c", (open & AS_OPEN_LO) ? '(' : '[',
                     lo, hi, (open & AS_OPEN_HI) ? ')' : ']');
        as_cli_usage(cmd, "--%s expects %s, got '%s'", opt, range, arg);
        return -1;
    }
    *out = v;
    return 0;
}

/* --progress: set by any command's option parsing, read by as_progress_new */
static int progress_forced;

int as_cli_common_opt(as_cli_common *c, const char *cmd, int opt, const char *arg)
{
    long v;
    switch (opt) {
    case AS_OPT_LAYER:
        if (as_cli_parse_int(cmd, "layer", arg, 0, INT_MAX, &v)) return -1;
        c->layer = (int)v;
        return 1;
    case AS_OPT_HEAD:
        if (as_cli_parse_int(cmd, "head", arg, 0, INT_MAX, &v)) return -1;
        c->head = (int)v;
        return 1;
    case AS_OPT_JSON:
    case AS_OPT_CSV: {
        as_fmt f = opt == AS_OPT_JSON ? AS_FMT_JSON : AS_FMT_CSV;
        if (c->fmt != AS_FMT_TABLE && c->fmt != f) {
            as_cli_usage(cmd, "--json and --csv exclude each other: give one");
            return -1;
        }
        c->fmt = f;
        return 1;
    }
    case AS_OPT_QUIET: c->quiet = 1; return 1;
    case AS_OPT_PROGRESS:
        c->progress = 1;
        progress_forced = 1;
        return 1;
    case AS_OPT_HELP: as_cli_print_help(cmd, stdout); return 2;
    default: return 0;
    }
}

int as_cli_fail(const char *cmd, as_status st, const char *msg)
{
    fprintf(stderr, "attnscope %s: %s\n", cmd, msg);
    return as_status_exit_code(st);
}

int as_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "attnscope %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'attnscope help %s')\n", cmd);
    va_end(ap);
    return 2;
}

int as_cli_bad_option(const char *cmd, int opt, char **argv)
{
    if (opt == ':') return as_cli_usage(cmd, "option '%s' needs a value", argv[optind - 1]);
    return as_cli_usage(cmd, "unknown option '%s'", argv[optind - 1]);
}

as_trace *as_cli_open_trace(const char *cmd, const char *path, int check_finite, int *code)
{
    char err[AS_ERR_LEN];
    as_status st = AS_OK;
    as_trace *tr = as_trace_open_status(path, &st, err);
    if (!tr) {
        *code = as_cli_fail(cmd, st, err);
        return NULL;
    }
    if (check_finite && (st = as_trace_check_finite(tr, err)) != AS_OK) {
        *code = as_cli_fail(cmd, st, err);
        as_trace_free(tr);
        return NULL;
    }
    *code = 0;
    return tr;
}

/* ---------------------------------------------------------------- records */
typedef struct {
    char *kind, *title;
    char **cols, **heads, **fmts;
    int ncols;
} as_table_spec;

struct as_out {
    as_fmt fmt;
    cJSON *doc;     /* top-level object */
    cJSON *records; /* array inside doc */
    as_table_spec *tables;
    int ntables;
};

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) {
        fputs("attnscope: out of memory\n", stderr);
        exit(1);
    }
    return memcpy(d, s, n);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fputs("attnscope: out of memory\n", stderr);
        exit(1);
    }
    return q;
}

as_out *as_out_new(as_fmt fmt, const char *command, const char *trace_path)
{
    as_out *o = xrealloc(NULL, sizeof *o);
    memset(o, 0, sizeof *o);
    o->fmt = fmt;
    o->doc = cJSON_CreateObject();
    cJSON_AddStringToObject(o->doc, "attnscope", AS_VERSION);
    cJSON_AddStringToObject(o->doc, "command", command);
    if (trace_path) cJSON_AddStringToObject(o->doc, "trace", trace_path);
    o->records = cJSON_AddArrayToObject(o->doc, "records");
    return o;
}

void as_out_table(as_out *o, const char *kind, const char *title, const char *const *cols,
                  const char *const *heads, const char *const *fmts)
{
    o->tables = xrealloc(o->tables, (size_t)(o->ntables + 1) * sizeof *o->tables);
    as_table_spec *t = &o->tables[o->ntables++];
    int n = 0;
    while (cols[n]) n++;
    t->kind = xstrdup(kind);
    t->title = xstrdup(title ? title : kind);
    t->ncols = n;
    t->cols = xrealloc(NULL, (size_t)n * sizeof(char *));
    t->heads = xrealloc(NULL, (size_t)n * sizeof(char *));
    t->fmts = xrealloc(NULL, (size_t)n * sizeof(char *));
    for (int i = 0; i < n; i++) {
        t->cols[i] = xstrdup(cols[i]);
        t->heads[i] = xstrdup(heads ? heads[i] : cols[i]);
        t->fmts[i] = xstrdup(fmts ? fmts[i] : "%g");
    }
}

void as_out_add(as_out *o, cJSON *rec) { cJSON_AddItemToArray(o->records, rec); }

void as_out_meta(as_out *o, const char *key, cJSON *value)
{
    cJSON_AddItemToObject(o->doc, key, value);
}

cJSON *as_rec_new(const char *kind, int layer, int64_t head)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "record", kind);
    cJSON_AddNumberToObject(r, "layer", layer);
    if (head >= 0) cJSON_AddNumberToObject(r, "head", (double)head);
    return r;
}

/* Format one cell of a record as text (number with fmt, string as is, null/absent empty). */
static void cell_text(const cJSON *v, const char *fmt, char *buf, size_t n)
{
    buf[0] = '\0';
    if (!v || cJSON_IsNull(v)) return;
    if (cJSON_IsNumber(v)) {
        double x = v->valuedouble;
        if (strchr(fmt, 'd') || strchr(fmt, 'i'))
            snprintf(buf, n, fmt, (int)x);
        else if (isnan(x))
            snprintf(buf, n, "nan");
        else
            snprintf(buf, n, fmt, x);
    } else if (cJSON_IsString(v)) {
        snprintf(buf, n, "%s", v->valuestring);
    } else if (cJSON_IsBool(v)) {
        snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    } else {
        char *s = cJSON_PrintUnformatted(v);
        snprintf(buf, n, "%s", s ? s : "");
        free(s);
    }
}

static void print_table(const as_table_spec *t, const cJSON *records, FILE *f)
{
    int nrows = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, records)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(r, "record");
        if (cJSON_IsString(k) && strcmp(k->valuestring, t->kind) == 0) nrows++;
    }
    if (nrows == 0) return;
    /* two passes: widths, then rows */
    int *w = calloc((size_t)t->ncols, sizeof *w);
    char buf[256];
    for (int c = 0; c < t->ncols; c++) w[c] = (int)strlen(t->heads[c]);
    cJSON_ArrayForEach(r, records)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(r, "record");
        if (!cJSON_IsString(k) || strcmp(k->valuestring, t->kind) != 0) continue;
        for (int c = 0; c < t->ncols; c++) {
            cell_text(cJSON_GetObjectItemCaseSensitive(r, t->cols[c]), t->fmts[c], buf, sizeof buf);
            if ((int)strlen(buf) > w[c]) w[c] = (int)strlen(buf);
        }
    }
    fprintf(f, "%s\n", t->title);
    for (int c = 0; c < t->ncols; c++) fprintf(f, "%s%*s", c ? "  " : "", w[c], t->heads[c]);
    fputc('\n', f);
    for (int c = 0; c < t->ncols; c++) {
        fprintf(f, "%s", c ? "  " : "");
        for (int i = 0; i < w[c]; i++) fputc('-', f);
    }
    fputc('\n', f);
    cJSON_ArrayForEach(r, records)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(r, "record");
        if (!cJSON_IsString(k) || strcmp(k->valuestring, t->kind) != 0) continue;
        for (int c = 0; c < t->ncols; c++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, t->cols[c]);
            cell_text(v, t->fmts[c], buf, sizeof buf);
            /* numbers right-aligned, text left-aligned (the last column unpadded) */
            if (cJSON_IsString(v))
                fprintf(f, "%s%-*s", c ? "  " : "", c == t->ncols - 1 ? 0 : w[c], buf);
            else
                fprintf(f, "%s%*s", c ? "  " : "", w[c], buf);
        }
        fputc('\n', f);
    }
    fputc('\n', f);
    free(w);
}

static void csv_field(FILE *f, const char *s)
{
    if (strpbrk(s, ",\"\n")) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"') fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
}

static void print_csv(const cJSON *records, FILE *f)
{
    /* header: union of keys in first-seen order */
    cJSON *keys = cJSON_CreateArray();
    const cJSON *r, *v;
    cJSON_ArrayForEach(r, records)
    {
        cJSON_ArrayForEach(v, r)
        {
            int seen = 0;
            const cJSON *k;
            cJSON_ArrayForEach(k, keys) if (strcmp(k->valuestring, v->string) == 0) seen = 1;
            if (!seen) cJSON_AddItemToArray(keys, cJSON_CreateString(v->string));
        }
    }
    const cJSON *k;
    int first = 1;
    cJSON_ArrayForEach(k, keys)
    {
        if (!first) fputc(',', f);
        csv_field(f, k->valuestring);
        first = 0;
    }
    fputc('\n', f);
    char buf[4096];
    cJSON_ArrayForEach(r, records)
    {
        first = 1;
        cJSON_ArrayForEach(k, keys)
        {
            if (!first) fputc(',', f);
            first = 0;
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(r, k->valuestring);
            if (x && cJSON_IsNumber(x)) {
                if (isnan(x->valuedouble))
                    fputs("nan", f);
                else
                    fprintf(f, "%.17g", x->valuedouble);
            } else {
                cell_text(x, "%g", buf, sizeof buf);
                csv_field(f, buf);
            }
        }
        fputc('\n', f);
    }
    cJSON_Delete(keys);
}

int as_out_finish(as_out *o, FILE *f)
{
    if (o->fmt == AS_FMT_JSON) {
        char *s = cJSON_Print(o->doc);
        if (s) {
            fputs(s, f);
            fputc('\n', f);
        }
        free(s);
    } else if (o->fmt == AS_FMT_CSV) {
        print_csv(o->records, f);
    } else {
        for (int i = 0; i < o->ntables; i++) print_table(&o->tables[i], o->records, f);
    }
    for (int i = 0; i < o->ntables; i++) {
        as_table_spec *t = &o->tables[i];
        for (int c = 0; c < t->ncols; c++) {
            free(t->cols[c]);
            free(t->heads[c]);
            free(t->fmts[c]);
        }
        free(t->cols);
        free(t->heads);
        free(t->fmts);
        free(t->kind);
        free(t->title);
    }
    free(o->tables);
    cJSON_Delete(o->doc);
    free(o);
    if (fflush(f) != 0 || ferror(f)) {
        fprintf(stderr, "attnscope: error writing output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- progress */
struct as_progress {
    char label[64];
    uint64_t total;
    int enabled;
    int shown;
    struct timespec t0, last;
};

static double secs_between(struct timespec a, struct timespec b)
{
    return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

as_progress *as_progress_new(const char *label, uint64_t total, int quiet)
{
    as_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total ? total : 1;
    p->enabled = !quiet && isatty(STDERR_FILENO);
    clock_gettime(CLOCK_MONOTONIC, &p->t0);
    p->last = p->t0;
    return p;
}

void as_progress_update(as_progress *p, uint64_t done)
{
    if (!p || !p->enabled) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double el = secs_between(p->t0, now);
    if (el < 1.0 || (p->shown && secs_between(p->last, now) < 0.1 && done < p->total)) return;
    p->last = now;
    p->shown = 1;
    double frac = (double)done / (double)p->total;
    if (frac > 1) frac = 1;
    int bar = 30, fill = (int)(frac * bar);
    double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    fprintf(stderr, "\r%-12s [", p->label);
    for (int i = 0; i < bar; i++) fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %5.1f%%  %.0fs elapsed, ~%.0fs left ", 100 * frac, el, eta);
    fflush(stderr);
}

void as_progress_free(as_progress *p)
{
    if (!p) return;
    if (p->shown) fprintf(stderr, "\r%*s\r", 80, "");
    free(p);
}

/* ---------------------------------------------------------------- atomic output */
int as_cli_check_output(const char *cmd, const char *path)
{
    if (!*path) {
        fprintf(stderr, "attnscope %s: empty output path\n", cmd);
        return 2;
    }
    if (as_input_is_open(path)) {
        fprintf(stderr, "attnscope %s: %s: refusing to overwrite an input file\n", cmd, path);
        return 2;
    }
    struct stat s;
    if (stat(path, &s) == 0 && S_ISDIR(s.st_mode)) {
        fprintf(stderr, "attnscope %s: %s: is a directory\n", cmd, path);
        return 2;
    }
    /* the folder: the temporary file is created there and renamed into place */
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    if (!dir) return as_cli_fail(cmd, AS_ERR_NOMEM, "out of memory");
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int rc = 0;
    if (stat(dir, &s) != 0 || !S_ISDIR(s.st_mode)) {
        fprintf(stderr, "attnscope %s: %s: folder '%s' does not exist\n", cmd, path, dir);
        rc = 2;
    } else if (access(dir, W_OK | X_OK) != 0) {
        fprintf(stderr, "attnscope %s: %s: cannot write in folder '%s': %s\n", cmd, path, dir,
                strerror(errno));
        rc = 2;
    }
    free(dir);
    return rc;
}

as_status as_write_file_atomic(const char *path, const void *data, size_t len, char *err)
{
    if (as_input_is_open(path))
        return as_err_set(err, AS_ERR_USAGE, "%s: refusing to overwrite an input file", path);
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp) return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        as_status st = as_err_set(err, AS_ERR_IO, "%s: cannot create temporary file: %s", path,
                                  strerror(errno));
        free(tmp);
        return st;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            as_status st = as_err_set(err, AS_ERR_IO, "%s: write failed: %s", path, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return st;
        }
        p += w;
        left -= (size_t)w;
    }
    fchmod(fd, 0644);
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        as_status st = as_err_set(err, AS_ERR_IO, "%s: cannot finish writing: %s", path,
                                  strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return AS_OK;
}
