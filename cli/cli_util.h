/* cli_util: what every attnscope subcommand shares — common options, one record schema
 * printed as a human table, a JSON document or CSV, a progress bar. Files are written through
 * data/as_outfile.h (atomic, never over an input). */
#ifndef AS_CLI_UTIL_H
#define AS_CLI_UTIL_H

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "as_error.h"
#include "as_mpi.h"    /* as_mpi_buf, as_mpi_rd: a unit's records */
#include "as_outfile.h" /* as_write_file_atomic */
#include "as_trace.h"

typedef enum { AS_FMT_TABLE = 0, AS_FMT_JSON, AS_FMT_CSV } as_fmt;

/* Options most analysis commands take. layer/head are -1 for "all". */
typedef struct {
    const char *trace;
    int layer;
    int head;
    as_fmt fmt;
    int quiet;
    int progress; /* --progress: draw the progress bar even when stderr is not a terminal */
} as_cli_common;

/* getopt_long entries for the common options; ids are >= 1000 so commands can use letters. */
enum {
    AS_OPT_LAYER = 1000,
    AS_OPT_HEAD,
    AS_OPT_JSON,
    AS_OPT_CSV,
    AS_OPT_QUIET,
    AS_OPT_HELP,
    AS_OPT_PROGRESS
};
#define AS_CLI_COMMON_LONGOPTS                                                                 \
    {"layer", required_argument, 0, AS_OPT_LAYER}, {"head", required_argument, 0, AS_OPT_HEAD}, \
        {"json", no_argument, 0, AS_OPT_JSON}, {"csv", no_argument, 0, AS_OPT_CSV},            \
        {"quiet", no_argument, 0, AS_OPT_QUIET}, {"help", no_argument, 0, AS_OPT_HELP},        \
        {"progress", no_argument, 0, AS_OPT_PROGRESS}

void as_cli_common_init(as_cli_common *c);
/* --help prints through fn(cmd, stdout); the program registers it once (cli/main.c). */
typedef void (*as_cli_help_fn)(const char *cmd, FILE *f);
void as_cli_set_help(as_cli_help_fn fn);
/* Handle one common option; returns 1 if handled, 0 if not a common option, -1 on a bad value
 * (message printed). AS_OPT_HELP prints the command's help and returns 2 (caller exits 0). */
int as_cli_common_opt(as_cli_common *c, const char *cmd, int opt, const char *arg);

/* Print "attnscope CMD: message" to stderr and return the exit code for status. */
int as_cli_fail(const char *cmd, as_status st, const char *msg);
/* A unit of the MPI engine (cli_job.c): between as_cli_fail_capture(1) and
 * as_cli_fail_captured, as_cli_fail and as_cli_usage keep their first message instead of
 * printing it; as_cli_fail_captured(rc, err) ends the capture and returns AS_OK when rc is 0,
 * else the captured status with its message in err (rank 0 prints it, naming the rank). */
void as_cli_fail_capture(int on);
as_status as_cli_fail_captured(int rc, char *err);
/* Report a usage error for cmd (exit code 2). */
int as_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The usage error for what getopt_long (optstring starting with ':') could not take: opt ':'
 * is an option without its value, anything else an unknown option. Returns 2. */
int as_cli_bad_option(const char *cmd, int opt, char **argv);

/* Open a trace for a command, printing "attnscope CMD: PATH: message" on failure. Also checks
 * values for NaN/Inf unless check_finite is 0. Returns NULL on failure; *code gets the exit code. */
as_trace *as_cli_open_trace(const char *cmd, const char *path, int check_finite, int *code);

/* Parse an integer option value; returns -1 (and prints) when it is not an integer in range. */
int as_cli_parse_int(const char *cmd, const char *opt, const char *arg, long lo, long hi,
                     long *out);
/* Parse an unsigned 64-bit option value (a seed): decimal digits, or 0x and hex digits; no
 * sign, no spaces, at most 2^64 - 1. Returns -1 (and prints "--OPT expects ...") otherwise. */
int as_cli_parse_u64(const char *cmd, const char *opt, const char *arg, uint64_t *out);
/* Parse a real option value in [lo, hi] (open at an end whose flag is set); returns -1 (and
 * prints "--OPT expects a number in (lo, hi], got 'ARG'") when it is not. */
enum { AS_OPEN_LO = 1, AS_OPEN_HI = 2 };
int as_cli_parse_real(const char *cmd, const char *opt, const char *arg, double lo, double hi,
                      int open, double *out);

/* ---- records: one schema for table / JSON / CSV -------------------------------------------
 * A command emits cJSON objects ("records"); each has a string field "record" naming its kind.
 * JSON: {"attnscope": VERSION, "command": ..., "trace": ..., "records": [...]}.
 * CSV: one header = union of record fields (in first-seen order), one row per record.
 * Table: for each record kind with a registered table, the chosen columns. */
typedef struct as_out as_out;

as_out *as_out_new(as_fmt fmt, const char *command, const char *trace_path);
/* Describe the human table of a record kind: cols are field names, heads the column titles,
 * fmts printf formats for numbers ("%.4f", "%d"); NULL-terminated arrays of equal length. */
void as_out_table(as_out *o, const char *kind, const char *title, const char *const *cols,
                  const char *const *heads, const char *const *fmts);
/* Append a record (ownership taken). */
void as_out_add(as_out *o, cJSON *rec);
/* Add extra top-level JSON fields (ownership taken), e.g. a summary object. */
void as_out_meta(as_out *o, const char *key, cJSON *value);
/* Print to f and free o. Returns 0 or an exit code on an output error. */
int as_out_finish(as_out *o, FILE *f);
/* Free o without printing (a command that failed half-way). NULL is allowed. */
void as_out_free(as_out *o);
/* The end of a command: rc == 0: print o to stdout and free it (returns 0 or the output
 * error's exit code); rc != 0: discard o (nothing printed) and return rc. */
int as_out_done(as_out *o, int rc);
/* The records added so far (a JSON array owned by o), e.g. for a summary over them: read back
 * from the spool (records are not held: memory for them only while this array lives, until
 * the next call or as_out_free). */
const cJSON *as_out_records(as_out *o);

/* Records stream through: as_out_add encodes each into a temporary file at once (memory does
 * not grow with their number) and as_out_finish writes them from there.
 * A unit of the MPI engine (mpi/as_mpi.h): as_out_new_unit gives an as_out whose records are
 * appended to sink (free it with as_out_free; no tables, meta or finish); rank 0 adds a unit's
 * records, in the order they were made, with as_out_add_unit (-1: malformed). */
as_out *as_out_new_unit(as_fmt fmt, as_mpi_buf *sink);
int as_out_add_unit(as_out *o, as_mpi_rd *in);

/* New record {"record": kind, "layer": L, "head": H} (head < 0: omitted). */
cJSON *as_rec_new(const char *kind, int layer, int64_t head);
/* New record of a statistic over queries: as_rec_new's fields, then "kv_head" (kv_head < 0:
 * omitted), "stat" (its name: mean, median, ...) and "queries". */
cJSON *as_rec_stat(const char *kind, int layer, int64_t head, int64_t kv_head, const char *stat,
                   int64_t queries);

/* ---- progress bar on stderr (label, bar, percentage, elapsed time, ETA): when stderr is a
 * terminal or --progress was given, never with --quiet; drawn from half a second on by a
 * thread of its own, so it shows even while one step takes long. as_progress_update may be
 * called from any thread. */
typedef struct as_progress as_progress;
as_progress *as_progress_new(const char *label, uint64_t total, int quiet);
void as_progress_update(as_progress *p, uint64_t done);
void as_progress_free(as_progress *p); /* clears the line */

/* Install the handlers every command runs under: SIGBUS (a mapped input truncated under us:
 * one line naming the file, temporary outputs removed, exit 2) and SIGINT/SIGTERM/SIGHUP
 * (temporary outputs removed, then the default action). */
void as_cli_guard_install(const char *cmd);

/* Check, before any long work, that an output file can be written at path: not empty, not a
 * directory, not an open input (the trace, an index file; call after opening them), its
 * folder exists and is writable. Prints one line and returns 2 if not, else 0. */
int as_cli_check_output(const char *cmd, const char *path);

#endif
