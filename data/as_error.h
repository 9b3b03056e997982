/* as_error: status codes and message buffers shared by every attnscope module.
 *
 * Convention (GSL-like): a function returns an as_status (or NULL) and, on failure,
 * writes one human-readable line into a caller-owned buffer of AS_ERR_LEN bytes (control
 * characters, e.g. a newline inside a tensor name, are replaced by '?').
 * The CLI prefixes the file name and maps the status to an exit code. */
#ifndef AS_ERROR_H
#define AS_ERROR_H

#include <stdarg.h>

#define AS_ERR_LEN 512

typedef enum {
    AS_OK = 0,
    AS_ERR_IO,      /* cannot open/read/write/map a file */
    AS_ERR_FORMAT,  /* the file is not a valid trace (header, JSON, offsets, shapes) */
    AS_ERR_VALUE,   /* a value is out of its domain (NaN/Inf, position out of range) */
    AS_ERR_USAGE,   /* a caller/user argument is invalid */
    AS_ERR_NOMEM,   /* allocation failed */
    AS_ERR_NUMERIC, /* a numerical routine failed (LAPACK info != 0, LP infeasible) */
    AS_ERR_CHECK    /* a verification failed (bound violated, mismatch) */
} as_status;

/* Write a formatted message into err (may be NULL) and return code. */
as_status as_err_set(char *err, as_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Short name of a status ("format error", ...). */
const char *as_status_name(as_status s);

/* Exit code the CLI uses for a status: 0 ok, 1 failed check, 2 bad input/usage. */
int as_status_exit_code(as_status s);

#endif
