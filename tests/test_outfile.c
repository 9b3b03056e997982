/* Tests of data/as_outfile: atomic output (complete file or nothing, never a temporary file
 * left behind, never over a registered input) and the input registry. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_fixtures.h"
#include "as_outfile.h"
#include "as_testutil.h"

Test(outfile, commit_replaces_abort_leaves_nothing)
{
    char *path = as_test_path("out.txt");
    char err[AS_ERR_LEN];
    cr_assert_eq(fx_write(path, "old", 3), 0);
    as_outfile *f;
    cr_assert_eq(as_outfile_open(path, &f, err), AS_OK, "%s", err);
    cr_assert_str_eq(as_outfile_path(f), path);
    cr_assert_eq(as_outfile_write(f, "new ", 4, err), AS_OK);
    cr_assert_eq(as_test_count_tmp_files(), 1);
    char *now = fx_slurp(path, NULL); /* nothing visible before the commit */
    cr_assert_str_eq(now, "old");
    free(now);
    cr_assert_eq(as_outfile_write(f, "content", 7, err), AS_OK);
    cr_assert_eq(as_outfile_commit(f, err), AS_OK, "%s", err);
    now = fx_slurp(path, NULL);
    cr_assert_str_eq(now, "new content");
    free(now);
    struct stat s;
    cr_assert_eq(stat(path, &s), 0);
    cr_assert_eq(s.st_mode & 0777, 0644);
    cr_assert_eq(as_test_count_tmp_files(), 0);
    /* abort: the old file stays, no temporary file */
    cr_assert_eq(as_outfile_open(path, &f, err), AS_OK);
    cr_assert_eq(as_outfile_write(f, "half", 4, err), AS_OK);
    as_outfile_abort(f);
    as_outfile_abort(NULL);
    now = fx_slurp(path, NULL);
    cr_assert_str_eq(now, "new content");
    free(now);
    cr_assert_eq(as_test_count_tmp_files(), 0);
    /* one call */
    cr_assert_eq(as_write_file_atomic(path, "x\n", 2, err), AS_OK);
    now = fx_slurp(path, NULL);
    cr_assert_str_eq(now, "x\n");
    free(now);
    free(path);
}

Test(outfile, errors)
{
    char err[AS_ERR_LEN];
    as_outfile *f = (as_outfile *)1;
    char *dir = as_test_path("no-such-dir/out.bin");
    cr_assert_eq(as_outfile_open(dir, &f, err), AS_ERR_IO);
    cr_assert_null(f);
    cr_assert(strstr(err, "no-such-dir"), "%s", err);
    cr_assert_eq(as_write_file_atomic(dir, "x", 1, err), AS_ERR_IO);
    free(dir);
    /* a registered input is refused at open and, registered later, at commit */
    char *in = as_test_path("in.bin");
    cr_assert_eq(fx_write(in, "input", 5), 0);
    as_input_register(in);
    cr_assert_eq(as_outfile_open(in, &f, err), AS_ERR_USAGE);
    cr_assert(strstr(err, "refusing to overwrite"), "%s", err);
    cr_assert_eq(as_write_file_atomic(in, "x", 1, err), AS_ERR_USAGE);
    as_input_unregister(in);
    cr_assert_eq(as_outfile_open(in, &f, err), AS_OK);
    cr_assert_eq(as_outfile_write(f, "other", 5, err), AS_OK);
    as_input_register(in);
    cr_assert_eq(as_outfile_commit(f, err), AS_ERR_USAGE);
    char *now = fx_slurp(in, NULL);
    cr_assert_str_eq(now, "input");
    free(now);
    cr_assert_eq(as_test_count_tmp_files(), 0);
    as_input_unregister(in);
    free(in);
}

Test(outfile, registry_many_and_stale_entries)
{
    char *paths[100];
    for (int i = 0; i < 100; i++) { /* more than any fixed table would hold */
        char nm[32];
        snprintf(nm, sizeof nm, "reg%d", i);
        paths[i] = as_test_path(nm);
        cr_assert_eq(fx_write(paths[i], "x", 1), 0);
        as_input_register(paths[i]);
    }
    for (int i = 0; i < 100; i++) cr_assert(as_input_is_open(paths[i]), "%d", i);
    for (int i = 0; i < 100; i++) {
        as_input_unregister(paths[i]);
        cr_assert(!as_input_is_open(paths[i]));
        free(paths[i]);
    }
    /* deleted while registered: unregistering by name still drops the entry, so a new file
     * that reuses the inode is not mistaken for the input */
    char *a = as_test_path("stale");
    cr_assert_eq(fx_write(a, "1", 1), 0);
    as_input_register(a);
    cr_assert_eq(unlink(a), 0);
    as_input_unregister(a);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(fx_write(a, "2", 1), 0);
        cr_assert(!as_input_is_open(a));
        unlink(a);
    }
    /* replaced (renamed over) while registered: the old inode's entry goes too */
    char *b = as_test_path("stale-old"), *c = as_test_path("stale-new");
    cr_assert_eq(fx_write(a, "1", 1), 0);
    as_input_register(a);
    cr_assert_eq(link(a, b), 0);
    cr_assert(as_input_is_open(b));
    cr_assert_eq(fx_write(c, "3", 1), 0);
    cr_assert_eq(rename(c, a), 0);
    as_input_unregister(a);
    cr_assert(!as_input_is_open(b));
    /* registering twice needs two unregistrations */
    as_input_register(b);
    as_input_register(b);
    as_input_unregister(b);
    cr_assert(as_input_is_open(b));
    as_input_unregister(b);
    cr_assert(!as_input_is_open(b));
    as_input_unregister("/nonexistent/never-registered"); /* harmless */
    free(a);
    free(b);
    free(c);
}

/* The temporary-output registry a signal handler empties: only tracked files go, each once. */
Test(outfile, tmp_registry_removes_tracked_files)
{
    char *a = as_test_path("tracked.tmp1"), *b = as_test_path("untracked.tmp2");
    cr_assert_eq(fx_write(a, "a", 1), 0);
    cr_assert_eq(fx_write(b, "b", 1), 0);
    int slot = as_tmp_track(a);
    cr_assert_geq(slot, 0);
    int slots[AS_TMP_SLOTS];
    int n = 0;
    while (n < AS_TMP_SLOTS && (slots[n] = as_tmp_track("/nonexistent-dir/x")) >= 0) n++;
    cr_expect_eq(n, AS_TMP_SLOTS - 1, "one slot taken, the rest free");
    cr_expect_eq(as_tmp_track("/nonexistent-dir/y"), -1, "all slots taken: not tracked");
    for (int i = 0; i < n; i++) as_tmp_untrack(slots[i]);
    as_tmp_remove_all();
    struct stat st;
    cr_expect_neq(stat(a, &st), 0, "the tracked file is removed");
    cr_expect_eq(stat(b, &st), 0, "an untracked file stays");
    /* removed slots are free again, and untracking twice is harmless */
    as_tmp_untrack(slot);
    cr_expect_geq(slot = as_tmp_track(b), 0);
    as_tmp_untrack(slot);
    as_tmp_remove_all();
    cr_expect_eq(stat(b, &st), 0, "untracked before the signal: stays");
    unlink(b);
    free(a);
    free(b);
}

/* as_outfile's temporary file is tracked from open to commit or abort: a signal handler
 * (as_tmp_remove_all) removes it, and a committed output is no longer tracked. */
Test(outfile, temp_is_tracked_until_commit)
{
    char *path = as_test_path("tracked.out");
    char err[AS_ERR_LEN];
    as_outfile *f;
    cr_assert_eq(as_outfile_open(path, &f, err), AS_OK, "%s", err);
    cr_assert_eq(as_test_count_tmp_files(), 1);
    as_tmp_remove_all(); /* what SIGINT does */
    cr_expect_eq(as_test_count_tmp_files(), 0);
    as_outfile_abort(f); /* unlinks a file already gone: harmless */
    struct stat s;
    cr_expect_neq(stat(path, &s), 0);

    cr_assert_eq(as_write_file_atomic(path, "abc", 3, err), AS_OK, "%s", err);
    as_tmp_remove_all(); /* nothing tracked any more: the output stays */
    cr_expect_eq(stat(path, &s), 0);
    cr_expect_eq(s.st_size, 3);
    unlink(path);
    free(path);
}
