/* as_outfile: atomic file output and the input registry (as_outfile.h). */
#include "as_outfile.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct as_outfile {
    char *path, *tmp;
    int fd;
    int tmp_slot; /* as_tmp_track: removed if a signal ends us */
};

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

static void outfile_free(as_outfile *f)
{
    as_tmp_untrack(f->tmp_slot);
    free(f->path);
    free(f->tmp);
    free(f);
}

as_status as_outfile_open(const char *path, as_outfile **out, char *err)
{
    *out = NULL;
    if (as_input_is_open(path))
        return as_err_set(err, AS_ERR_USAGE, "%s: refusing to overwrite an input file", path);
    as_outfile *f = calloc(1, sizeof *f);
    const size_t plen = strlen(path);
    if (f) f->tmp_slot = -1;
    if (!f || !(f->path = dupstr(path)) || !(f->tmp = malloc(plen + 16))) {
        if (f) outfile_free(f);
        return as_err_set(err, AS_ERR_NOMEM, "out of memory");
    }
    snprintf(f->tmp, plen + 16, "%s.tmpXXXXXX", path);
    f->fd = mkstemp(f->tmp);
    if (f->fd >= 0) f->tmp_slot = as_tmp_track(f->tmp);
    if (f->fd < 0) {
        as_status st = as_err_set(err, AS_ERR_IO, "%s: cannot create a temporary file: %s", path,
                                  strerror(errno));
        outfile_free(f);
        return st;
    }
    *out = f;
    return AS_OK;
}

const char *as_outfile_path(const as_outfile *f) { return f->path; }

as_status as_outfile_write(as_outfile *f, const void *bytes, size_t n, char *err)
{
    const char *p = bytes;
    while (n > 0) {
        ssize_t k = write(f->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return as_err_set(err, AS_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
        p += k;
        n -= (size_t)k;
    }
    return AS_OK;
}

as_status as_outfile_commit(as_outfile *f, char *err)
{
    as_status st = AS_OK;
    if (fchmod(f->fd, 0644) != 0 || fsync(f->fd) != 0)
        st = as_err_set(err, AS_ERR_IO, "%s: cannot sync: %s", f->path, strerror(errno));
    if (close(f->fd) != 0 && st == AS_OK)
        st = as_err_set(err, AS_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
    if (st == AS_OK && as_input_is_open(f->path))
        st = as_err_set(err, AS_ERR_USAGE, "%s: refusing to overwrite an input file", f->path);
    if (st == AS_OK && rename(f->tmp, f->path) != 0)
        st = as_err_set(err, AS_ERR_IO, "%s: rename failed: %s", f->path, strerror(errno));
    if (st != AS_OK) unlink(f->tmp);
    outfile_free(f);
    return st;
}

void as_outfile_abort(as_outfile *f)
{
    if (!f) return;
    close(f->fd);
    unlink(f->tmp);
    outfile_free(f);
}

as_status as_write_file_atomic(const char *path, const void *data, size_t len, char *err)
{
    as_outfile *f;
    as_status st = as_outfile_open(path, &f, err);
    if (st != AS_OK) return st;
    st = as_outfile_write(f, data, len, err);
    if (st != AS_OK) {
        as_outfile_abort(f);
        return st;
    }
    return as_outfile_commit(f, err);
}

/* ---- temporary outputs ---------------------------------------------------------------------- */

/* Fixed storage: the signal handler reads it without locks or allocation. A slot's path is
 * complete before its flag is raised, and the flag is dropped before the path is reused. */
static char tmp_paths[AS_TMP_SLOTS][4096];
static volatile sig_atomic_t tmp_used[AS_TMP_SLOTS];

int as_tmp_track(const char *path)
{
    size_t n = strlen(path);
    if (n >= sizeof tmp_paths[0]) return -1;
    for (int i = 0; i < AS_TMP_SLOTS; i++)
        if (!tmp_used[i]) {
            memcpy(tmp_paths[i], path, n + 1);
            tmp_used[i] = 1;
            return i;
        }
    return -1;
}

void as_tmp_untrack(int slot)
{
    if (slot >= 0 && slot < AS_TMP_SLOTS) tmp_used[slot] = 0;
}

void as_tmp_remove_all(void)
{
    for (int i = 0; i < AS_TMP_SLOTS; i++)
        if (tmp_used[i]) {
            unlink(tmp_paths[i]);
            tmp_used[i] = 0;
        }
}

/* ---- input registry -------------------------------------------------------------------------- */

/* Each entry keeps the path it was registered under as well as its device and inode: an
 * input deleted or replaced while open is still unregistered by name, so a stale entry can
 * never make a writer refuse an unrelated new file that happens to reuse the inode. */
static struct as_input {
    dev_t dev;
    ino_t ino;
    char *path;
} *inputs;
static size_t n_inputs, cap_inputs;

void as_input_register(const char *path)
{
    struct stat s;
    if (stat(path, &s) != 0) return;
    if (n_inputs == cap_inputs) {
        size_t cap = cap_inputs ? 2 * cap_inputs : 16;
        struct as_input *q = realloc(inputs, cap * sizeof *q);
        if (!q) return;
        inputs = q;
        cap_inputs = cap;
    }
    char *p = dupstr(path);
    if (!p) return;
    inputs[n_inputs].dev = s.st_dev;
    inputs[n_inputs].ino = s.st_ino;
    inputs[n_inputs].path = p;
    n_inputs++;
}

static void input_drop(size_t i)
{
    free(inputs[i].path);
    inputs[i] = inputs[--n_inputs];
    if (n_inputs == 0) {
        free(inputs);
        inputs = NULL;
        cap_inputs = 0;
    }
}

void as_input_unregister(const char *path)
{
    struct stat s;
    if (stat(path, &s) == 0)
        for (size_t i = 0; i < n_inputs; i++)
            if (inputs[i].dev == s.st_dev && inputs[i].ino == s.st_ino) {
                input_drop(i);
                return;
            }
    for (size_t i = 0; i < n_inputs; i++) /* gone or replaced: by the registered name */
        if (strcmp(inputs[i].path, path) == 0) {
            input_drop(i);
            return;
        }
}

int as_input_is_open(const char *path)
{
    struct stat s;
    if (stat(path, &s) != 0) return 0;
    for (size_t i = 0; i < n_inputs; i++)
        if (inputs[i].dev == s.st_dev && inputs[i].ino == s.st_ino) return 1;
    return 0;
}
