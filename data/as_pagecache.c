#include "as_pagecache.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "as_dtype.h"

/* The last mapping looked up in /proc/self/maps (per thread). */
static _Thread_local uintptr_t cache_lo, cache_hi;
static _Thread_local int cache_ok; /* 1: private read-only file mapping */

static int lookup(uintptr_t a, uintptr_t b)
{
    if (cache_hi > cache_lo && a >= cache_lo && b <= cache_hi) return cache_ok;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    char line[4352];
    int ok = 0, found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off;
        char perms[8], dev[32], path[4096];
        unsigned long inode;
        path[0] = '\0';
        int nf = sscanf(line, "%lx-%lx %7s %lx %31s %lu %4095s", &lo, &hi, perms, &off, dev, &inode,
                        path);
        if (nf < 6 || a < lo || a >= hi) continue;
        found = 1;
        ok = b <= hi && inode != 0 && path[0] == '/' && perms[0] == 'r' && perms[1] == '-' &&
             perms[3] == 'p';
        cache_lo = lo;
        cache_hi = hi;
        cache_ok = ok;
        break;
    }
    fclose(f);
    return found && ok;
}

void as_pagecache_release(const void *addr, size_t len)
{
    static long page = 0;
    if (!page) page = sysconf(_SC_PAGESIZE);
    if (!addr || len == 0 || page <= 0) return;
    uintptr_t a = (uintptr_t)addr, b = a + len;
    uintptr_t lo = (a + (uintptr_t)page - 1) & ~((uintptr_t)page - 1), hi = b & ~((uintptr_t)page - 1);
    if (hi <= lo) return;
    if (!lookup(lo, hi)) return;
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void as_tensor_release(const as_tensor *t, uint64_t first, uint64_t count)
{
    if (!t || first >= t->numel) return;
    if (count > t->numel - first) count = t->numel - first;
    size_t isz = as_dtype_size(t->dtype);
    as_pagecache_release(t->data + first * isz, (size_t)(count * isz));
}
