/* Tests of the sparsity analysis as a whole (as_sparsity.h) through `attnscope sparsity`: the
 * JSON/CSV schema and exit codes, index files round trip and refusals, and the exported index
 * width of the page method. The modules have their own tests (test_sp_*.c). */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_sp_fixtures.h"
#include "as_sparsity.h"
#include "as_testutil.h"
#include "as_trace.h"

/* ---- the command and index files --------------------------------------------------------------- */

Test(sparsity, cli_json_schema_and_exit_codes)
{
    char *p = make_trace("j.st", 1, AS_DT_F32, 2.0, 0, 128, 3);
    char args[2048];
    snprintf(args, sizeof args, "sparsity '%s' --budget 5%%,25%% --json --quiet", p);
    cJSON *doc = run_json(args, 0);
    cr_assert(doc);
    int cnt;
    cJSON *r = find_records(doc, "sparsity", &cnt);
    cr_assert_eq(cnt, 2 * 4 * 3 * 2 * 5);
    const char *fields[] = {"layer", "head", "query", "method", "budget", "k", "captured_mass",
                            "abs_error", "rel_error", "bound", "rel_bound", "violated"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        cr_assert(cJSON_GetObjectItem(r, fields[i]), "missing %s", fields[i]);
    cr_assert(cJSON_IsBool(cJSON_GetObjectItem(r, "violated")));
    const char *kinds[] = {"head_budget", "head_sweep", "layer_summary", "model_summary",
                           "coverage", "check"};
    for (size_t i = 0; i < 6; i++) {
        find_records(doc, kinds[i], &cnt);
        cr_assert(cnt > 0, "no %s records", kinds[i]);
    }
    cJSON *chk = find_records(doc, "check", &cnt);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(chk, "pass")));
    cJSON_Delete(doc);
    /* CSV: a header with the record fields */
    char *out = NULL;
    snprintf(args, sizeof args, "sparsity '%s' --method topk --sparsity 10x --csv --quiet", p);
    cr_assert_eq(as_test_run_cli(args, &out), 0);
    cr_assert(strncmp(out, "record,layer,head", 17) == 0, "%.80s", out);
    cr_assert(strstr(out, "captured_mass,abs_error,rel_error,bound,rel_bound,violated"));
    free(out);
    /* usage errors */
    const char *bad[] = {"--method nope", "--budget 0", "--budget 150%", "--sparsity 0.5x",
                         "--method index", "--budget 1% --sparsity 2x", "--delta 1",
                         "--trials 0", "--method topk --budget 1%,2% --export-index x.st"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "sparsity '%s' %s 2>/dev/null", p, bad[i]);
        cr_assert_eq(as_test_run_cli(args, NULL), 2, "%s", bad[i]);
    }
    cr_assert_eq(as_test_run_cli("sparsity /nonexistent.st 2>/dev/null", NULL), 2);
    cr_assert_eq(as_test_run_cli("help sparsity >/dev/null", NULL), 0);
    free(p);
}

Test(sparsity, index_files_round_trip_and_refusals)
{
    char *p = make_trace("k.st", 1, AS_DT_F64, 2.0, 0, 96, 3);
    char *ix = as_test_path("k.idx.st"), *ixo = as_test_path("k.idxo.st");
    char args[4096];
    /* export top-k at 10%, read it back as an index: the same numbers */
    snprintf(args, sizeof args, "sparsity '%s' --method topk --budget 10%% --export-index '%s' --quiet >/dev/null", p, ix);
    cr_assert_eq(as_test_run_cli(args, NULL), 0);
    snprintf(args, sizeof args, "sparsity '%s' --method topk --budget 10%% --json --quiet", p);
    cJSON *a = run_json(args, 0);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet", p, ix);
    cJSON *b = run_json(args, 0);
    cJSON *ra = cJSON_GetObjectItem(a, "records"), *rb = cJSON_GetObjectItem(b, "records");
    int na = 0, matched = 0;
    cJSON *x, *y;
    cJSON_ArrayForEach(x, ra)
    {
        if (strcmp(cJSON_GetObjectItem(x, "record")->valuestring, "sparsity")) continue;
        na++;
        cJSON_ArrayForEach(y, rb)
        {
            if (strcmp(cJSON_GetObjectItem(y, "record")->valuestring, "sparsity")) continue;
            if (cJSON_GetObjectItem(x, "layer")->valueint != cJSON_GetObjectItem(y, "layer")->valueint ||
                cJSON_GetObjectItem(x, "head")->valueint != cJSON_GetObjectItem(y, "head")->valueint ||
                cJSON_GetObjectItem(x, "query")->valueint != cJSON_GetObjectItem(y, "query")->valueint)
                continue;
            cr_assert_eq(cJSON_GetObjectItem(x, "k")->valueint, cJSON_GetObjectItem(y, "k")->valueint);
            /* topk runs on the shared sweep (as_sweep), index on as_sp_run: the same sets,
             * sums in another order, so equal to rounding (docs/benchmarks.md) */
            const double ea = cJSON_GetObjectItem(x, "abs_error")->valuedouble,
                         eb = cJSON_GetObjectItem(y, "abs_error")->valuedouble,
                         ba = cJSON_GetObjectItem(x, "bound")->valuedouble,
                         bb = cJSON_GetObjectItem(y, "bound")->valuedouble,
                         no = cJSON_GetObjectItem(x, "norm")->valuedouble;
            cr_assert(fabs(ea - eb) <= 1e-12 * fabs(eb) + 1e-15 * no, "abs_error %.17g vs %.17g", ea, eb);
            cr_assert(fabs(ba - bb) <= 1e-12 * fabs(bb) + 1e-15 * no, "bound %.17g vs %.17g", ba, bb);
            matched++;
        }
    }
    cr_assert(na > 0 && matched == na);
    cJSON_Delete(a);
    cJSON_Delete(b);
    /* with the float64 sparse outputs as the 'kernel' outputs: passes, and says so */
    snprintf(args, sizeof args, "sparsity '%s' --method page --budget 32 --export-index '%s' --export-outputs --quiet >/dev/null", p, ixo);
    cr_assert_eq(as_test_run_cli(args, NULL), 0);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet --out-tol 0", p, ixo);
    cJSON *c = run_json(args, 0);
    int cnt;
    cJSON *r = find_records(c, "sparsity", &cnt);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "kernel_output")));
    cJSON_Delete(c);

    /* hand-written files: GQA-shared rows [Hkv, T, K], -1 padding anywhere */
    char err[AS_ERR_LEN];
    as_trace *tr = as_trace_open(p, err);
    const as_layer *l0 = as_trace_layer(tr, 0), *l1 = as_trace_layer(tr, 1);
    int64_t T = l0->t, K = 5, d = l0->d;
    int32_t *idx = malloc((size_t)(l0->hkv * T * K) * sizeof *idx);
    for (int64_t i = 0; i < l0->hkv * T * K; i++) idx[i] = (i % K == 1) ? -1 : (int32_t)(i % K) * 3;
    as_index_layer_data L2[2] = {{0, l0->hkv, T, K, d, idx, NULL}, {1, l1->hkv, T, K, d, idx, NULL}};
    char *gq = as_test_path("gqa.idx.st");
    cr_assert_eq(as_index_write(gq, L2, 2, NULL, 0, err), AS_OK, "%s", err);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet", p, gq);
    c = run_json(args, 0);
    r = find_records(c, "sparsity", &cnt);
    cr_assert_eq(cnt, 2 * l0->hq * T);
    cr_assert_eq(cJSON_GetObjectItem(r, "k")->valueint, 4);
    cJSON_Delete(c);
    /* refusals: out of range, duplicate, a missing layer, wrong T, not a safetensors file */
    char *bad = as_test_path("bad.idx.st");
    int64_t hq = l0->hq;
    int32_t *row = malloc((size_t)(hq * T * 2) * sizeof *row);
    for (int64_t i = 0; i < hq * T * 2; i++) row[i] = (int32_t)(i % 2);
    row[3] = (int32_t)l0->n; /* past the visible keys */
    as_index_layer_data B2[2] = {{0, hq, T, 2, d, row, NULL}, {1, hq, T, 2, d, row, NULL}};
    cr_assert_eq(as_index_write(bad, B2, 2, NULL, 0, err), AS_OK);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --quiet 2>/dev/null", p, bad);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    row[3] = 0; /* duplicate of row[2] */
    cr_assert_eq(as_index_write(bad, B2, 2, NULL, 0, err), AS_OK);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    row[3] = 1;
    cr_assert_eq(as_index_write(bad, B2, 1, NULL, 0, err), AS_OK); /* layer 1 missing */
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --layer 0 --quiet >/dev/null", p, bad);
    cr_assert_eq(as_test_run_cli(args, NULL), 0); /* fine when only layer 0 is asked */
    B2[0].t = T - 1;
    cr_assert_eq(as_index_write(bad, B2, 1, NULL, 0, err), AS_OK);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    FILE *f = fopen(bad, "wb");
    fputs("not a safetensors file", f);
    fclose(f);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    /* a kernel whose outputs are wrong: the run fails with exit 1 */
    B2[0].t = T;
    double *outs = calloc((size_t)(hq * T * d), sizeof *outs);
    for (int64_t i = 0; i < hq * T * d; i++) outs[i] = 100.0;
    B2[0].out = outs;
    cr_assert_eq(as_index_write(bad, B2, 1, NULL, 0, err), AS_OK);
    snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --layer 0 --quiet >/dev/null 2>&1", p, bad);
    cr_assert_eq(as_test_run_cli(args, NULL), 1);
    /* the writer refuses to write over the trace it reads */
    snprintf(args, sizeof args, "sparsity '%s' --method topk --budget 1%% --export-index '%s' --quiet >/dev/null 2>&1", p, p);
    cr_assert_eq(as_test_run_cli(args, NULL), 2);
    free(outs), free(row), free(idx), free(bad), free(gq), free(ix), free(ixo);
    as_trace_free(tr);
    free(p);
}

/* The page method's exported index: when a query's budget covers all its visible keys, the page
 * method reads every page (n keys, the last page partial when N is not a multiple of the page
 * size), more than the whole pages within the budget, floor(k / P) P. The exported index row
 * must be as wide as the widest selection (the exporter once re-derived floor(k_N / P) P from
 * the layer's N and refused the export: "selection wider than the index row"). */
Test(sparsity, page_export_when_budget_covers_all_keys)
{
    /* N = 100 = 6 x 16 + 4, causal: the queries see 98, 99 and 100 keys */
    char *p = make_trace("w.st", 1, AS_DT_F64, 2.0, 0, 100, 3);
    char *ix = as_test_path("w.idx.st");
    char args[4096];
    const char *budgets[] = {"100", "1.0", "500"};
    for (size_t bi = 0; bi < 3; bi++) {
        snprintf(args, sizeof args, "sparsity '%s' --method page --budget %s --export-index '%s' --quiet >/dev/null", p, budgets[bi], ix);
        cr_assert_eq(as_test_run_cli(args, NULL), 0, "--budget %s", budgets[bi]);
        /* read back as an index: every visible key of every query, exact */
        snprintf(args, sizeof args, "sparsity '%s' --method index --index '%s' --json --quiet", p, ix);
        cJSON *doc = run_json(args, 0);
        cJSON *r;
        int seen = 0;
        cJSON_ArrayForEach(r, cJSON_GetObjectItem(doc, "records"))
        {
            if (strcmp(cJSON_GetObjectItem(r, "record")->valuestring, "sparsity")) continue;
            int q = cJSON_GetObjectItem(r, "query")->valueint;
            cr_assert_eq(cJSON_GetObjectItem(r, "k")->valueint, 98 + q);
            cr_assert_eq(cJSON_GetObjectItem(r, "captured_mass")->valuedouble, 1.0);
            seen++;
        }
        cr_assert_eq(seen, 2 * 4 * 3);
        cJSON_Delete(doc);
    }
    free(ix);
    free(p);
}

/* --page-bounds through the command: on the bundled sample (K stored in bf16) bf16 and f32 page
 * summaries give page and page-sample records identical to the default's; on a float32 trace
 * the run still passes its checks (a selection may move; the bound of (2) holds for any set). */
Test(sparsity, page_bounds_option_records)
{
    const char *s = sample_trace();
    if (!s) cr_skip_test("no sample trace");
    char args[2048];
    cJSON *ref = NULL;
    const char *fmts[] = {"exact", "bf16", "f32"};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args,
                 "sparsity '%s' --layer 10 --method page,page-sample --sparsity 10x,50x "
                 "--page-bounds %s --json --quiet", s, fmts[i]);
        cJSON *doc = run_json(args, 0);
        cr_assert(doc);
        cJSON *recs_ = cJSON_DetachItemFromObject(doc, "records");
        cJSON_Delete(doc);
        if (!ref) {
            ref = recs_;
            cr_assert(cJSON_GetArraySize(ref) > 100);
            continue;
        }
        cr_assert(cJSON_Compare(ref, recs_, 1), "records differ under --page-bounds %s", fmts[i]);
        cJSON_Delete(recs_);
    }
    cJSON_Delete(ref);
    char *p = make_trace("pb.st", 1, AS_DT_F32, 2.0, 0, 300, 4);
    snprintf(args, sizeof args,
             "sparsity '%s' --method page,page-sample --page-bounds bf16 --json --quiet", p);
    cJSON *doc = run_json(args, 0);
    int cnt;
    cJSON *chk = find_records(doc, "check", &cnt);
    cr_assert(chk && cJSON_IsTrue(cJSON_GetObjectItem(chk, "pass")));
    cJSON_Delete(doc);
    free(p);
}
