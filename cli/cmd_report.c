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
#include "as_study.h"
#include "as_summary.h"
#include "cli_help.h"
#include "cli_job.h"
#include "cli_par.h"
#include "cmd_report.h"

const char as_help_report[] =
    "usage: attnscope report TRACE [TRACE...] [-o FILE] [--gpu-json FILE] [--eval FILE]\n"
    "                        [--layer L] [--witness none|last|all] [--quiet]\n\n"
    "Analyse TRACE and write one self-contained HTML file (inline SVG figures, inline CSS, no\n"
    "scripts, no network): where attention goes; layer x head heatmaps of normalised entropy\n"
    "and of the effective rank of keys; per-layer distributions of entropy and top-k mass;\n"
    "error-versus-sparsity curves per selection method with the theoretical bound; the\n"
    "d-dimensional bottleneck (collision space, TV witness); the positional spectrum of the\n"
    "most periodic heads; a summary table per layer; provenance (file, SHA-256, model,\n"
    "version, command).\n\n"
    "Several traces (A B C ...; a study's models, prompts, lengths): one page, first a table\n"
    "across traces (model, prompt, N, layers, per method the median sparsity under 1% and\n"
    "5% error and the heads needing dense attention) with figures comparing them, then each\n"
    "trace's report under its own heading, the provenance of every file. Under mpirun the\n"
    "layers of all traces share the ranks.\n\n"
    "  -o, --output FILE   where to write the report (default: report.html); written\n"
    "                      atomically, never over an input\n"
    "  --gpu-json FILE     add the GPU results of 'attnscope gpu bench --json' (several\n"
    "                      traces: one section for the page, after the traces)\n"
    "  --eval FILE         add task accuracy and KL vs sparsity per method from\n"
    "                      'attnscope eval' (FILE alone, without TRACE: that page only;\n"
    "                      several traces: one section for the page, after the traces)\n"
    "  --layer L           only layer L (of every trace)\n"
    "  --witness MODE      the bottleneck's TV witness, one linear program per query:\n"
    "                      'last' (default) the last decode query of each head, 'all'\n"
    "                      every query (slow on long traces), 'none' skip\n"
    "  --quiet             no progress bar\n";

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
    as_cli_job j[AS_REPORT_MAX_TRACES];
    as_cli_rep_trace t[AS_REPORT_MAX_TRACES];
    size_t ntr;
    const char *const *tpath;
    char *gpu_doc, *eval_doc, *html;
    int analysis_failed; /* the error is the analysis's: the message names the trace */
} report_run;

static void report_free(report_run *r)
{
    free(r->html);
    free(r->gpu_doc);
    free(r->eval_doc);
    for (size_t k = 0; k < r->ntr; k++) {
        as_cli_rep_free(&r->t[k]);
        as_cli_job_close(&r->j[k]);
    }
}

/* The command line's TRACEs and options, checked before anything is read. */
static int report_args(int argc, char **argv, const report_opts *ro, as_cli_common *c,
                       report_run *r)
{
    if (optind > argc - 1) return as_cli_usage("report", "expects a TRACE (or several)");
    if (argc - optind > AS_REPORT_MAX_TRACES)
        return as_cli_usage("report", "at most %d traces in one run", AS_REPORT_MAX_TRACES);
    if (c->fmt != AS_FMT_TABLE)
        return as_cli_usage("report", "writes HTML; --json/--csv are for the analysis commands");
    if (c->head >= 0) return as_cli_usage("report", "--head is not supported (use --layer)");
    r->tpath = (const char *const *)argv + optind;
    c->trace = argv[optind];
    if (!*ro->out) return as_cli_usage("report", "empty output path");
    int clash = (ro->gpu && same_file(ro->out, ro->gpu)) ||
                (ro->eval && same_file(ro->out, ro->eval));
    for (int i = optind; i < argc; i++) clash |= same_file(ro->out, argv[i]);
    if (clash) {
        fprintf(stderr, "attnscope report: %s: refusing to overwrite an input file\n", ro->out);
        return 2;
    }
    char err[AS_ERR_LEN];
    if (!as_plot_available(err)) return as_cli_fail("report", AS_ERR_USAGE, err);
    return 0;
}

/* The traces (each checked against --layer), the output's folder, the GPU and eval
 * documents. */
static int report_inputs(report_run *r, size_t ntr, const report_opts *ro, const as_cli_common *c)
{
    char err[AS_ERR_LEN];
    int code = 0;
    for (size_t k = 0; k < ntr && code == 0; k++) {
        as_cli_common ct = *c;
        ct.trace = r->tpath[k];
        code = as_cli_job_open(&r->j[k], "report", &ct, -1, AS_CLI_UNITS_NONE);
        r->t[k].tr = r->j[k].tr;
        r->ntr = k + 1;
    }
    if (code == 0) code = as_cli_check_output("report", ro->out);
    if (code == 0 && ro->gpu && !(r->gpu_doc = read_small_file(ro->gpu, err)))
        code = as_cli_fail("report", AS_ERR_IO, err);
    if (code == 0 && ro->eval && !(r->eval_doc = read_eval(ro->eval, err)))
        code = as_cli_fail("report", AS_ERR_VALUE, err);
    return code;
}

/* Rank 0: the page, of one trace as always, of several a study (report/as_study.h). */
static as_status report_page(report_run *r, const report_opts *ro, const char *cmdline,
                             double seconds, size_t *len, int *nfig, char *err)
{
    as_report_info info = {cmdline ? cmdline : "attnscope report", r->gpu_doc, ro->gpu, NULL,
                           NULL, seconds, r->eval_doc, ro->eval};
    if (r->ntr == 1) {
        info.sha256 = r->t[0].hex;
        info.sha256_note = r->t[0].per_file;
        return as_report_html(r->t[0].tr, r->t[0].s, &info, &r->html, len, nfig, err);
    }
    as_study_trace st[AS_REPORT_MAX_TRACES];
    for (size_t k = 0; k < r->ntr; k++)
        st[k] = (as_study_trace){r->t[k].tr, r->t[k].s, r->t[k].hex, r->t[k].per_file};
    return as_study_html(st, r->ntr, &info, &r->html, len, nfig, err);
}

/* Every trace's checksum and layer summaries, shared by the ranks; then, on rank 0, the page
 * (t0: when the run began). A rank other than 0 returns AS_OK with no page. */
static as_status report_make(report_run *r, const report_opts *ro, const as_cli_common *c,
                             const char *cmdline, struct timespec t0, size_t *len, int *nfig,
                             char *err)
{
    as_status st = as_cli_report_run(r->t, r->ntr, c->layer, ro->witness, c->quiet, err);
    r->analysis_failed = st != AS_OK;
    if (st != AS_OK || as_mpi_rank() != 0) return st;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return report_page(r, ro, cmdline, sec, len, nfig, err);
}

/* "wrote FILE (...)", with what some layers of a trace left out. */
static void report_said(const report_run *r, const char *out, int nfig, size_t len)
{
    fprintf(stderr, "attnscope report: wrote %s (%d figures, %.0f KiB)", out, nfig,
            (double)len / 1024.0);
    for (size_t k = 0; k < r->ntr; k++)
        if (r->t[k].s->left_out[0])
            fprintf(stderr, "; %s%s%s", r->ntr > 1 ? r->tpath[k] : "", r->ntr > 1 ? ": " : "",
                    r->t[k].s->left_out);
    fputc('\n', stderr);
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
    report_run r;
    memset(&r, 0, sizeof r);
    if ((code = report_args(argc, argv, &ro, &c, &r)) != 0) return code;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((code = report_inputs(&r, (size_t)(argc - optind), &ro, &c)) != 0) {
        report_free(&r);
        return code;
    }
    char err[AS_ERR_LEN];
    size_t len = 0;
    int nfig = 0;
    as_status st = report_make(&r, &ro, &c, cmdline, t0, &len, &nfig, err);
    if (r.analysis_failed) { /* said once, on rank 0, with the failing rank */
        report_free(&r);
        return as_par_fail("report", st, err);
    }
    if (st == AS_OK && as_mpi_rank() != 0) { /* its part is done */
        report_free(&r);
        return 0;
    }
    if (st == AS_OK) st = as_write_file_atomic(ro.out, r.html, len, err);
    if (st == AS_OK && !c.quiet) report_said(&r, ro.out, nfig, len);
    report_free(&r);
    return st == AS_OK ? 0 : as_cli_fail("report", st, err);
}
#else
/* PLplot or OpenSSL missing: `attnscope report` is not part of this build. */
typedef int as_cmd_report_not_built;
#endif
