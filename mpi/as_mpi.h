/* as_mpi: the optional MPI engine of the analysis commands (issue 19, docs/scale.md).
 *
 * A command cuts its work into units (a layer of a trace, ...) numbered in the order the
 * single-process run produces its output. as_mpi_run gives every unit to one rank (by cost,
 * in unit order: as_mpi_plan), each rank computes its own units and serialises each result
 * into a byte buffer, and rank 0 takes the results in unit order (as_mpi_job.consume),
 * keeping only those that arrive before their turn. The command's consume step is the same
 * code at 1 rank and at P: the output is byte-identical by construction.
 *
 * Built without MPI (no OpenMPI at configure time), or run without mpirun, the engine is the
 * plain loop "compute unit, consume unit" in one process.
 *
 * Faults: a unit that fails on any rank stops every rank (between units) with one line on rank
 * 0's stderr, the unit's message followed by " (rank R of P)", and the same status on every
 * rank; nothing is left waiting. Ranks other than 0 write nothing to stdout; their stderr is
 * captured (as_mpi_init) and the first failing rank's last line is shown by rank 0
 * (as_mpi_agree), so an error that every rank meets is printed once. */
#ifndef AS_MPI_H
#define AS_MPI_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "as_error.h"

/* ---- byte buffers: a unit's result on its way to rank 0 ----------------------------------- */
typedef struct {
    unsigned char *p;
    size_t len, cap;
    int failed; /* an allocation failed: the buffer is incomplete */
} as_mpi_buf;

void as_mpi_buf_init(as_mpi_buf *b);
void as_mpi_buf_free(as_mpi_buf *b);
void as_mpi_put(as_mpi_buf *b, const void *data, size_t n);
void as_mpi_put_i64(as_mpi_buf *b, int64_t v);
void as_mpi_put_f64(as_mpi_buf *b, double v);
void as_mpi_put_str(as_mpi_buf *b, const char *s); /* NULL allowed */
/* A cJSON value, exactly: numbers as their 8 bytes (NaN and Inf kept), strings, booleans,
 * null, arrays and objects with their keys in order. */
void as_mpi_put_json(as_mpi_buf *b, const cJSON *j);

typedef struct {
    const unsigned char *p;
    size_t len, pos;
    int bad; /* read past the end or malformed */
} as_mpi_rd;

void as_mpi_rd_init(as_mpi_rd *r, const void *p, size_t len);
int as_mpi_get(as_mpi_rd *r, void *out, size_t n); /* 0, or -1 (and r->bad) past the end */
int64_t as_mpi_get_i64(as_mpi_rd *r);
double as_mpi_get_f64(as_mpi_rd *r);
/* A string written by as_mpi_put_str: points into the buffer (NULL for a NULL string or on
 * an error: check r->bad). */
const char *as_mpi_get_str(as_mpi_rd *r);
/* A cJSON value written by as_mpi_put_json (caller frees); NULL and r->bad on an error. */
cJSON *as_mpi_get_json(as_mpi_rd *r);
static inline int as_mpi_rd_end(const as_mpi_rd *r) { return r->pos >= r->len; }

/* ---- the ranks ------------------------------------------------------------------------------ */
/* Start MPI when the program was started by an MPI launcher (mpirun, srun: OMPI_COMM_WORLD_SIZE,
 * PMI_SIZE or PMIX_RANK in the environment) and this build has MPI; else nothing (one rank).
 * On ranks other than 0 stdout goes to /dev/null and stderr to a private temporary file.
 * Returns 0, or -1 with a message in err when MPI was asked for and failed to start. */
int as_mpi_init(int *argc, char ***argv, char *err);
void as_mpi_finalize(void);
int as_mpi_rank(void);
int as_mpi_size(void);
/* The ranks on this rank's node (sharing its memory), this one included; 1 without MPI. */
int as_mpi_local_size(void);
int as_mpi_built(void); /* 1 when this build has MPI */

/* Every rank passes its exit code (0: fine); all ranks get the largest. When it is not 0 and
 * rank 0's own code was 0, rank 0 prints the first failing rank's last stderr line followed by
 * " (rank R of P)". One rank: returns code unchanged. A command calls it (with 0) after its
 * set-up, before as_mpi_run, and main() once more with the command's exit code: a rank whose
 * set-up failed meets the others at the first call. Once a failure is agreed on, later calls
 * return it at once (no collective call). */
int as_mpi_agree(int code);

/* ---- plan: units to ranks ------------------------------------------------------------------ */
/* owner[u] for u in [0, n): in unit order, each unit goes to the rank with the least cost so
 * far (ties: the lowest rank). Every rank then holds within the largest unit's cost of the
 * mean, and ranks advance through the unit order together, so rank 0 buffers few results.
 * Costs <= 0 count as 1. */
void as_mpi_plan(const double *cost, size_t n, int nranks, int *owner);

/* ---- a run ----------------------------------------------------------------------------------- */
typedef struct {
    size_t n_units;
    const double *cost; /* [n_units] (NULL: all 1) */
    /* On the unit's rank: compute unit u and append its result to out. An error: a status and
     * one line in err naming the input (the engine adds the rank). */
    as_status (*work)(void *ctx, size_t u, as_mpi_buf *out, char *err);
    /* On rank 0, once per unit and in unit order: take unit u's result. */
    as_status (*consume)(void *ctx, size_t u, as_mpi_rd *in, char *err);
    void *ctx;
    /* On rank 0 (may be NULL): the cost of the units done so far on every rank, of total. */
    void (*progress)(void *progress_ctx, double done, double total);
    void *progress_ctx;
} as_mpi_job;

typedef struct {
    double wall_s;     /* the whole run on this rank */
    double cpu_s;      /* CPU time of this rank's process during the run (user + system) */
    double work_s;     /* in work() */
    double merge_s;    /* rank 0: receiving, buffering and consume() */
    size_t units;      /* units computed here */
    size_t bytes_out;  /* bytes of results produced here */
    size_t max_held;   /* rank 0: most bytes of results held at once, waiting for their turn */
} as_mpi_stats;

/* Run a job on every rank (every rank calls it with the same units and costs). Returns AS_OK,
 * or the first failure's status on every rank; on rank 0 err then holds its line (with
 * " (rank R of P)" when P > 1), on other ranks err is empty. stats may be NULL. With
 * ATTNSCOPE_MPI_STATS=1 in the environment each rank prints its stats as one line on stderr
 * (rank 0's goes to the terminal; docs/scale.md). */
as_status as_mpi_run(const as_mpi_job *job, as_mpi_stats *stats, char *err);

/* Between two units of a long command (rank other than 0): 1 when rank 0 asked to stop. */
int as_mpi_stop_requested(void);

#endif
