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
#include "cli_par.h"

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

typedef struct {
    as_trace *tr;
    const as_par_unit *units; /* layer units, from unit 1 */
    as_summary_opts so;
    as_par_prog prog;
    /* rank 0 */
    char hex[AS_SHA256_HEX];
    char *per_file;
    as_par_summary ps;
} report_job;

static void on_hash(void *ctx, unsigned long long done)
{
    report_job *j = ctx;
    as_par_prog_inner(&j->prog, done, as_trace_file_bytes(j->tr));
}

static as_status report_work(void *vctx, size_t u, as_mpi_buf *out, char *err)
{
    report_job *j = vctx;
    if (u == 0) {
        char hex[AS_SHA256_HEX] = "";
        char *per_file = NULL;
        as_par_prog_unit(&j->prog, 1);
        as_status st = as_trace_sha256(j->tr, hex, &per_file, on_hash, j, err);
        if (st == AS_OK) {
            as_mpi_put_str(out, hex);
            as_mpi_put_str(out, per_file);
        }
        free(per_file);
        return st;
    }
    const as_par_unit *pu = &j->units[u - 1];
    as_par_prog_unit(&j->prog, pu->cost);
    return as_par_summary_work(j->tr, as_trace_layer(j->tr, pu->li), &j->so, out, err);
}

static as_status report_consume(void *vctx, size_t u, as_mpi_rd *in, char *err)
{
    report_job *j = vctx;
    if (u > 0) return as_par_summary_add(&j->ps, in, err);
    const char *hex = as_mpi_get_str(in), *per_file = as_mpi_get_str(in);
    if (in->bad || !hex) return as_err_set(err, AS_ERR_IO, "the checksum was damaged in transit");
    snprintf(j->hex, sizeof j->hex, "%s", hex);
    if (per_file && !(j->per_file = strdup(per_file)))
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    return AS_OK;
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

/* The checksum (unit 0) and each layer's summary, shared by the ranks; then, on rank 0, the
 * page (t0: when the run began). A rank other than 0 returns AS_OK with no page. */
static as_status report_make(report_run *r, const report_opts *ro, const as_cli_common *c,
                             const char *cmdline, struct timespec t0, size_t *len, int *nfig,
                             char *err)
{
    as_trace *tr = r->j.tr;
    report_job rj;
    memset(&rj, 0, sizeof rj);
    rj.tr = tr;
    as_summary_opts_init(&rj.so);
    rj.so.witness = ro->witness;
    rj.so.threads = as_mpi_size() > 1 ? 1 : 0; /* several ranks: one core each (docs/scale.md) */
    rj.so.progress = as_par_prog_inner;
    rj.so.ctx = &rj.prog;
    size_t nl = 0;
    as_par_unit *units = as_par_layer_units(&tr, 1, c->layer, NULL, NULL, &nl);
    double *cost = malloc((nl + 1) * sizeof *cost);
    as_status st = as_mpi_agree(units && cost ? 0 : 2) != 0
                       ? as_err_set(err, AS_ERR_NOMEM, "out of memory")
                       : AS_OK;
    if (st == AS_OK) {
        rj.units = units;
        /* costs: a layer's summary ~ hq t n; the checksum ~ bytes / 1000 on that scale */
        cost[0] = (double)as_trace_file_bytes(tr) / 1000.0 + 1;
        for (size_t u = 0; u < nl; u++) cost[u + 1] = units[u].cost;
        as_par_prog_start(&rj.prog, "report", c->quiet);
        as_mpi_job job = {nl + 1, cost, report_work, report_consume, &rj, as_par_prog_engine,
                          &rj.prog};
        st = as_mpi_run(&job, NULL, err);
    }
    free(units);
    free(cost);
    if (st == AS_OK && as_mpi_rank() == 0 && !(r->s = as_par_summary_finish(&rj.ps, err)))
        st = AS_ERR_NOMEM;
    as_par_summary_free(&rj.ps);
    r->per_file = rj.per_file;
    memcpy(r->hex, rj.hex, sizeof r->hex);
    if (st != AS_OK || !r->s) { /* a failure, or a rank other than 0 */
        as_par_prog_end(&rj.prog);
        r->analysis_failed = st != AS_OK;
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
    st = as_report_html(tr, r->s, &info, &r->html, len, nfig, err);
    as_par_prog_end(&rj.prog);
    return st;
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
    as_status st = report_make(&r, &ro, &c, cmdline, t0, &len, &nfig, err);
    if (r.analysis_failed) { /* said once, on rank 0, with the failing rank */
        report_free(&r);
        return as_par_fail("report", st, err);
    }
    if (st == AS_OK && !r.s) { /* a rank other than 0: its part is done */
        report_free(&r);
        return 0;
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
