/* as_report: the self-contained HTML report of one trace (inline SVG figures from as_plot,
 * inline CSS, no scripts, no external URL), built from an as_summary. */
#ifndef AS_REPORT_H
#define AS_REPORT_H

#include <stddef.h>

#include "as_error.h"
#include "as_html.h"
#include "as_summary.h"
#include "as_trace.h"

typedef struct {
    const char *command;      /* the command line as typed (provenance) */
    const char *gpu_json;     /* optional: the document of `attnscope gpu bench --json` */
    const char *gpu_json_path;
    const char *sha256;       /* hex checksum of the trace file(s) (NULL: not computed) */
    const char *sha256_note;  /* e.g. per-file checksums of an .npy directory */
    double seconds;           /* analysis time, shown in the footer (< 0: omitted) */
    const char *eval_json;    /* optional: the document of `attnscope eval` (eval.json) */
    const char *eval_json_path;
} as_report_info;

/* Build the document; *html is malloc'd (caller frees). The number of figures drawn is
 * returned in *n_figures (may be NULL). */
as_status as_report_html(const as_trace *tr, const as_summary *s, const as_report_info *info,
                         char **html, size_t *len, int *n_figures, char *err);

/* The page of `attnscope report --eval eval.json` without a trace: the task-accuracy section
 * (accuracy and KL(dense || sparse) against sparsity per method, the per-head prediction
 * against the model-level tolerance when the document has it) and provenance. */
as_status as_report_eval_html(const as_report_info *info, char **html, size_t *len,
                              int *n_figures, char *err);

/* The comparison page of two traces (`attnscope compare A B -o FILE`): per-layer quantities
 * of both on shared axes (x: relative depth when both traces state n_layers_model, else the
 * layer index), their attention profiles, error-versus-sparsity of every method for both,
 * and the provenance of each. info[i] describes trace i (its command field is shown once). */
as_status as_report_compare_html(const as_trace *const tr[2], const as_summary *const s[2],
                                 const as_report_info info[2], char **html, size_t *len,
                                 int *n_figures, char *err);

/* ---- the pieces of a page, for the page of several traces (report/as_study.h) ------------ */
typedef struct {
    as_buf *b;
    int figures, failed; /* figures drawn; figures that failed (shown as a note instead) */
    const char *idp;     /* prefix of every section's and figure's id ("t1-"; NULL: none) */
} as_report_page;

/* One trace's content as as_report_html shows it: its header (h1 = title: model, prompt,
 * path, the links to its sections, the cards), every analysis section, the GPU and eval
 * sections when info has them, its provenance; ids prefixed with p->idp. */
void as_report_trace_body(as_report_page *p, const as_trace *tr, const as_summary *s,
                          const as_report_info *info, const char *title);
/* The GPU section (info->gpu_json) and the eval section (info->eval_json); nothing when absent. */
void as_report_gpu_section(as_report_page *p, const as_report_info *info);
void as_report_eval_section(as_report_page *p, const as_report_info *info);
/* A figure (svg: as_plot's markup, freed here; NULL: a note with err instead), id prefixed. */
void as_report_figure(as_report_page *p, const char *id, char *svg, const char *caption,
                      const char *err);
/* The footer (extra: a sentence after the common one), the closing tags; *html handed over.
 * what names the page in the out-of-memory message. */
as_status as_report_page_finish(as_report_page *p, const char *extra, const char *what,
                                char **html, size_t *len, int *n_figures, char *err);
/* What a paper calls a selection method ("topk" -> "oracle top-k"). */
const char *as_report_method_title(const char *method);
/* A tolerated sparsity as the report shows it: "2.5x", "&ge; 100x", "&lt; 2x" (NaN). */
void as_report_put_tol(as_buf *b, double v, const as_summary *s);

/* "attnscope ARGV..." with arguments shell-quoted where needed (argv[0] is the subcommand);
 * malloc'd. Call before getopt permutes argv. */
char *as_report_command_line(int argc, char **argv);

/* Library versions used to draw and checksum ("PLplot 5.15.0, OpenSSL 3.0.x"). */
void as_report_versions(char *buf, size_t n);

/* The provenance rows a run shares with every page it writes: attnscope version, command, the
 * GPU and eval documents, library versions, when generated, the analysis time (into an open
 * key-value list of b). */
void as_report_run_kv(as_buf *b, const as_report_info *info);

#endif
