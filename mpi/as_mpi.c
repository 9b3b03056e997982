#include "as_mpi.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#ifdef AS_HAVE_MPI
#include <mpi.h>
#endif

/* ---------------------------------------------------------------- buffers */
void as_mpi_buf_init(as_mpi_buf *b) { memset(b, 0, sizeof *b); }

void as_mpi_buf_free(as_mpi_buf *b)
{
    free(b->p);
    as_mpi_buf_init(b);
}

void as_mpi_put(as_mpi_buf *b, const void *data, size_t n)
{
    if (b->failed || n == 0) return;
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n) nc *= 2;
        unsigned char *q = realloc(b->p, nc);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void as_mpi_put_i64(as_mpi_buf *b, int64_t v) { as_mpi_put(b, &v, sizeof v); }
void as_mpi_put_f64(as_mpi_buf *b, double v) { as_mpi_put(b, &v, sizeof v); }

void as_mpi_put_str(as_mpi_buf *b, const char *s)
{
    as_mpi_put_i64(b, s ? (int64_t)strlen(s) : -1);
    if (s) as_mpi_put(b, s, strlen(s) + 1);
}

void as_mpi_rd_init(as_mpi_rd *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->bad = 0;
}

int as_mpi_get(as_mpi_rd *r, void *out, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        memset(out, 0, n);
        return -1;
    }
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

int64_t as_mpi_get_i64(as_mpi_rd *r)
{
    int64_t v;
    as_mpi_get(r, &v, sizeof v);
    return v;
}

double as_mpi_get_f64(as_mpi_rd *r)
{
    double v;
    as_mpi_get(r, &v, sizeof v);
    return v;
}

const char *as_mpi_get_str(as_mpi_rd *r)
{
    int64_t n = as_mpi_get_i64(r);
    if (r->bad || n < 0) return NULL;
    if ((uint64_t)n >= r->len - r->pos || r->p[r->pos + (size_t)n] != '\0') {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p + r->pos;
    r->pos += (size_t)n + 1;
    return s;
}

/* ---------------------------------------------------------------- cJSON values */
enum { J_NULL = 'n', J_TRUE = 't', J_FALSE = 'f', J_NUM = 'd', J_STR = 's', J_ARR = 'a', J_OBJ = 'o' };

void as_mpi_put_json(as_mpi_buf *b, const cJSON *j)
{
    unsigned char tag;
    if (cJSON_IsNumber(j))
        tag = J_NUM;
    else if (cJSON_IsString(j))
        tag = J_STR;
    else if (cJSON_IsTrue(j))
        tag = J_TRUE;
    else if (cJSON_IsFalse(j))
        tag = J_FALSE;
    else if (cJSON_IsArray(j))
        tag = J_ARR;
    else if (cJSON_IsObject(j))
        tag = J_OBJ;
    else
        tag = J_NULL;
    as_mpi_put(b, &tag, 1);
    if (tag == J_NUM) {
        as_mpi_put_f64(b, j->valuedouble);
    } else if (tag == J_STR) {
        as_mpi_put_str(b, j->valuestring);
    } else if (tag == J_ARR || tag == J_OBJ) {
        int64_t n = cJSON_GetArraySize(j);
        as_mpi_put_i64(b, n);
        const cJSON *c;
        cJSON_ArrayForEach(c, j)
        {
            if (tag == J_OBJ) as_mpi_put_str(b, c->string);
            as_mpi_put_json(b, c);
        }
    }
}

static cJSON *get_json(as_mpi_rd *r, int depth)
{
    unsigned char tag = 0;
    if (depth > 64 || as_mpi_get(r, &tag, 1) != 0) {
        r->bad = 1;
        return NULL;
    }
    switch (tag) {
    case J_NULL: return cJSON_CreateNull();
    case J_TRUE: return cJSON_CreateTrue();
    case J_FALSE: return cJSON_CreateFalse();
    case J_NUM: {
        double v = as_mpi_get_f64(r);
        return r->bad ? NULL : cJSON_CreateNumber(v);
    }
    case J_STR: {
        const char *s = as_mpi_get_str(r);
        return s ? cJSON_CreateString(s) : NULL;
    }
    case J_ARR:
    case J_OBJ: {
        int64_t n = as_mpi_get_i64(r);
        if (r->bad || n < 0 || (uint64_t)n > r->len) {
            r->bad = 1;
            return NULL;
        }
        cJSON *c = tag == J_ARR ? cJSON_CreateArray() : cJSON_CreateObject();
        for (int64_t i = 0; c && i < n; i++) {
            const char *key = tag == J_OBJ ? as_mpi_get_str(r) : NULL;
            cJSON *v = (tag == J_OBJ && !key) ? NULL : get_json(r, depth + 1);
            if (!v) {
                cJSON_Delete(c);
                r->bad = 1;
                return NULL;
            }
            if (tag == J_OBJ)
                cJSON_AddItemToObject(c, key, v);
            else
                cJSON_AddItemToArray(c, v);
        }
        return c;
    }
    default: r->bad = 1; return NULL;
    }
}

cJSON *as_mpi_get_json(as_mpi_rd *r) { return get_json(r, 0); }

/* ---------------------------------------------------------------- plan */
void as_mpi_plan(const double *cost, size_t n, int nranks, int *owner)
{
    if (nranks < 1) nranks = 1;
    double *load = calloc((size_t)nranks, sizeof *load);
    for (size_t u = 0; u < n; u++) {
        double c = cost && cost[u] > 0 ? cost[u] : 1;
        int best = 0;
        if (load)
            for (int r = 1; r < nranks; r++)
                if (load[r] < load[best]) best = r;
        owner[u] = load ? best : (int)(u % (size_t)nranks);
        if (load) load[best] += c;
    }
    free(load);
}

/* ---------------------------------------------------------------- ranks */
static int g_rank = 0, g_size = 1, g_mpi_on = 0, g_local = 1;
static int g_captured_fd = -1; /* ranks > 0: the file their stderr goes to */

int as_mpi_rank(void) { return g_rank; }
int as_mpi_size(void) { return g_size; }
int as_mpi_local_size(void) { return g_local; }

int as_mpi_built(void)
{
#ifdef AS_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int as_mpi_init(int *argc, char ***argv, char *err)
{
#ifdef AS_HAVE_MPI
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK"))
        return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        as_err_set(err, AS_ERR_IO, "MPI_Init failed");
        return -1;
    }
    g_mpi_on = 1;
    /* errors come back as codes (a peer that died is reported, not a crash) */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_size(node, &g_local);
        MPI_Comm_free(&node);
    }
    if (g_local < 1) g_local = 1;
    /* Under mpirun a rank's stdout is a pseudo-terminal that mpirun forwards, so stdio would
     * buffer it by line: a JSON document of 300k lines then costs 300k write calls on rank 0,
     * about 1 s of system time at the end of the run (docs/benchmarks.md, "MPI engine").
     * Rank 0 writes its output at the end of a command in any case: buffer it in blocks, as
     * stdout to a file or a pipe is. Nothing has been written to stdout yet. */
    if (g_rank == 0) {
        setvbuf(stdout, NULL, _IOFBF, (size_t)1 << 16);
        /* The terminal's output processing (OPOST) makes the kernel pass the bytes to mpirun a
         * few at a time; with none of its conversions on (OpenMPI's pty has no ONLCR) it
         * changes no byte, so it goes off: the output is the same, written in large blocks. */
        struct termios tio;
        const tcflag_t conv = ONLCR | OCRNL | ONOCR | ONLRET | OLCUC | TABDLY | OFILL;
        if (isatty(STDOUT_FILENO) && tcgetattr(STDOUT_FILENO, &tio) == 0 &&
            (tio.c_oflag & OPOST) && !(tio.c_oflag & conv)) {
            tio.c_oflag &= ~(tcflag_t)OPOST;
            tcsetattr(STDOUT_FILENO, TCSANOW, &tio);
        }
    }
    if (g_rank > 0) {
        int dn = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (dn >= 0) {
            fflush(stdout);
            dup2(dn, STDOUT_FILENO);
            close(dn);
        }
        FILE *t = tmpfile();
        if (t) {
            fflush(stderr);
            g_captured_fd = dup(fileno(t));
            dup2(fileno(t), STDERR_FILENO);
            fclose(t);
        }
    }
#else
    (void)argc, (void)argv, (void)err;
#endif
    return 0;
}

void as_mpi_finalize(void)
{
#ifdef AS_HAVE_MPI
    if (g_mpi_on) MPI_Finalize();
    g_mpi_on = 0;
#endif
}

#ifdef AS_HAVE_MPI
enum { TAG_DATA = 101, TAG_ERR, TAG_FIN, TAG_STOP, TAG_END, TAG_AGREE, TAG_STATS };

/* Waiting without spinning: MPI's blocking calls poll at full speed, which on a machine with
 * as many ranks as cores (or fewer cores: --oversubscribe, other jobs) takes the CPU from the
 * ranks still working. A rank that waits polls with growing sleeps (50 us to 2 ms); units
 * take seconds, so the latency does not show. */
static void nap(int *us)
{
    struct timespec t = {0, 1000L * *us};
    nanosleep(&t, NULL);
    if (*us < 2000) *us *= 2;
}

/* Probe for a message (as MPI_Probe, sleeping between polls). */
static int probe_wait(int src, int tag, MPI_Status *ms)
{
    int us = 50, flag = 0, rc;
    while ((rc = MPI_Iprobe(src, tag, MPI_COMM_WORLD, &flag, ms)) == MPI_SUCCESS && !flag)
        nap(&us);
    return rc;
}

/* Complete requests (as MPI_Waitall, sleeping between tests). */
static void wait_all(int n, MPI_Request *req)
{
    int us = 50, done = 0;
    while (MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE) == MPI_SUCCESS && !done) nap(&us);
}

/* MPI_Allreduce of one int, waiting as above (a rank that arrives first does not spin). */
static int allreduce_int(int v, MPI_Op op)
{
    int out = v;
    MPI_Request req;
    if (MPI_Iallreduce(&v, &out, 1, MPI_INT, op, MPI_COMM_WORLD, &req) != MPI_SUCCESS) return v;
    wait_all(1, &req);
    return out;
}


/* The last non-empty line this rank wrote to its (captured) stderr. */
static void captured_last_line(char *out, size_t cap)
{
    out[0] = '\0';
    fflush(stderr);
    if (g_captured_fd < 0) return;
    off_t end = lseek(g_captured_fd, 0, SEEK_END);
    if (end <= 0) return;
    size_t want = end > 8192 ? 8192 : (size_t)end;
    char buf[8193];
    if (pread(g_captured_fd, buf, want, end - (off_t)want) != (ssize_t)want) return;
    buf[want] = '\0';
    size_t n = want;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    char *s = buf + n;
    while (s > buf && s[-1] != '\n' && s[-1] != '\r') s--;
    size_t k = strlen(s) < cap - 1 ? strlen(s) : cap - 1;
    memcpy(out, s, k);
    out[k] = '\0';
}
#endif

int as_mpi_agree(int code)
{
#ifdef AS_HAVE_MPI
    static int agreed_fail; /* a failure was agreed on: no more collective calls */
    if (!g_mpi_on || g_size == 1) return code;
    if (agreed_fail) return agreed_fail;
    int first = code ? g_rank : g_size;
    int mx = allreduce_int(code, MPI_MAX);
    if (mx == 0) return 0;
    agreed_fail = mx;
    int f = allreduce_int(first, MPI_MIN);
    if (f == 0 || f >= g_size) return mx;
    char line[4096];
    if (g_rank == f) {
        captured_last_line(line, sizeof line);
        if (!line[0]) snprintf(line, sizeof line, "attnscope: failed");
        MPI_Send(line, (int)strlen(line) + 1, MPI_CHAR, 0, TAG_AGREE, MPI_COMM_WORLD);
    } else if (g_rank == 0) {
        MPI_Recv(line, (int)sizeof line, MPI_CHAR, f, TAG_AGREE, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        line[sizeof line - 1] = '\0';
        fprintf(stderr, "%s (rank %d of %d)\n", line, f, g_size);
    }
    return mx;
#else
    return code;
#endif
}

/* ---------------------------------------------------------------- run */
static void put_status_line(as_mpi_buf *b, as_status st, const char *msg)
{
    as_mpi_put_i64(b, (int64_t)st);
    as_mpi_put_str(b, msg);
}

static double cpu_now_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

/* Compute unit u into b (timed and counted in s); an error's message in e. */
static as_status run_unit(const as_mpi_job *job, size_t u, as_mpi_buf *b, as_mpi_stats *s,
                          char *e)
{
    double t0 = now_s();
    as_status st = job->work(job->ctx, u, b, e);
    s->work_s += now_s() - t0;
    s->units++;
    if (st == AS_OK && b->failed) st = as_err_set(e, AS_ERR_NOMEM, "out of memory");
    if (st == AS_OK && b->len > INT_MAX)
        st = as_err_set(e, AS_ERR_NOMEM, "a unit's result exceeds 2 GiB");
    if (st == AS_OK) s->bytes_out += b->len;
    return st;
}

/* One process: compute and consume each unit in turn. */
static as_status run_local(const as_mpi_job *job, as_mpi_stats *s, char *err)
{
    double total = 0, done = 0;
    for (size_t u = 0; u < job->n_units; u++) total += job->cost ? job->cost[u] : 1;
    as_mpi_buf b;
    as_mpi_buf_init(&b);
    as_status st = AS_OK;
    for (size_t u = 0; u < job->n_units && st == AS_OK; u++) {
        b.len = 0;
        st = run_unit(job, u, &b, s, err);
        if (st != AS_OK) break;
        double t1 = now_s();
        if (b.len > s->max_held) s->max_held = b.len;
        as_mpi_rd r;
        as_mpi_rd_init(&r, b.p, b.len);
        st = job->consume(job->ctx, u, &r, err);
        s->merge_s += now_s() - t1;
        done += job->cost ? job->cost[u] : 1;
        if (job->progress) job->progress(job->progress_ctx, done, total);
    }
    as_mpi_buf_free(&b);
    return st;
}

#ifdef AS_HAVE_MPI
typedef struct {
    const as_mpi_job *job;
    as_mpi_stats *s;
    unsigned char **held; /* [n_units] results waiting for their turn (rank 0) */
    size_t *held_len;
    size_t held_bytes, next;
    double done, total;
    as_status st;
    int fins;
    char *err;
} root_t;

static void root_fail(root_t *R, as_status st, const char *msg, int rank)
{
    if (R->st != AS_OK) return;
    R->st = st;
    snprintf(R->err, AS_ERR_LEN, "%s (rank %d of %d)", msg, rank, g_size);
    static const int stop = 1;
    for (int r = 1; r < g_size; r++)
        MPI_Send(&stop, 1, MPI_INT, r, TAG_STOP, MPI_COMM_WORLD);
}

static void root_consume_ready(root_t *R)
{
    const as_mpi_job *job = R->job;
    while (R->st == AS_OK && R->next < job->n_units && R->held[R->next]) {
        size_t u = R->next;
        as_mpi_rd r;
        as_mpi_rd_init(&r, R->held[u], R->held_len[u]);
        char e[AS_ERR_LEN] = "";
        as_status st = job->consume(job->ctx, u, &r, e);
        free(R->held[u]);
        R->held[u] = (unsigned char *)1; /* consumed: not NULL, never freed again */
        R->held_bytes -= R->held_len[u];
        R->next++;
        if (st != AS_OK) root_fail(R, st, e, 0);
    }
}

static void root_hold(root_t *R, size_t u, unsigned char *data, size_t len)
{
    R->held[u] = data;
    R->held_len[u] = len;
    R->held_bytes += len;
    if (R->held_bytes > R->s->max_held) R->s->max_held = R->held_bytes;
    R->done += R->job->cost ? R->job->cost[u] : 1;
    if (R->job->progress) R->job->progress(R->job->progress_ctx, R->done, R->total);
}

/* Receive one message (blocking when wait, else only if one is there); 1 if one was taken. */
static int root_receive(root_t *R, int wait)
{
    MPI_Status ms;
    int flag = 1, rc;
    if (wait)
        rc = probe_wait(MPI_ANY_SOURCE, MPI_ANY_TAG, &ms);
    else
        rc = MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &ms);
    if (rc != MPI_SUCCESS) {
        root_fail(R, AS_ERR_IO, "lost contact with the other ranks", 0);
        return -1;
    }
    if (!flag) return 0;
    double t0 = now_s();
    int count = 0;
    MPI_Get_count(&ms, MPI_BYTE, &count);
    unsigned char *msg = malloc(count > 0 ? (size_t)count : 1);
    if (!msg) {
        /* take it into a byte on the stack to keep the protocol going, then fail */
        unsigned char sink;
        MPI_Recv(&sink, 0, MPI_BYTE, ms.MPI_SOURCE, ms.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        root_fail(R, AS_ERR_NOMEM, "out of memory receiving a result", 0);
        return 1;
    }
    MPI_Recv(msg, count, MPI_BYTE, ms.MPI_SOURCE, ms.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    as_mpi_rd r;
    as_mpi_rd_init(&r, msg, (size_t)count);
    if (ms.MPI_TAG == TAG_DATA) {
        int64_t u = as_mpi_get_i64(&r);
        if (R->st == AS_OK && !r.bad && u >= 0 && (size_t)u < R->job->n_units && !R->held[u]) {
            size_t len = (size_t)count - r.pos;
            memmove(msg, msg + r.pos, len);
            root_hold(R, (size_t)u, msg, len);
            msg = NULL;
            root_consume_ready(R);
        }
    } else if (ms.MPI_TAG == TAG_ERR) {
        as_status st = (as_status)as_mpi_get_i64(&r);
        const char *line = as_mpi_get_str(&r);
        root_fail(R, st == AS_OK ? AS_ERR_IO : st, line ? line : "failed", ms.MPI_SOURCE);
    } else if (ms.MPI_TAG == TAG_FIN) {
        R->fins++;
    }
    free(msg);
    R->s->merge_s += now_s() - t0;
    return 1;
}

static as_status run_root(const as_mpi_job *job, const int *owner, as_mpi_stats *s, char *err)
{
    root_t R;
    memset(&R, 0, sizeof R);
    R.job = job;
    R.s = s;
    R.err = err;
    R.st = AS_OK;
    R.held = calloc(job->n_units ? job->n_units : 1, sizeof *R.held);
    R.held_len = calloc(job->n_units ? job->n_units : 1, sizeof *R.held_len);
    for (size_t u = 0; u < job->n_units; u++) R.total += job->cost ? job->cost[u] : 1;
    if (!R.held || !R.held_len) root_fail(&R, AS_ERR_NOMEM, "out of memory", 0);
    for (size_t u = 0; u < job->n_units && R.st == AS_OK; u++) {
        if (owner[u] != 0) continue;
        while (root_receive(&R, 0) > 0) {
        }
        if (R.st != AS_OK) break;
        as_mpi_buf b;
        as_mpi_buf_init(&b);
        char e[AS_ERR_LEN] = "";
        as_status st = run_unit(job, u, &b, s, e);
        if (st != AS_OK) {
            as_mpi_buf_free(&b);
            root_fail(&R, st, e, 0);
            break;
        }
        double t1 = now_s();
        root_hold(&R, u, b.p ? b.p : calloc(1, 1), b.len);
        root_consume_ready(&R);
        s->merge_s += now_s() - t1;
    }
    /* the other ranks' results, and every rank's end */
    while (R.fins < g_size - 1 || (R.st == AS_OK && R.next < job->n_units)) {
        if (R.fins == g_size - 1) { /* every rank ended, a result never came: a bug */
            root_fail(&R, AS_ERR_IO, "a unit's result never arrived", 0);
            break;
        }
        if (root_receive(&R, 1) < 0) break;
    }
    int code = (int)R.st;
    for (int r = 1; r < g_size; r++) MPI_Send(&code, 1, MPI_INT, r, TAG_END, MPI_COMM_WORLD);
    for (size_t u = 0; R.held && u < job->n_units; u++)
        if (R.held[u] != (unsigned char *)1) free(R.held[u]);
    free(R.held);
    free(R.held_len);
    return R.st;
}

static as_status run_worker(const as_mpi_job *job, const int *owner, as_mpi_stats *s)
{
    enum { MAXREQ = 64 };
    MPI_Request req[MAXREQ];
    as_mpi_buf bufs[MAXREQ];
    int nreq = 0, stopped = 0;
    for (size_t u = 0; u < job->n_units && !stopped; u++) {
        if (owner[u] != g_rank) continue;
        int flag = 0;
        MPI_Iprobe(0, TAG_STOP, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
        if (flag) break;
        as_mpi_buf b;
        as_mpi_buf_init(&b);
        as_mpi_put_i64(&b, (int64_t)u);
        char e[AS_ERR_LEN] = "";
        as_status st = run_unit(job, u, &b, s, e);
        if (st != AS_OK) {
            as_mpi_buf_free(&b);
            as_mpi_buf eb;
            as_mpi_buf_init(&eb);
            put_status_line(&eb, st, e);
            MPI_Send(eb.p, (int)eb.len, MPI_BYTE, 0, TAG_ERR, MPI_COMM_WORLD);
            as_mpi_buf_free(&eb);
            stopped = 1;
            break;
        }
        if (nreq == MAXREQ) { /* wait for the oldest send */
            wait_all(1, &req[0]);
            as_mpi_buf_free(&bufs[0]);
            memmove(req, req + 1, (MAXREQ - 1) * sizeof *req);
            memmove(bufs, bufs + 1, (MAXREQ - 1) * sizeof *bufs);
            nreq--;
        }
        bufs[nreq] = b;
        MPI_Isend(b.p, (int)b.len, MPI_BYTE, 0, TAG_DATA, MPI_COMM_WORLD, &req[nreq]);
        nreq++;
    }
    wait_all(nreq, req);
    for (int i = 0; i < nreq; i++) as_mpi_buf_free(&bufs[i]);
    MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_FIN, MPI_COMM_WORLD);
    /* wait for rank 0's end (skipping a stop it sent meanwhile) */
    for (;;) {
        int v = 0;
        MPI_Status ms;
        if (probe_wait(0, MPI_ANY_TAG, &ms) != MPI_SUCCESS) return AS_ERR_IO;
        MPI_Recv(&v, 1, MPI_INT, 0, ms.MPI_TAG, MPI_COMM_WORLD, &ms);
        if (ms.MPI_TAG == TAG_END) return (as_status)v;
    }
}
#endif

as_status as_mpi_run(const as_mpi_job *job, as_mpi_stats *stats, char *err)
{
    as_mpi_stats local;
    as_mpi_stats *s = stats ? stats : &local;
    memset(s, 0, sizeof *s);
    if (err) err[0] = '\0';
    char e[AS_ERR_LEN] = "";
    double t0 = now_s(), c0 = cpu_now_s();
    as_status st;
#ifdef AS_HAVE_MPI
    if (g_mpi_on && g_size > 1) {
        int *owner = malloc((job->n_units ? job->n_units : 1) * sizeof *owner);
        int all_ok = allreduce_int(owner != NULL, MPI_MIN);
        if (!all_ok) {
            free(owner);
            if (g_rank == 0) as_err_set(err, AS_ERR_NOMEM, "out of memory");
            return AS_ERR_NOMEM;
        }
        as_mpi_plan(job->cost, job->n_units, g_size, owner);
        st = g_rank == 0 ? run_root(job, owner, s, e) : run_worker(job, owner, s);
        free(owner);
    } else
#endif
    {
        st = run_local(job, s, e);
    }
    s->wall_s = now_s() - t0;
    s->cpu_s = cpu_now_s() - c0;
    if (err && g_rank == 0) snprintf(err, AS_ERR_LEN, "%s", e);
    const char *want = getenv("ATTNSCOPE_MPI_STATS");
    if (want && *want && strcmp(want, "0") != 0) {
        double row[8] = {s->wall_s, s->work_s, s->merge_s, (double)s->units,
                         (double)s->bytes_out, (double)s->max_held, (double)peak_rss_kib(),
                         s->cpu_s};
        double *all = NULL;
#ifdef AS_HAVE_MPI
        if (g_mpi_on && g_size > 1) {
            if (g_rank == 0) all = malloc((size_t)g_size * sizeof row);
            MPI_Gather(row, 8, MPI_DOUBLE, all, 8, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        }
#endif
        if (g_rank == 0)
            for (int r = 0; r < g_size; r++) {
                const double *x = all ? all + 8 * r : row;
                fprintf(stderr,
                        "attnscope mpi: rank %d of %d: wall %.3f s, work %.3f s, merge %.3f s "
                        "(%.2f%% of wall), units %.0f, result bytes %.0f, most held %.0f, peak "
                        "RSS %.0f KiB, cpu %.3f s\n",
                        r, g_size, x[0], x[1], x[2], x[0] > 0 ? 100 * x[2] / x[0] : 0, x[3],
                        x[4], x[5], x[6], x[7]);
            }
        free(all);
    }
    return st;
}
