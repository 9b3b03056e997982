#include "cli_util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "as_limits.h"
#include "as_mpi.h"

/* The program's help printer (cli/main.c registers it: this file knows no command). */
static as_cli_help_fn help_printer;

void as_cli_set_help(as_cli_help_fn fn) { help_printer = fn; }

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

/* --progress and --quiet: set by any command's option parsing, read by as_progress_new and
 * by the progress of as_cli_open_trace */
static int progress_forced, cli_quiet;
/* the first trace the command opened: what the SIGBUS handler names if /proc is missing */
static char guard_input[4096];

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
    case AS_OPT_QUIET:
        c->quiet = 1;
        cli_quiet = 1;
        return 1;
    case AS_OPT_PROGRESS:
        c->progress = 1;
        progress_forced = 1;
        return 1;
    case AS_OPT_HELP:
        if (help_printer) help_printer(cmd, stdout);
        return 2;
    default: return 0;
    }
}

static struct {
    int on, have;
    as_status st;
    char msg[AS_ERR_LEN];
} fail_cap;

void as_cli_fail_capture(int on)
{
    fail_cap.on = on;
    fail_cap.have = 0;
}

as_status as_cli_fail_captured(int rc, char *err)
{
    fail_cap.on = 0;
    if (rc == 0) return AS_OK;
    if (fail_cap.have) return as_err_set(err, fail_cap.st, "%s", fail_cap.msg);
    return as_err_set(err, rc == 1 ? AS_ERR_CHECK : AS_ERR_VALUE, "failed (exit %d)", rc);
}

int as_cli_fail(const char *cmd, as_status st, const char *msg)
{
    if (fail_cap.on) {
        if (!fail_cap.have) snprintf(fail_cap.msg, sizeof fail_cap.msg, "%s", msg);
        if (!fail_cap.have) fail_cap.st = st;
        fail_cap.have = 1;
        return as_status_exit_code(st);
    }
    fprintf(stderr, "attnscope %s: %s\n", cmd, msg);
    return as_status_exit_code(st);
}

int as_cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (fail_cap.on) {
        if (!fail_cap.have) {
            int k = vsnprintf(fail_cap.msg, sizeof fail_cap.msg, fmt, ap);
            if (k >= 0 && (size_t)k < sizeof fail_cap.msg)
                snprintf(fail_cap.msg + k, sizeof fail_cap.msg - (size_t)k,
                         " (see 'attnscope help %s')", cmd);
            fail_cap.st = AS_ERR_USAGE;
            fail_cap.have = 1;
        }
        va_end(ap);
        return 2;
    }
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

static void on_scan(void *ctx, uint64_t done, uint64_t total)
{
    (void)total;
    as_progress_update(ctx, done);
}

as_trace *as_cli_open_trace(const char *cmd, const char *path, int check_finite, int *code)
{
    char err[AS_ERR_LEN];
    as_status st = AS_OK;
    if (!guard_input[0] && strlen(path) < sizeof guard_input)
        memcpy(guard_input, path, strlen(path) + 1);
    as_trace *tr = as_trace_open_status(path, &st, err);
    if (!tr) {
        *code = as_cli_fail(cmd, st, err);
        return NULL;
    }
    if (check_finite) {
        uint64_t total = 0;
        for (size_t i = 0; i < as_trace_n_layers(tr); i++) {
            const as_layer *l = as_trace_layer(tr, i);
            total += (uint64_t)(l->hq * l->t * l->d + 2 * l->hkv * l->n * l->d);
        }
        as_progress *bar = as_progress_new("checking", total, cli_quiet);
        st = as_trace_check_finite_progress(tr, on_scan, bar, err);
        as_progress_free(bar);
        if (st == AS_OK) st = as_trace_check_limits(tr, err);
        if (st != AS_OK) {
            *code = as_cli_fail(cmd, st, err);
            as_trace_free(tr);
            return NULL;
        }
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

/* Records are not held: each is encoded (mpi/as_mpi.h's exact cJSON encoding) into a spool
 * file as it comes, so memory does not grow with their number (issue 19); the output is
 * written from the spool at the end, in the order the records came. */
struct as_out {
    as_fmt fmt;
    cJSON *doc;     /* top-level object: header fields, an empty "records" array, meta */
    FILE *spool;    /* the records, each as a length and its encoding (a removed file) */
    uint64_t nrec;
    cJSON *keys;    /* CSV: the union of record fields in first-seen order */
    as_table_spec *tables;
    int ntables;
    as_mpi_buf enc; /* one record's encoding, reused */
    as_mpi_buf *sink; /* a unit's records (as_out_new_unit): encoded into this buffer */
    cJSON *view;      /* as_out_records: the records read back from the spool */
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

/* A temporary file in $TMPDIR (or /tmp), removed at once: it lives while it is open. */
static FILE *spool_open(void)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/attnscope-records-XXXXXX", dir);
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w+b") : NULL;
    if (!f) {
        fprintf(stderr, "attnscope: cannot create a temporary file in %s: %s\n", dir,
                strerror(errno));
        exit(1);
    }
    unlink(path);
    return f;
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
    cJSON_AddArrayToObject(o->doc, "records");
    o->keys = cJSON_CreateArray();
    as_mpi_buf_init(&o->enc);
    o->spool = spool_open();
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

as_out *as_out_new_unit(as_fmt fmt, as_mpi_buf *sink)
{
    as_out *o = xrealloc(NULL, sizeof *o);
    memset(o, 0, sizeof *o);
    o->fmt = fmt;
    o->sink = sink;
    as_mpi_buf_init(&o->enc);
    return o;
}

/* One record into the spool (or a unit's buffer): its length, then its encoding. */
static void spool_put(as_out *o, const void *enc, uint64_t n)
{
    if (o->sink) {
        as_mpi_put(o->sink, &n, sizeof n);
        as_mpi_put(o->sink, enc, (size_t)n);
        return;
    }
    if (fwrite(&n, sizeof n, 1, o->spool) != 1 || fwrite(enc, 1, (size_t)n, o->spool) != n) {
        fprintf(stderr, "attnscope: cannot keep the records in a temporary file: %s\n",
                strerror(errno));
        exit(1);
    }
    o->nrec++;
}

/* CSV: the union of the record fields, in first-seen order */
static void csv_keys_add(as_out *o, const cJSON *rec)
{
    const cJSON *v, *k;
    cJSON_ArrayForEach(v, rec)
    {
        int seen = 0;
        cJSON_ArrayForEach(k, o->keys) if (strcmp(k->valuestring, v->string) == 0)
        {
            seen = 1;
            break;
        }
        if (!seen) cJSON_AddItemToArray(o->keys, cJSON_CreateString(v->string));
    }
}

int as_out_add_unit(as_out *o, as_mpi_rd *in)
{
    while (!as_mpi_rd_end(in)) {
        uint64_t n = 0;
        if (as_mpi_get(in, &n, sizeof n) != 0 || n > in->len - in->pos) return -1;
        const unsigned char *enc = in->p + in->pos;
        if (o->fmt == AS_FMT_CSV && !o->sink) {
            as_mpi_rd r;
            as_mpi_rd_init(&r, enc, (size_t)n);
            cJSON *rec = as_mpi_get_json(&r);
            if (!rec) return -1;
            csv_keys_add(o, rec);
            cJSON_Delete(rec);
        }
        spool_put(o, enc, n);
        in->pos += (size_t)n;
    }
    return 0;
}

void as_out_add(as_out *o, cJSON *rec)
{
    if (o->fmt == AS_FMT_CSV && !o->sink) csv_keys_add(o, rec); /* the header's fields */
    o->enc.len = 0;
    as_mpi_put_json(&o->enc, rec);
    cJSON_Delete(rec);
    if (o->enc.failed) {
        fputs("attnscope: out of memory\n", stderr);
        exit(1);
    }
    spool_put(o, o->enc.p, o->enc.len);
}

/* The spool's records one by one: rewind, then next() until it returns NULL. */
static void spool_rewind(as_out *o)
{
    fflush(o->spool);
    rewind(o->spool);
}

static cJSON *spool_next(as_out *o)
{
    uint64_t n;
    if (fread(&n, sizeof n, 1, o->spool) != 1) return NULL;
    if (n > o->enc.cap) {
        unsigned char *q = realloc(o->enc.p, (size_t)n);
        if (!q) {
            fputs("attnscope: out of memory\n", stderr);
            exit(1);
        }
        o->enc.p = q;
        o->enc.cap = (size_t)n;
    }
    as_mpi_rd r;
    cJSON *rec = NULL;
    if (fread(o->enc.p, 1, (size_t)n, o->spool) == (size_t)n) {
        as_mpi_rd_init(&r, o->enc.p, (size_t)n);
        rec = as_mpi_get_json(&r);
    }
    if (!rec) {
        fputs("attnscope: the temporary file of the records was damaged\n", stderr);
        exit(1);
    }
    return rec;
}

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

cJSON *as_rec_stat(const char *kind, int layer, int64_t head, int64_t kv_head, const char *stat,
                   int64_t queries)
{
    cJSON *r = as_rec_new(kind, layer, head);
    if (kv_head >= 0) cJSON_AddNumberToObject(r, "kv_head", (double)kv_head);
    cJSON_AddStringToObject(r, "stat", stat);
    cJSON_AddNumberToObject(r, "queries", (double)queries);
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

static int is_kind(const cJSON *r, const char *kind)
{
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(r, "record");
    return cJSON_IsString(k) && strcmp(k->valuestring, kind) == 0;
}

/* Two passes over the spool: the widths, then the rows. */
static void print_table(as_out *o, const as_table_spec *t, FILE *f)
{
    int nrows = 0;
    cJSON *r;
    char buf[256];
    int *w = calloc((size_t)t->ncols, sizeof *w);
    if (!w) {
        fputs("attnscope: out of memory\n", stderr);
        exit(1);
    }
    for (int c = 0; c < t->ncols; c++) w[c] = (int)strlen(t->heads[c]);
    spool_rewind(o);
    while ((r = spool_next(o))) {
        if (is_kind(r, t->kind)) {
            nrows++;
            for (int c = 0; c < t->ncols; c++) {
                cell_text(cJSON_GetObjectItemCaseSensitive(r, t->cols[c]), t->fmts[c], buf,
                          sizeof buf);
                if ((int)strlen(buf) > w[c]) w[c] = (int)strlen(buf);
            }
        }
        cJSON_Delete(r);
    }
    if (nrows == 0) {
        free(w);
        return;
    }
    fprintf(f, "%s\n", t->title);
    for (int c = 0; c < t->ncols; c++) fprintf(f, "%s%*s", c ? "  " : "", w[c], t->heads[c]);
    fputc('\n', f);
    for (int c = 0; c < t->ncols; c++) {
        fprintf(f, "%s", c ? "  " : "");
        for (int i = 0; i < w[c]; i++) fputc('-', f);
    }
    fputc('\n', f);
    spool_rewind(o);
    while ((r = spool_next(o))) {
        if (is_kind(r, t->kind)) {
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
        cJSON_Delete(r);
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

static void print_csv(as_out *o, FILE *f)
{
    const cJSON *k;
    int first = 1;
    cJSON_ArrayForEach(k, o->keys)
    {
        if (!first) fputc(',', f);
        csv_field(f, k->valuestring);
        first = 0;
    }
    fputc('\n', f);
    char buf[4096];
    cJSON *r;
    spool_rewind(o);
    while ((r = spool_next(o))) {
        first = 1;
        cJSON_ArrayForEach(k, o->keys)
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
        cJSON_Delete(r);
    }
}

/* The document as cJSON_Print would write it with the records in place: the document printed
 * with an empty array, the records printed one by one into it (two levels deeper, as cJSON
 * indents an array's objects: two tabs after each line break; strings hold no raw line break)
 * and ", " between them. */
static void print_json(as_out *o, FILE *f)
{
    char *s = cJSON_Print(o->doc);
    if (!s) return;
    static const char mark[] = "\n\t\"records\":\t[]";
    char *at = strstr(s, mark);
    if (!at) { /* cannot happen: as_out_new puts the array there */
        fputs(s, f);
        fputc('\n', f);
        free(s);
        return;
    }
    fwrite(s, 1, (size_t)(at - s) + sizeof mark - 2, f); /* up to and with '[' */
    cJSON *r;
    int first = 1;
    spool_rewind(o);
    while ((r = spool_next(o))) {
        char *p = cJSON_Print(r);
        cJSON_Delete(r);
        if (!p) {
            fputs("attnscope: out of memory\n", stderr);
            exit(1);
        }
        if (!first) fputs(", ", f);
        first = 0;
        for (const char *c = p; *c; c++) {
            fputc(*c, f);
            if (*c == '\n') fputs("\t\t", f);
        }
        free(p);
    }
    fputs(at + sizeof mark - 2, f); /* ']' and what follows */
    fputc('\n', f);
    free(s);
}

void as_out_free(as_out *o)
{
    if (!o) return;
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
    cJSON_Delete(o->keys);
    cJSON_Delete(o->view);
    if (o->spool) fclose(o->spool);
    as_mpi_buf_free(&o->enc);
    free(o);
}

int as_out_finish(as_out *o, FILE *f)
{
    if (o->fmt == AS_FMT_JSON) {
        print_json(o, f);
    } else if (o->fmt == AS_FMT_CSV) {
        print_csv(o, f);
    } else {
        for (int i = 0; i < o->ntables; i++) print_table(o, &o->tables[i], f);
    }
    as_out_free(o);
    if (fflush(f) != 0 || ferror(f)) {
        fprintf(stderr, "attnscope: error writing output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

int as_out_done(as_out *o, int rc)
{
    if (rc == 0) return as_out_finish(o, stdout);
    as_out_free(o);
    return rc;
}

const cJSON *as_out_records(as_out *o)
{
    /* the records are in the spool: read back into one array (kept until o is freed) */
    cJSON_Delete(o->view);
    o->view = cJSON_CreateArray();
    if (o->sink) return o->view;
    cJSON *r;
    spool_rewind(o);
    while ((r = spool_next(o))) cJSON_AddItemToArray(o->view, r);
    fseek(o->spool, 0, SEEK_END); /* later records go after these */
    return o->view;
}

/* ---------------------------------------------------------------- progress */
/* The bar is drawn by a thread of its own, five times a second from half a second on, so it
 * appears (and its clock runs) even while one step of the work takes minutes; the work only
 * stores how far it got. */
struct as_progress {
    char label[64];
    uint64_t total;
    _Atomic uint64_t done;
    int enabled, stop, shown;
    struct timespec t0;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* A bar on the screen: the signal handlers clear its line before their message. Once a
 * handler runs, bars are frozen: no more drawing over its message. */
static volatile sig_atomic_t bar_on_screen, bars_frozen;

static double secs_between(struct timespec a, struct timespec b)
{
    return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

static void fmt_duration(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void progress_draw(as_progress *p, double el)
{
    uint64_t done = atomic_load(&p->done);
    double frac = (double)done / (double)p->total;
    if (frac > 1) frac = 1;
    int bar = 30, fill = (int)(frac * bar);
    char line[256], e1[32], e2[32] = "--:--";
    fmt_duration(el, e1, sizeof e1);
    /* ETA from the rate so far, once there is a rate to speak of */
    if (frac > 0.001 && el > 0) fmt_duration(el * (1 - frac) / frac, e2, sizeof e2);
    int k = snprintf(line, sizeof line, "\r%-10s [", p->label);
    for (int i = 0; i < bar && k < (int)sizeof line - 1; i++) line[k++] = i < fill ? '#' : '.';
    snprintf(line + k, sizeof line - (size_t)k, "] %5.1f%%  %s elapsed, ETA %s ", 100 * frac,
             e1, e2);
    if (bars_frozen) return;
    /* one write: a signal handler's message (also one write) never lands inside a bar */
    bar_on_screen = 1;
    if (write(STDERR_FILENO, line, strlen(line)) < 0) return;
    p->shown = 1;
}

static void *progress_thread(void *arg)
{
    as_progress *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        struct timespec now, until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200000000L;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&p->cv, &p->mu, &until);
        if (p->stop) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = secs_between(p->t0, now);
        if (el >= 0.5) progress_draw(p, el);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

as_progress *as_progress_new(const char *label, uint64_t total, int quiet)
{
    as_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    snprintf(p->label, sizeof p->label, "%s", label);
    p->total = total ? total : 1;
    atomic_init(&p->done, 0);
    p->enabled = !quiet && (progress_forced || isatty(STDERR_FILENO));
    clock_gettime(CLOCK_MONOTONIC, &p->t0);
    if (p->enabled) {
        pthread_mutex_init(&p->mu, NULL);
        pthread_cond_init(&p->cv, NULL);
        if (pthread_create(&p->thread, NULL, progress_thread, p) != 0) {
            pthread_mutex_destroy(&p->mu);
            pthread_cond_destroy(&p->cv);
            p->enabled = 0;
        }
    }
    return p;
}

void as_progress_update(as_progress *p, uint64_t done)
{
    if (!p || !p->enabled) return;
    atomic_store(&p->done, done);
}

void as_progress_free(as_progress *p)
{
    if (!p) return;
    if (p->enabled) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        if (p->shown && !bars_frozen) {
            static const char clear[] = "\r                                                  "
                                        "                             \r";
            if (write(STDERR_FILENO, clear, sizeof clear - 1) < 0) { /* nothing to do */
            }
            bar_on_screen = 0;
        }
    }
    free(p);
}

/* ---------------------------------------------------------------- signals */
/* SIGBUS: a memory-mapped input shrank under us (another program truncated or rewrote it):
 * one line naming the file, temporary outputs removed, exit 2. SIGINT/SIGTERM/SIGHUP:
 * temporary outputs removed, then the default action (the shell sees the signal). Everything
 * here is async-signal-safe: no stdio, no allocation. */
static const char *guard_cmd = "";

/* The handlers' message, built in static storage and written with one write(2). */
static char say_buf[8192];
static size_t say_len;

static void say(const char *s)
{
    size_t n = strlen(s);
    if (n > sizeof say_buf - 1 - say_len) n = sizeof say_buf - 1 - say_len;
    memcpy(say_buf + say_len, s, n);
    say_len += n;
}

static void say_flush(void)
{
    const char *p = say_buf;
    while (say_len > 0) {
        ssize_t w = write(STDERR_FILENO, p, say_len);
        if (w <= 0) break;
        p += w;
        say_len -= (size_t)w;
    }
    say_len = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The file mapped at addr, from /proc/self/maps ("start-end perms offset dev inode path"). */
static int mapped_file(uintptr_t addr, char *out, size_t cap)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    static char line[4352]; /* only the handler uses it, and the handler ends the process */
    char buf[4096];
    size_t len = 0;
    int found = 0;
    ssize_t got;
    while (!found && (got = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < got && !found; i++) {
            if (buf[i] != '\n') {
                if (len < sizeof line - 1) line[len++] = buf[i];
                continue;
            }
            line[len] = '\0';
            len = 0;
            uintptr_t lo = 0, hi = 0;
            const char *q = line;
            int v;
            while ((v = hexval(*q)) >= 0) lo = lo * 16 + (uintptr_t)v, q++;
            if (*q++ != '-') continue;
            while ((v = hexval(*q)) >= 0) hi = hi * 16 + (uintptr_t)v, q++;
            if (addr < lo || addr >= hi) continue;
            for (int field = 0; field < 4 && *q; field++) { /* perms offset dev inode */
                while (*q == ' ') q++;
                while (*q && *q != ' ') q++;
            }
            while (*q == ' ') q++;
            if (*q == '/') {
                size_t n = strlen(q);
                if (n >= cap) n = cap - 1;
                memcpy(out, q, n);
                out[n] = '\0';
                found = 1;
            }
        }
    }
    close(fd);
    return found;
}

static void clear_bar(void)
{
    bars_frozen = 1;
    if (bar_on_screen)
        say("\r                                                                               \r");
}

static void on_bus(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)uc;
    static char path[4096];
    clear_bar();
    as_tmp_remove_all();
    say("attnscope ");
    say(guard_cmd);
    say(": ");
    if (mapped_file((uintptr_t)si->si_addr, path, sizeof path))
        say(path);
    else
        say(guard_input[0] ? guard_input : "an input file");
    say(": the file changed while it was being read (truncated or rewritten by another "
        "program?); nothing written\n");
    say_flush();
    _exit(2);
}

static void on_interrupt(int sig)
{
    clear_bar();
    say_flush();
    as_tmp_remove_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

void as_cli_guard_install(const char *cmd)
{
    guard_cmd = cmd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_interrupt;
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        struct sigaction old;
        /* a signal the caller ignores (a background job's SIGINT) stays ignored */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        sigaction(sigs[i], &sa, NULL);
    }
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
