/* Tests of report/as_html: the growable buffer, escaping, numbers, the page skeleton. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_html.h"

Test(html, buffer_grows_and_takes)
{
    as_buf b;
    as_buf_init(&b);
    for (int i = 0; i < 10000; i++) as_buf_printf(&b, "%d,", i);
    cr_assert(!b.oom);
    size_t len;
    char *s = as_buf_take(&b, &len);
    cr_assert_not_null(s);
    cr_assert_eq(strlen(s), len);
    cr_assert(strncmp(s, "0,1,2,", 6) == 0);
    cr_assert(strstr(s, ",9999,") != NULL);
    cr_assert_null(b.data);
    free(s);
    /* an empty buffer hands over an empty string, not NULL */
    s = as_buf_take(&b, &len);
    cr_assert_not_null(s);
    cr_assert_eq(len, 0);
    free(s);
}

Test(html, escaping)
{
    as_buf b;
    as_buf_init(&b);
    as_buf_esc(&b, "<a href=\"x\">Tom & Jerry's</a>");
    cr_assert_str_eq(b.data, "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
    as_buf_esc(&b, NULL); /* nothing */
    cr_assert_str_eq(b.data, "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
    as_buf_free(&b);
}

Test(html, numbers)
{
    as_buf b;
    as_buf_init(&b);
    as_buf_num(&b, NAN, 3);
    as_buf_puts(&b, " ");
    as_buf_num(&b, INFINITY, 3);
    as_buf_puts(&b, " ");
    as_buf_num(&b, 0.123456, 3);
    as_buf_puts(&b, " ");
    as_buf_num(&b, 12345678, 3);
    cr_assert_str_eq(b.data, "n/a inf 0.123 1.23e+07");
    as_buf_free(&b);
}

Test(html, page_is_self_contained)
{
    as_buf b;
    as_buf_init(&b);
    as_html_begin(&b, "A <title>");
    as_html_section(&b, "s1", "Section & one", "intro <b>");
    as_html_note(&b, "missing <module>");
    as_html_figure(&b, "f1", "<svg></svg>", "caption \"quoted\"");
    as_html_kv_begin(&b, NULL);
    as_html_kv_code(&b, "path", "/a/b<c>");
    as_html_kv(&b, "none", NULL);
    as_html_kv_end(&b);
    as_html_section_end(&b);
    as_html_end(&b);
    size_t len;
    char *s = as_buf_take(&b, &len);
    cr_assert(strncmp(s, "<!DOCTYPE html>", 15) == 0);
    cr_assert(strstr(s, "<title>A &lt;title&gt;</title>"));
    cr_assert(strstr(s, "<section id=\"s1\">"));
    cr_assert(strstr(s, "<h2>Section &amp; one</h2>"));
    cr_assert(strstr(s, "<div class=\"note\">missing &lt;module&gt;</div>"));
    cr_assert(strstr(s, "<figure data-plot=\"f1\">\n<svg></svg>"));
    cr_assert(strstr(s, "caption &quot;quoted&quot;"));
    cr_assert(strstr(s, "<code>/a/b&lt;c&gt;</code>"));
    cr_assert(strstr(s, "<td>n/a</td>"));
    cr_assert_null(strstr(s, "<script"));
    cr_assert_null(strstr(s, "http"));
    cr_assert(strstr(s, "</html>\n"));
    free(s);
}

Test(html, page_css_of_its_own)
{
    as_buf b, c;
    as_buf_init(&b);
    as_buf_init(&c);
    as_html_begin(&b, "t");
    as_html_begin_css(&c, "t", ".x{color:red}");
    char *plain = as_buf_take(&b, NULL), *own = as_buf_take(&c, NULL);
    const char *end = strstr(plain, "</style>");
    cr_assert(end);
    /* the common rules unchanged, the page's own after them */
    cr_assert(strncmp(plain, own, (size_t)(end - plain)) == 0);
    cr_assert(strncmp(own + (end - plain), ".x{color:red}</style>", 21) == 0);
    free(plain);
    free(own);
}
