/* Tests of analysis/as_sp_budget: method names, budget parsing and keys, the page width rule. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_sp_fixtures.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

Test(sp_budget, budget_parsing)
{
    as_budget b[8];
    size_t n;
    char err[AS_ERR_LEN];
    cr_assert_eq(as_budget_parse_list("2%,0.5,128,1/50,1.0", 0, b, 8, &n, err), AS_OK, "%s", err);
    cr_assert_eq(n, 5);
    cr_assert(fabs(b[0].frac - 0.02) < 1e-15 && b[0].count == 0);
    cr_assert(b[1].frac == 0.5 && b[2].count == 128 && fabs(b[3].frac - 0.02) < 1e-15);
    cr_assert(b[4].frac == 1.0 && b[4].count == 0);
    cr_assert_eq(as_budget_parse_list("50x,2x,100", 1, b, 8, &n, err), AS_OK);
    cr_assert(n == 3 && fabs(b[0].frac - 0.02) < 1e-15 && b[1].frac == 0.5 && b[2].frac == 0.01);
    const char *bad[] = {"0", "150%", "-1", "0.0", "abc", "1/0", "2%%", ",", "3,", "1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(as_budget_parse_list(bad[i], 0, b, 8, &n, err), AS_ERR_USAGE, "%s", bad[i]);
    cr_assert_eq(as_budget_parse_list("0.5x", 1, b, 8, &n, err), AS_ERR_USAGE);
    cr_assert_eq(as_budget_keys((as_budget){0.02, 0}, 2048), 41);
    cr_assert_eq(as_budget_keys((as_budget){0.5, 0}, 10), 5);
    cr_assert_eq(as_budget_keys((as_budget){0.001, 0}, 10), 1);
    cr_assert_eq(as_budget_keys((as_budget){0, 500}, 10), 10);
    cr_assert_eq(as_budget_default_sweep(b, 8), 8);
}

Test(sp_budget, method_names_and_aliases)
{
    const char *names[AS_SP_N_METHODS] = {"topk", "sink-window", "page", "uniform",
                                          "topk-sample", "index", "page-sample", "page-is"};
    const int sampling[AS_SP_N_METHODS] = {0, 0, 0, 1, 1, 0, 1, 1};
    for (int m = 0; m < AS_SP_N_METHODS; m++) {
        cr_assert_str_eq(as_sp_method_name((as_sp_method)m), names[m]);
        as_sp_method back = AS_SP_N_METHODS;
        cr_assert_eq(as_sp_method_parse(names[m], &back), 0);
        cr_assert_eq((int)back, m);
        cr_assert_eq(as_sp_method_is_sampling((as_sp_method)m), sampling[m]);
    }
    cr_assert_str_eq(as_sp_method_name(AS_SP_N_METHODS), "?");
    const struct {
        const char *alias;
        as_sp_method m;
    } al[] = {{"oracle", AS_SP_TOPK}, {"streamingllm", AS_SP_SINK_WINDOW}, {"quest", AS_SP_PAGE},
              {"sample", AS_SP_UNIFORM}, {"vattention", AS_SP_TOPK_SAMPLE},
              {"quest+sample", AS_SP_PAGE_SAMPLE}, {"quest-is", AS_SP_PAGE_IS}};
    for (size_t i = 0; i < sizeof al / sizeof al[0]; i++) {
        as_sp_method m;
        cr_assert_eq(as_sp_method_parse(al[i].alias, &m), 0, "%s", al[i].alias);
        cr_assert_eq(m, al[i].m);
    }
    as_sp_method m;
    cr_assert_eq(as_sp_method_parse("pages", &m), -1);
    cr_assert_eq(as_sp_method_parse("", &m), -1);
    as_sp_params p;
    as_sp_params_init(&p);
    cr_assert(p.sinks == 4 && p.page_size == 16 && p.heavy_frac == 0.5 && p.delta == 0.05);
    cr_assert(p.seed == 0 && p.index == NULL);
    cr_assert_eq(as_sp_page_size(&p), 16);
    p.page_size = 0;
    cr_assert_eq(as_sp_page_size(&p), 16);
    p.page_size = 5;
    cr_assert_eq(as_sp_page_size(&p), 5);
}

/* The page width rule in closed form: pages of P keys; every page when the budget covers the n
 * visible keys (k = n), else floor(k / P) whole pages, at least one; width min(n, pages P). */
Test(sp_budget, page_width_rule)
{
    as_sp_params p;
    as_sp_params_init(&p); /* P = 16 */
    /* budget covers all 100 keys: 7 pages (6 full + one of 4 keys), 100 keys */
    cr_assert_eq(as_sp_page_count((as_budget){0, 100}, 100, 16), 7);
    cr_assert_eq(as_sp_page_count((as_budget){1.0, 0}, 100, 16), 7);
    cr_assert_eq(as_sp_page_count((as_budget){0, 500}, 100, 16), 7);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 100}, &p, 100), 100);
    /* N a multiple of P: the same either way */
    cr_assert_eq(as_sp_page_count((as_budget){0, 96}, 96, 16), 6);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 96}, &p, 96), 96);
    /* budget below the keys: whole pages within it */
    cr_assert_eq(as_sp_page_count((as_budget){0, 99}, 100, 16), 6);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 99}, &p, 100), 96);
    cr_assert_eq(as_sp_page_count((as_budget){0, 40}, 100, 16), 2);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 40}, &p, 100), 32);
    cr_assert_eq(as_sp_page_count((as_budget){0.25, 0}, 100, 16), 1); /* k = 25 */
    /* at least one page; a short query's one page is its n keys */
    cr_assert_eq(as_sp_page_count((as_budget){0, 5}, 100, 16), 1);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 5}, &p, 100), 16);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 5}, &p, 10), 10);
    cr_assert_eq(as_sp_page_count((as_budget){0, 5}, 0, 16), 0);
    /* the same count covers a short query (every key) but not a long one (whole pages) */
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 98}, &p, 98), 98);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 98}, &p, 100), 96);
    /* other methods: the budget's keys; index: its file's */
    cr_assert_eq(as_sp_sel_width(AS_SP_TOPK, (as_budget){0.1, 0}, &p, 100), 10);
    cr_assert_eq(as_sp_sel_width(AS_SP_SINK_WINDOW, (as_budget){0, 500}, &p, 100), 100);
    cr_assert_eq(as_sp_sel_width(AS_SP_UNIFORM, (as_budget){0, 7}, &p, 100), 7);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE_SAMPLE, (as_budget){0, 40}, &p, 100), 40);
    cr_assert_eq(as_sp_sel_width(AS_SP_INDEX, (as_budget){1.0, 0}, &p, 100), 0);
    p.page_size = 10;
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 100}, &p, 100), 100);
    cr_assert_eq(as_sp_sel_width(AS_SP_PAGE, (as_budget){0, 35}, &p, 100), 30);
}
