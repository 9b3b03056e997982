#include "as_error.h"

#include <stdio.h>

as_status as_err_set(char *err, as_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, AS_ERR_LEN, fmt, ap);
        va_end(ap);
        /* one line, whatever a file name or tensor name holds: control bytes become '?' */
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    }
    return code;
}

const char *as_status_name(as_status s)
{
    switch (s) {
    case AS_OK: return "ok";
    case AS_ERR_IO: return "i/o error";
    case AS_ERR_FORMAT: return "format error";
    case AS_ERR_VALUE: return "bad value";
    case AS_ERR_USAGE: return "usage error";
    case AS_ERR_NOMEM: return "out of memory";
    case AS_ERR_NUMERIC: return "numerical failure";
    case AS_ERR_CHECK: return "check failed";
    }
    return "unknown error";
}

int as_status_exit_code(as_status s)
{
    switch (s) {
    case AS_OK: return 0;
    case AS_ERR_CHECK: return 1;
    case AS_ERR_NUMERIC:
    case AS_ERR_NOMEM: return 1;
    default: return 2;
    }
}
