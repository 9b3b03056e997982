/* Tests of data/as_pagecache: the resident pages of a private read-only file mapping go back
 * to the kernel (the process's resident set shrinks, the data reads back unchanged), and any
 * other memory is left alone (heap and writable mappings keep their contents: MADV_DONTNEED on
 * them would zero anonymous pages or drop unwritten changes). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "as_pagecache.h"
#include "as_testutil.h"

enum { FILE_BYTES = 16 << 20 };

/* resident pages of this process (second field of /proc/self/statm) */
static long resident_pages(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    long size = 0, res = 0;
    cr_assert_eq(fscanf(f, "%ld %ld", &size, &res), 2);
    fclose(f);
    return res;
}

static char *make_file(const char *name)
{
    char *p = as_test_path(name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    unsigned char *buf = malloc(FILE_BYTES);
    for (size_t i = 0; i < FILE_BYTES; i++) buf[i] = (unsigned char)(i * 7 + (i >> 12));
    cr_assert_eq(fwrite(buf, 1, FILE_BYTES, f), (size_t)FILE_BYTES);
    fclose(f);
    free(buf);
    return p;
}

static uint64_t touch(const unsigned char *m, size_t len)
{
    uint64_t s = 0;
    for (size_t i = 0; i < len; i += 512) s += m[i];
    return s;
}

Test(pagecache, releases_private_readonly_file_mapping)
{
    char *path = make_file("ro.bin");
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    const unsigned char *m = mmap(NULL, FILE_BYTES, PROT_READ, MAP_PRIVATE, fd, 0);
    cr_assert_neq((void *)m, MAP_FAILED);
    const uint64_t sum = touch(m, FILE_BYTES);
    const long page = sysconf(_SC_PAGESIZE);
    const long before = resident_pages();
    as_pagecache_release(m, FILE_BYTES);
    const long after = resident_pages();
    /* at least 3/4 of the file's pages left the resident set */
    cr_assert_geq(before - after, (long)(FILE_BYTES / page) * 3 / 4, "resident %ld -> %ld", before,
                  after);
    cr_assert_eq(touch(m, FILE_BYTES), sum); /* the data reads back from the page cache */
    /* a range inside one page releases nothing and does not crash */
    as_pagecache_release(m + 10, 100);
    as_pagecache_release(NULL, 100);
    as_pagecache_release(m, 0);
    munmap((void *)m, FILE_BYTES);
    close(fd);
    free(path);
}

Test(pagecache, leaves_heap_and_writable_mappings_alone)
{
    const size_t len = 4 << 20;
    unsigned char *heap = malloc(len);
    for (size_t i = 0; i < len; i++) heap[i] = (unsigned char)(i * 13 + 1);
    as_pagecache_release(heap, len);
    for (size_t i = 0; i < len; i += 4093) cr_assert_eq(heap[i], (unsigned char)(i * 13 + 1));
    free(heap);

    unsigned char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq((void *)anon, MAP_FAILED);
    memset(anon, 0x5a, len);
    as_pagecache_release(anon, len);
    for (size_t i = 0; i < len; i += 4093) cr_assert_eq(anon[i], 0x5a);
    munmap(anon, len);

    /* a private writable file mapping with changes not in the file */
    char *path = make_file("rw.bin");
    int fd = open(path, O_RDONLY);
    unsigned char *w = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    cr_assert_neq((void *)w, MAP_FAILED);
    memset(w, 0xa5, len);
    as_pagecache_release(w, len);
    for (size_t i = 0; i < len; i += 4093) cr_assert_eq(w[i], 0xa5);
    munmap(w, len);
    close(fd);
    free(path);
}

Test(pagecache, tensor_range)
{
    char *path = make_file("t.bin");
    int fd = open(path, O_RDONLY);
    const unsigned char *m = mmap(NULL, FILE_BYTES, PROT_READ, MAP_PRIVATE, fd, 0);
    cr_assert_neq((void *)m, MAP_FAILED);
    as_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = AS_DT_F32;
    t.numel = FILE_BYTES / 4;
    t.data = m;
    const uint64_t sum = touch(m, FILE_BYTES);
    const long before = resident_pages();
    as_tensor_release(&t, t.numel / 2, t.numel); /* count past the end: clamped */
    const long after = resident_pages();
    const long page = sysconf(_SC_PAGESIZE);
    cr_assert_geq(before - after, (long)(FILE_BYTES / 2 / page) * 3 / 4);
    cr_assert_leq(before - after, (long)(FILE_BYTES / 2 / page) + 2);
    as_tensor_release(&t, t.numel, 5); /* nothing */
    as_tensor_release(NULL, 0, 5);
    cr_assert_eq(touch(m, FILE_BYTES), sum);
    munmap((void *)m, FILE_BYTES);
    close(fd);
    free(path);
}
