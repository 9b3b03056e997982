/* as_outfile: the one way attnscope writes a file, and the registry of the files it reads.
 *
 * Outputs are written atomically: bytes go to a temporary file in the target's directory
 * (PATH.tmpXXXXXX), which is synced, made 0644 and renamed over PATH only when complete; on any
 * failure, or an abort, the temporary file is removed and PATH is untouched. A path that names
 * (same device and inode) a file registered as an open input is refused, both when the output
 * is opened and again just before the rename. Used by the safetensors and .npy writers and by
 * the CLI's HTML outputs. Every temporary file is tracked in a fixed registry while it is being
 * filled, so that a signal handler can remove it (as_tmp_remove_all). */
#ifndef AS_OUTFILE_H
#define AS_OUTFILE_H

#include <stddef.h>

#include "as_error.h"

typedef struct as_outfile as_outfile;

/* Start writing PATH into *out (NULL on failure: AS_ERR_USAGE for a registered input, else
 * AS_ERR_IO / AS_ERR_NOMEM). */
as_status as_outfile_open(const char *path, as_outfile **out, char *err);
/* Append n bytes. */
as_status as_outfile_write(as_outfile *f, const void *bytes, size_t n, char *err);
/* Sync, close and rename into place; frees f whatever the outcome. */
as_status as_outfile_commit(as_outfile *f, char *err);
/* Remove the temporary file and free f (NULL allowed). */
void as_outfile_abort(as_outfile *f);
/* The path being written (as given to as_outfile_open). */
const char *as_outfile_path(const as_outfile *f);

/* Write len bytes to path atomically (open + write + commit). */
as_status as_write_file_atomic(const char *path, const void *data, size_t len, char *err);

/* ---- temporary outputs: the files the writers are filling -------------------------------- */
/* A signal handler (SIGINT, SIGTERM, SIGHUP, SIGBUS) calls as_tmp_remove_all(), which is
 * async-signal-safe, so that an interrupted run leaves no partial output behind. as_outfile
 * tracks its temporary file from open to commit/abort. At most AS_TMP_SLOTS at once; a path
 * that finds no slot (or is too long) is simply not tracked (-1). */
#define AS_TMP_SLOTS 8
int as_tmp_track(const char *path);
void as_tmp_untrack(int slot);
void as_tmp_remove_all(void);

/* ---- inputs: files opened for reading (as_trace registers its files) ---------------------- */
void as_input_register(const char *path);
void as_input_unregister(const char *path);
/* 1 if path names (same device and inode) a registered input. */
int as_input_is_open(const char *path);

#endif
