/* libFuzzer harness for the TV witness LP (as_bn_witness: GLPK simplex, float64 polish): any
 * finite values V and weights a, from every dtype, at any magnitude. Input bytes:
 *   [0]  dtype (low 2 bits: F64, F32, F16, BF16) and whether the weights are one-hot-ish
 *        (bit 2: all weight on the first few keys)
 *   [1]  d = 1 + [1] % 12
 *   [2]  witness keys: 0 = all, else 1 + [2] % n
 *   [3]  binary exponent shift of V, (int8) [3] * 5 (reaches 2^+-640: 1e-192 .. 1e192, and with
 *        F64 inputs anything finite)
 *   then n keys of d values and one weight each, in the dtype (n <= 160).
 * Non-finite values are replaced by 0 (the trace reader refuses them); weights are |w|
 * normalised to sum 1 (uniform when all are 0). Checks: no abort (GLPK errors must come back as a
 * status), the status is OK or a one-line AS_ERR_VALUE; on OK, a' is a distribution, TV =
 * 1/2 ||a - a'||_1 in [0, 1], the residual is not NaN. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_lp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lp_one(data, size);
    return 0;
}
