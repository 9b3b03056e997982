/* as_study: the page of `attnscope report A B C ...`, a study over several traces (models,
 * prompts, lengths) on one self-contained HTML page (issue 19).
 *
 * First what the traces have in common: one row per trace (model, prompt, keys N, layers, and
 * per selection method the model-level median sparsity at 1% and 5% error and the heads that
 * need dense attention, from each trace's as_summary) and figures comparing them (median
 * tolerated sparsity per method and trace). Then each trace's report as `attnscope report`
 * makes it alone (as_report_trace_body: the ids of trace K's sections and figures start with
 * "tK-"), the GPU and eval sections once (they describe a run, not a trace), and the
 * provenance: every trace file with its SHA-256, the command, the libraries. */
#ifndef AS_STUDY_H
#define AS_STUDY_H

#include <stddef.h>

#include "as_error.h"
#include "as_report.h"
#include "as_summary.h"
#include "as_trace.h"

typedef struct {
    const as_trace *tr;
    const as_summary *s;
    const char *sha256;      /* hex checksum of the trace file(s) */
    const char *sha256_note; /* per-file checksums of an .npy directory, or NULL */
} as_study_trace;

/* The page of traces t[0..n); info gives the command, the GPU and eval documents (shown once)
 * and the analysis time (its sha256 fields are not used). *html is malloc'd (caller frees);
 * the number of figures drawn in *n_figures (may be NULL). */
as_status as_study_html(const as_study_trace *t, size_t n, const as_report_info *info,
                        char **html, size_t *len, int *n_figures, char *err);

/* A trace's label on the page: "model / prompt" (the prompt when the trace names one). */
void as_study_label(const as_trace *tr, char *buf, size_t n);

#endif
