/* attnscope report: one self-contained HTML file with the figures of a trace's analysis.
 * Built only when PLplot and OpenSSL's libcrypto are found (report/CMakeLists.txt). */
#ifdef AS_HAVE_REPORT
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "as_digest.h"
#include "as_html.h"
#include "as_plot.h"
#include "as_report.h"
#include "as_summary.h"
#include "cli_help.h"
#include "cli_job.h"

const char as_help_report[] =
    "usage: attnscope report TRACE [-o FILE] [--gpu-json FILE] [--eval FILE] [--layer L]\n"
    "                        [--witness none|last|all] [--quiet]\n\n"
    "Analyse TRACE and write one self-contained HTML file (inline SVG figures, inline CSS, no\n"
    "scripts, no network): where attention goes; layer x head heatmaps of normalised entropy\n"
    "and of the effective rank of keys; per-layer distributions of entropy and top-k mass;\n"
    "error-versus-sparsity curves per selection method with the theoretical bound; the\n"
    "d-dimensional bottleneck (collision space, TV witness); the positional spectrum of the\n"
    "most periodic heads; a summary table per layer; provenance (file, SHA-256, model,\n"
    "version, command).\n\n"
    "  -o, --output FILE   where to write the report (default: report.html); written\n"
    "                      atomically, never over an input\n"
    "  --gpu-json FILE     add the GPU results of 'attnscope gpu bench --json'\n"
    "  --eval FILE         add task accuracy and KL vs sparsity per method from\n"
    "                      'attnscope eval' (FILE alone, without TRACE: that page only)\n"
    "  --layer L           only layer L\n"
    "  --witness MODE      the bottleneck's TV witness, one linear program per query:\n"
    "                      'last' (default) the last decode query of each head, 'all'\n"
    "                      every query (slow on long traces), 'none' skip\n"
    "  --quiet             no progress bar\n";

static struct {
    as_progress *bar;
    uint64_t base, span; /* this phase's share of the bar, in per-mille */
} prog;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)ctx;
    if (total == 0) total = 1;
    as_progress_update(prog.bar, prog.base + prog.span * done / total);
}

static void on_hash(void *ctx, unsigned long long done)
{
    uint64_t total = *(const uint64_t *)ctx;
    on_progress(NULL, done, total);
}

static char *read_small_file(const char *path, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        as_err_set(err, AS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (len < cap - 1) break;
        if (cap > (256u << 20)) {
            free(buf);
            buf = NULL;
            as_err_set(err, AS_ERR_VALUE, "%s: larger than 256 MiB", path);
            fclose(f);
            return NULL;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (!buf) {
        as_err_set(err, AS_ERR_NOMEM, "out of memory");
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

enum { OPT_GPU = 2000, OPT_WITNESS, OPT_EVAL };
static int report_main(int argc, char **argv, const char *cmdline);

/* The eval document, checked to be one (`attnscope eval` writes {"command": "eval", ...}). */
static char *read_eval(const char *path, char *err)
{
    char *doc = read_small_file(path, err);
    if (!doc) return NULL;
    cJSON *j = cJSON_Parse(doc);
    const cJSON *cmd = j ? cJSON_GetObjectItemCaseSensitive(j, "command") : NULL;
    const cJSON *recs = j ? cJSON_GetObjectItemCaseSensitive(j, "records") : NULL;
    int ok = cJSON_IsString(cmd) && strcmp(cmd->valuestring, "eval") == 0 && cJSON_IsArray(recs);
    const char *why = j ? "no \"command\": \"eval\" with records" : "not JSON";
    cJSON_Delete(j);
    if (!ok) {
        as_err_set(err, AS_ERR_VALUE, "%s: not an attnscope eval document (%s)", path, why);
        free(doc);
        return NULL;
    }
    return doc;
}

/* `attnscope report --eval eval.json` without a trace: the task-accuracy page alone. */
static int eval_only(const char *eval, const char *out, const as_cli_common *c,
                     const char *cmdline)
{
    if (c->fmt != AS_FMT_TABLE)
        return as_cli_usage("report", "writes HTML; --json/--csv are for the analysis commands");
    if (!*out) return as_cli_usage("report", "empty output path");
    if (same_file(out, eval)) {
        fprintf(stderr, "attnscope report: %s: refusing to overwrite an input file\n", out);
        return 2;
    }
    char err[AS_ERR_LEN];
    if (!as_plot_available(err)) return as_cli_fail("report", AS_ERR_USAGE, err);
    char *doc = read_eval(eval, err);
    if (!doc) return as_cli_fail("report", AS_ERR_VALUE, err);
    as_report_info info = {cmdline ? cmdline : "attnscope report", NULL, NULL, NULL, NULL, -1,
                           doc, eval};
    char *html = NULL;
    size_t len = 0;
    int nfig = 0;
    as_status st = as_report_eval_html(&info, &html, &len, &nfig, err);
    if (st == AS_OK) st = as_write_file_atomic(out, html, len, err);
    free(html);
    free(doc);
    if (st != AS_OK) return as_cli_fail("report", st, err);
    if (!c->quiet)
        fprintf(stderr, "attnscope report: wrote %s (%d figures, %.0f KiB)\n", out, nfig,
                (double)len / 1024.0);
    return 0;
}

int as_cmd_report(int argc, char **argv)
{
    /* provenance: the command as typed (before getopt permutes argv) */
    char *cmdline = as_report_command_line(argc, argv);
    int rc = report_main(argc, argv, cmdline);
    free(cmdline);
    return rc;
}

typedef struct {
    const char *out, *gpu, *eval;
    int witness;
} report_opts;

static int report_opt(void *ctx, int opt, const char *arg)
{
    report_opts *r = ctx;
    static const char *const witness[] = {"none", "last", "all"};
    switch (opt) {
    case 'o': r->out = arg; return 0;
    case OPT_GPU: r->gpu = arg; return 0;
    case OPT_EVAL: r->eval = arg; return 0;
    case OPT_WITNESS:
        for (int i = 0; i < 3; i++)
            if (strcmp(arg, witness[i]) == 0) {
                r->witness = i;
                return 0;
            }
        return as_cli_usage("report", "--witness takes none, last or all, not '%s'", arg);
    default: return -1;
    }
}

/* What the report reads and makes, freed together by report_free. */
typedef struct {
    as_cli_job j;
    char *gpu_doc, *eval_doc, *per_file, *html;
    char hex[AS_SHA256_HEX];
    as_summary *s;
    int analysis_failed; /* the error is the analysis's: the message names the trace */
} report_run;

static void report_free(report_run *r)
{
    free(r->html);
    free(r->per_file);
    free(r->gpu_doc);
    free(r->eval_doc);
    as_summary_free(r->s);
    as_cli_job_close(&r->j);
}

/* The command line's TRACE and options, checked before anything is read. */
static int report_args(int argc, char **argv, const report_opts *ro, as_cli_common *c)
{
    if (optind != argc - 1) return as_cli_usage("report", "expects exactly one TRACE");
    if (c->fmt != AS_FMT_TABLE)
        return as_cli_usage("report", "writes HTML; --json/--csv are for the analysis commands");
    if (c->head >= 0) return as_cli_usage("report", "--head is not supported (use --layer)");
    c->trace = argv[optind];
    if (!*ro->out) return as_cli_usage("report", "empty output path");
    if (same_file(ro->out, c->trace) || (ro->gpu && same_file(ro->out, ro->gpu)) ||
        (ro->eval && same_file(ro->out, ro->eval))) {
        fprintf(stderr, "attnscope report: %s: refusing to overwrite an input file\n", ro->out);
        return 2;
    }
    char err[AS_ERR_LEN];
    if (!as_plot_available(err)) return as_cli_fail("report", AS_ERR_USAGE, err);
    return 0;
}

/* The trace, the output's folder, the GPU and eval documents. */
static int report_inputs(report_run *r, const report_opts *ro, const as_cli_common *c)
{
    char err[AS_ERR_LEN];
    int code = as_cli_job_open(&r->j, "report", c, -1, AS_CLI_UNITS_NONE);
    if (code == 0) code = as_cli_check_output("report", ro->out);
    if (code == 0 && ro->gpu && !(r->gpu_doc = read_small_file(ro->gpu, err)))
        code = as_cli_fail("report", AS_ERR_IO, err);
    if (code == 0 && ro->eval && !(r->eval_doc = read_eval(ro->eval, err)))
        code = as_cli_fail("report", AS_ERR_VALUE, err);
    return code;
}

/* Checksum (10% of the bar), analysis (90%), the page; t0: when the run began. */
static as_status report_make(report_run *r, const report_opts *ro, const as_cli_common *c,
                             const char *cmdline, struct timespec t0, size_t *len, int *nfig,
                             char *err)
{
    as_trace *tr = r->j.tr;
    uint64_t bytes = as_trace_file_bytes(tr);
    prog.base = 0, prog.span = 100;
    as_status st = as_trace_sha256(tr, r->hex, &r->per_file, on_hash, &bytes, err);
    if (st != AS_OK) return st;
    as_summary_opts so;
    as_summary_opts_init(&so);
    so.layer = c->layer;
    so.witness = ro->witness;
    so.progress = on_progress;
    prog.base = 100, prog.span = 900;
    r->s = as_summary_compute_st(tr, &so, &st, err);
    if (!r->s) {
        r->analysis_failed = 1;
        return st;
    }
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    as_report_info info = {cmdline ? cmdline : "attnscope report",
                           r->gpu_doc,
                           ro->gpu,
                           r->hex,
                           r->per_file,
                           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
                           r->eval_doc,
                           ro->eval};
    return as_report_html(tr, r->s, &info, &r->html, len, nfig, err);
}

static int report_main(int argc, char **argv, const char *cmdline)
{
    static const struct option opts[] = {AS_CLI_COMMON_LONGOPTS,
                                         {"output", required_argument, 0, 'o'},
                                         {"gpu-json", required_argument, 0, OPT_GPU},
                                         {"witness", required_argument, 0, OPT_WITNESS},
                                         {"eval", required_argument, 0, OPT_EVAL},
                                         {0, 0, 0, 0}};
    report_opts ro = {.out = "report.html", .gpu = NULL, .eval = NULL, .witness = 1};
    as_cli_common c;
    int code = as_cli_parse_opts("report", argc, argv, opts, "o:", report_opt, &ro, &c);
    if (code != AS_CLI_GO) return code;
    if (ro.eval && optind == argc) return eval_only(ro.eval, ro.out, &c, cmdline);
    if ((code = report_args(argc, argv, &ro, &c)) != 0) return code;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    report_run r;
    memset(&r, 0, sizeof r);
    if ((code = report_inputs(&r, &ro, &c)) != 0) {
        report_free(&r);
        return code;
    }
    char err[AS_ERR_LEN];
    size_t len = 0;
    int nfig = 0;
    prog.bar = as_progress_new("report", 1000, c.quiet);
    as_status st = report_make(&r, &ro, &c, cmdline, t0, &len, &nfig, err);
    as_progress_free(prog.bar);
    if (r.analysis_failed) {
        char msg[AS_ERR_LEN + 4200];
        snprintf(msg, sizeof msg, "%s: %s", c.trace, err);
        report_free(&r);
        return as_cli_fail("report", st, msg);
    }
    if (st == AS_OK) st = as_write_file_atomic(ro.out, r.html, len, err);
    if (st == AS_OK && !c.quiet)
        fprintf(stderr, "attnscope report: wrote %s (%d figures, %.0f KiB)%s%s\n", ro.out, nfig,
                (double)len / 1024.0, r.s->left_out[0] ? "; " : "", r.s->left_out);
    report_free(&r);
    return st == AS_OK ? 0 : as_cli_fail("report", st, err);
}
#else
/* PLplot or OpenSSL missing: `attnscope report` is not part of this build. */
typedef int as_cmd_report_not_built;
#endif
