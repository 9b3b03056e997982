#include "as_select.h"

#include <math.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void as_rng_seed(as_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0) r->s[0] = 1; /* never all zero */
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t as_rng_next(as_rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double as_rng_uniform(as_rng *r) { return (double)(as_rng_next(r) >> 11) * 0x1p-53; }

uint64_t as_rng_below(as_rng *r, uint64_t n)
{
    if (n <= 1) return 0;
    /* rejection: accept x < floor(2^64 / n) * n */
    uint64_t lim = UINT64_MAX - (UINT64_MAX % n + 1) % n;
    uint64_t x;
    do x = as_rng_next(r);
    while (x > lim);
    return x % n;
}

uint64_t as_seed_mix(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ (b * 0xd6e8feb86659fd93ull + 0x9e3779b97f4a7c15ull);
    return splitmix64(&x);
}

/* k-th largest (1-based) of a[0..n), destroying a. Iterative quickselect with a three-way
 * partition around a pseudo-random pivot (expected O(n), duplicates handled in one pass). */
static double kth_largest_inplace(double *a, int64_t n, int64_t k)
{
    as_rng r;
    as_rng_seed(&r, 0x5eed5e1ecull ^ (uint64_t)n);
    int64_t lo = 0, hi = n - 1, want = k - 1; /* index in descending order */
    while (lo < hi) {
        double piv = a[lo + (int64_t)as_rng_below(&r, (uint64_t)(hi - lo + 1))];
        /* [lo, gt) > piv, [gt, i) == piv, (lt, hi] < piv */
        int64_t gt = lo, i = lo, lt = hi;
        while (i <= lt) {
            double v = a[i];
            if (v > piv) {
                a[i] = a[gt];
                a[gt] = v;
                gt++;
                i++;
            } else if (v < piv) {
                a[i] = a[lt];
                a[lt] = v;
                lt--;
            } else {
                i++;
            }
        }
        if (want < gt)
            hi = gt - 1;
        else if (want <= lt)
            return piv;
        else
            lo = lt + 1;
    }
    return a[lo];
}

double as_select_kth_largest(const double *x, int64_t n, int64_t k, double *scratch)
{
    if (n <= 0 || k < 1 || k > n) return NAN;
    double *a = scratch ? scratch : malloc((size_t)n * sizeof *a);
    if (!a) return NAN;
    for (int64_t i = 0; i < n; i++) a[i] = x[i];
    double v = kth_largest_inplace(a, n, k);
    if (!scratch) free(a);
    return v;
}

as_status as_select_topk(const double *x, int64_t n, int64_t k, int64_t *idx, char *err)
{
    if (k < 0 || k > n) return as_err_set(err, AS_ERR_USAGE, "top-k: k=%lld outside [0, %lld]",
                                          (long long)k, (long long)n);
    if (k == 0) return AS_OK;
    if (k == n) {
        for (int64_t i = 0; i < n; i++) idx[i] = i;
        return AS_OK;
    }
    double *a = malloc((size_t)n * sizeof *a);
    if (!a) return as_err_set(err, AS_ERR_NOMEM, "top-k: out of memory");
    for (int64_t i = 0; i < n; i++) a[i] = x[i];
    double thr = kth_largest_inplace(a, n, k);
    free(a);
    int64_t above = 0;
    for (int64_t i = 0; i < n; i++) above += x[i] > thr;
    int64_t ties = k - above, c = 0;
    for (int64_t i = 0; i < n && c < k; i++) {
        if (x[i] > thr)
            idx[c++] = i;
        else if (x[i] == thr && ties > 0) {
            idx[c++] = i;
            ties--;
        }
    }
    return AS_OK;
}

int64_t as_select_sample(as_rng *r, int64_t n, const int64_t *ex, int64_t nex, int64_t m,
                         int64_t *out)
{
    int64_t pool = n - nex;
    if (m > pool) m = pool;
    if (m <= 0) return 0;
    int64_t got = 0, seen = 0, e = 0;
    for (int64_t i = 0; i < n && got < m; i++) {
        if (e < nex && ex[e] == i) {
            e++;
            continue;
        }
        /* select i with probability (m - got) / (pool - seen) */
        if ((double)(pool - seen) * as_rng_uniform(r) < (double)(m - got)) out[got++] = i;
        seen++;
    }
    return got;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t as_select_sort_unique(int64_t *idx, int64_t k)
{
    if (k <= 1) return k < 0 ? 0 : k;
    qsort(idx, (size_t)k, sizeof *idx, cmp_i64);
    int64_t w = 1;
    for (int64_t i = 1; i < k; i++)
        if (idx[i] != idx[w - 1]) idx[w++] = idx[i];
    return w;
}

int64_t as_select_merge(const int64_t *a, int64_t na, const int64_t *b, int64_t nb, int64_t *out)
{
    int64_t i = 0, j = 0, c = 0;
    while (i < na && j < nb) out[c++] = a[i] <= b[j] ? a[i++] : b[j++];
    while (i < na) out[c++] = a[i++];
    while (j < nb) out[c++] = b[j++];
    return c;
}
