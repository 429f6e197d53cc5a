/* The full-batch GD step of a 1-hidden-layer ReLU MLP (see ckernel.py).
   Compiled with -DNF=<input features> -DNC=<classes>: the loops over features and
   classes unroll, and the sample loop vectorises with its accumulators in registers. */
#include <math.h>
#include <stdint.h>
#if !defined(NF) || !defined(NC)
#error compile with -DNF=<input features> -DNC=<classes>
#endif
#define F1 (NF + 1)
#ifdef DLF_MVEC /* glibc's libmvec has vector exp/log: lets the softmax loop vectorise */
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
double log(double);
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float logf(float);
#endif
/* ==== dtype template ====
   ckernel.py compiles the lines above once, then what follows this comment (which it
   drops) once per dtype, with its string.Template placeholders filled in:
   $real (double / float), $sfx (f64 / f32), $vl (lanes per sample block), $exp $log $sqrt.
   Layout (row-major): xa (F+1, N) with a last row of ones (never read: the biases are added
   directly); P = [W0a (H, F+1) | W2a (C, H+1)], bias in the last column; G likewise;
   hid (H, N), L and D (C, N) are scratch.
   Sample loops run over blocks of $vl lanes with per-lane accumulators (fixed summation
   order, no horizontal reduction inside the loop), the tail through the same inline code.
   ==== */

/* Forward for samples n0 .. n0+cnt-1 (cnt <= $vl): hidden rows hid[h] = relu(W0a[h] . xa),
   accumulated at once into the logits L = W2a . [hid; 1], which stay in registers over h. */
static inline __attribute__((always_inline)) void
fwd_$sfx(int cnt, int64_t n0, const $real *restrict xa, const $real *restrict W0,
         const $real *restrict W2, $real *restrict hid, $real *restrict L, int64_t N, int64_t H)
{
    const int64_t H1 = H + 1;
    $real x[NF][$vl], acc[NC][$vl];
    for (int j = 0; j < cnt; j++) {
        for (int f = 0; f < NF; f++) x[f][j] = xa[f * N + n0 + j];
        for (int c = 0; c < NC; c++) acc[c][j] = W2[c * H1 + H];
    }
    for (int64_t h = 0; h < H; h++) {
        const $real *restrict wr = W0 + h * F1;
#pragma omp simd
        for (int j = 0; j < cnt; j++) {
            $real z = wr[NF];  /* the bias (xa's row of ones) */
            for (int f = 0; f < NF; f++) z += wr[f] * x[f][j];
            z = z < 0 ? 0 : z;  /* ReLU that keeps NaN, like clamp_min */
            hid[h * N + n0 + j] = z;
            for (int c = 0; c < NC; c++) acc[c][j] += W2[c * H1 + h] * z;
        }
    }
    for (int c = 0; c < NC; c++)
        for (int j = 0; j < cnt; j++) L[c * N + n0 + j] = acc[c][j];
}

/* Backward for hidden unit h and samples n0 .. n0+cnt-1, one pass: the masked hidden
   delta, its first-layer gradient, and the second-layer gradient, into per-lane sums. */
static inline __attribute__((always_inline)) void
bwd_$sfx(int cnt, int64_t n0, const $real *restrict xa, const $real *restrict a,
         const $real *restrict D, const $real *restrict v, $real g0[F1][$vl], $real g2[NC][$vl],
         int64_t N)
{
#pragma omp simd
    for (int j = 0; j < cnt; j++) {
        const int64_t n = n0 + j;
        $real da = 0;
        for (int c = 0; c < NC; c++) da += v[c] * D[c * N + n];
        da = a[n] <= 0 ? 0 : da;  /* as threshold_backward */
        for (int f = 0; f < NF; f++) g0[f][j] += da * xa[f * N + n];
        g0[NF][j] += da;
        for (int c = 0; c < NC; c++) g2[c][j] += D[c * N + n] * a[n];
    }
}

/* One full-batch gradient-descent update.  Writes the statistics of the forward pass
   before the update, out = [sum log p(y) per class | correct per class | count per class
   | ||G||], then P -= lr * G.  Labels must lie in 0 .. NC-1. */
void dlf_step_$sfx(const $real *restrict xa, const int64_t *restrict y,
                   const $real *restrict w, $real *restrict P, $real *restrict G,
                   $real *restrict hid, $real *restrict L, $real *restrict D,
                   $real *restrict out, const double *restrict lr, int64_t N, int64_t H)
{
    const int64_t H1 = H + 1, Nv = N - N % $vl;
    const $real *W0 = P, *W2 = P + H * F1;
    $real *gW0 = G, *gW2 = G + H * F1;

    for (int64_t n0 = 0; n0 < Nv; n0 += $vl) fwd_$sfx($vl, n0, xa, W0, W2, hid, L, N, H);
    if (Nv < N) fwd_$sfx((int)(N - Nv), Nv, xa, W0, W2, hid, L, N, H);

    /* max-subtracted log-softmax; D = dF/dlogits = (softmax - onehot) * w; the logits
       are dead afterwards, so rows 0 and 1 of L take log p(y_n) and "correct" */
#pragma omp simd
    for (int64_t n = 0; n < N; n++) {
        const $real yn = ($real)y[n];  /* compared as $real: an int64 compare stops GCC vectorising */
        $real l[NC], e[NC], m = L[n], s = 0, ly = 0;
        for (int c = 0; c < NC; c++) {
            l[c] = L[c * N + n];
            m = ((l[c] > m) | (l[c] != l[c])) ? l[c] : m;  /* a max that propagates NaN */
            ly = c == yn ? l[c] : ly;
        }
        for (int c = 0; c < NC; c++) { e[c] = $exp(l[c] - m); s += e[c]; }
        for (int c = 0; c < NC; c++) D[c * N + n] = (e[c] / s - (c == yn)) * w[n];
        L[n] = (ly - m) - $log(s);
        L[N + n] = ly >= m;
    }
    $real lps[NC] = {0}, cor[NC] = {0}, cnt[NC] = {0}, gb[NC] = {0};
    for (int64_t n = 0; n < N; n++) {
        const int64_t yn = y[n];
        lps[yn] += L[n];
        cor[yn] += L[N + n];
        cnt[yn] += 1;
        for (int c = 0; c < NC; c++) gb[c] += D[c * N + n];
    }
    for (int c = 0; c < NC; c++) {
        out[c] = lps[c]; out[NC + c] = cor[c]; out[2 * NC + c] = cnt[c];
        gW2[c * H1 + H] = gb[c];
    }

    for (int64_t h = 0; h < H; h++) {
        $real v[NC], g0[F1][$vl] = {{0}}, g2[NC][$vl] = {{0}};
        for (int c = 0; c < NC; c++) v[c] = W2[c * H1 + h];
        for (int64_t n0 = 0; n0 < Nv; n0 += $vl) bwd_$sfx($vl, n0, xa, hid + h * N, D, v, g0, g2, N);
        if (Nv < N) bwd_$sfx((int)(N - Nv), Nv, xa, hid + h * N, D, v, g0, g2, N);
        for (int f = 0; f < F1; f++) {
            $real s = 0;
            for (int j = 0; j < $vl; j++) s += g0[f][j];
            gW0[h * F1 + f] = s;
        }
        for (int c = 0; c < NC; c++) {
            $real s = 0;
            for (int j = 0; j < $vl; j++) s += g2[c][j];
            gW2[c * H1 + h] = s;
        }
    }

    /* ||G|| and the update in one pass */
    const int64_t total = H * F1 + NC * H1;
    const $real eta = ($real)*lr;
    $real ss = 0;
#pragma omp simd reduction(+:ss)
    for (int64_t i = 0; i < total; i++) {
        ss += G[i] * G[i];
        P[i] -= eta * G[i];
    }
    out[3 * NC] = $sqrt(ss);
}
