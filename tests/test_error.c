/* Tests of data/as_error: messages are one bounded line (control bytes replaced, truncated to
 * AS_ERR_LEN), a NULL buffer is allowed, every status has a name and the CLI's exit code
 * (0 ok, 1 a failed check or a numerical / memory failure, 2 bad input or usage). */
#include <criterion/criterion.h>
#include <string.h>

#include "as_error.h"

Test(error, message_one_line_and_bounded)
{
    char err[AS_ERR_LEN];
    cr_assert_eq(as_err_set(err, AS_ERR_FORMAT, "tensor '%s' at %d", "a\nb\tc\x7f", 7), AS_ERR_FORMAT);
    cr_assert_str_eq(err, "tensor 'a?b?c?' at 7");
    char big[2 * AS_ERR_LEN];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    as_err_set(err, AS_ERR_IO, "%s", big);
    cr_assert_eq(strlen(err), AS_ERR_LEN - 1);
    cr_assert_eq(as_err_set(NULL, AS_ERR_VALUE, "ignored %d", 1), AS_ERR_VALUE);
}

Test(error, names_and_exit_codes)
{
    const as_status all[] = {AS_OK, AS_ERR_IO, AS_ERR_FORMAT, AS_ERR_VALUE, AS_ERR_USAGE,
                             AS_ERR_NOMEM, AS_ERR_NUMERIC, AS_ERR_CHECK};
    const int code[] = {0, 2, 2, 2, 2, 1, 1, 1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        cr_assert_eq(as_status_exit_code(all[i]), code[i], "status %d", (int)all[i]);
        cr_assert_str_neq(as_status_name(all[i]), "unknown error");
        for (size_t j = 0; j < i; j++) cr_assert_str_neq(as_status_name(all[i]), as_status_name(all[j]));
    }
    cr_assert_str_eq(as_status_name(AS_ERR_FORMAT), "format error");
    cr_assert_str_eq(as_status_name((as_status)99), "unknown error");
    cr_assert_eq(as_status_exit_code((as_status)99), 2);
}
