/* as_spectrum: the spectrum of attention as a function of relative position (FFTW).
 *
 * For query head h, each query t at position p_t attends to keys j <= p_t (all keys when the
 * trace has no positions, p_t = n - 1). Its weights, indexed by relative position
 * r = p_t - j, are averaged over the queries that see r:
 *     A(r) = mean_{t : r < n_t} a_t(p_t - r),   r = 0 .. L-1,  L = max_t n_t (or max_lag).
 * The power spectrum is |X_k|^2, X = DFT of w (A - mean A), w a Hann window (or none),
 * k = 0 .. L/2, frequency k / L cycles per position, period L / k positions. Peaks are local
 * maxima of the power with period in [min_period, max_period], refined by a parabola through
 * the log power of the three bins around the maximum; amplitude 2 |X_k| / sum w estimates the
 * amplitude of a sinusoid in A. RoPE (Su et al., 2021) rotates pair i of a head by
 * theta_i = base^(-2i/d) per position, period 2 pi / theta_i; each peak is matched with the
 * pair whose period is nearest in log ratio, and each head reports the pair with the largest
 * mean logit amplitude scale * mean|q_i| * mean|k_i| (|x_i| = the norm of pair i). */
#ifndef AS_SPECTRUM_H
#define AS_SPECTRUM_H

#include <stdint.h>

#include "as_error.h"
#include "as_trace.h"

typedef enum { AS_ROPE_HALF = 0, AS_ROPE_INTERLEAVED } as_rope_pairs;

typedef struct {
    int64_t max_lag;     /* L at most this (0: the longest visible range) */
    int hann;            /* 1: Hann window (default), 0: none */
    double min_period;   /* peaks with period below are ignored (default 2) */
    double max_period;   /* and above (0: L / 2) */
    int n_peaks;         /* peaks to report (default 5) */
    double rope_base;    /* 0: no RoPE relation */
    as_rope_pairs pairs; /* how the d dims form RoPE pairs: (i, i + d/2) or (2i, 2i + 1) */
} as_spectrum_opts;

void as_spectrum_opts_init(as_spectrum_opts *o);

typedef struct {
    double freq;       /* cycles per position (refined) */
    double period;     /* 1 / freq */
    int64_t bin;       /* the DFT bin of the maximum */
    double power;      /* |X_bin|^2 */
    double power_frac; /* power / total power of bins 1..L/2 */
    double amplitude;  /* 2 |X_bin| / sum w */
    int rope_i;        /* nearest RoPE pair (-1 without rope_base) */
    double rope_period;
} as_spectrum_peak;

typedef struct {
    int64_t len;         /* L */
    int64_t n_queries;   /* queries averaged */
    double *profile;     /* A(r), r < L */
    int64_t *count;      /* queries that see r */
    int64_t n_bins;      /* L / 2 + 1 */
    double *power;       /* |X_k|^2 */
    double *amp;         /* 2 |X_k| / sum w */
    int n_peaks;
    as_spectrum_peak *peaks;
    /* RoPE: per pair i < d/2 the mean logit amplitude; the largest */
    int n_pairs;
    double *pair_amp;
    int rope_dom_i;
    double rope_dom_period, rope_dom_share; /* share of the sum of pair amplitudes */
} as_spectrum;

/* Spectrum of query head h of layer l. Memory O(L + tile * d). Free with as_spectrum_clear. */
as_status as_spectrum_head(const as_layer *l, int64_t h, const as_spectrum_opts *o,
                           as_spectrum *out, char *err);
void as_spectrum_clear(as_spectrum *s);

/* Spectrum of a given profile A[0..len) (no trace): fills len, profile (copied), power, amp,
 * peaks (rope fields -1). For tests and experiments. */
as_status as_spectrum_profile(const double *A, int64_t len, const as_spectrum_opts *o,
                              as_spectrum *out, char *err);

/* RoPE period of pair i for head dim d: 2 pi base^(2i/d). */
double as_rope_period(double base, int64_t d, int i);

#endif
