/* The full-batch GD step of a 1-hidden-layer ReLU MLP (see ckernel.py), for the
   Γ-weighted cross-entropy (dlf_step_*) or the Γ-weighted squared error to the one-hot
   target (dlf_step_mse_*).  Compiled with -DNF=<input features> -DNC=<classes>.  Two designs:
   - small: the loops over features and classes unroll, and the sample loop vectorises
     with the inputs and the logits of a block of samples in registers; fastest for a
     few features and classes while the hidden activations (H, N) stay in cache;
   - blocked: blocks of NB samples go through the whole update (forward, loss, backward)
     while they sit in L1/L2, every product is a register-tiled loop vectorised over the
     hidden units, and the gradients are summed over the samples in a fixed order.
   Both are built for F + C <= 6 and the step picks one per call by the size of the data
   (SMALL_BYTES); only the blocked one beyond.  -DDLF_BLOCKED=0 / 1 builds only the small /
   only the blocked design (tests, benchmarks). */
#include <math.h>
#include <stdint.h>
#if !defined(NF) || !defined(NC)
#error compile with -DNF=<input features> -DNC=<classes>
#endif
#define F1 (NF + 1)
#ifdef DLF_BLOCKED
#define HAVE_SMALL (!DLF_BLOCKED)
#define HAVE_BLOCKED (DLF_BLOCKED)
#else  /* measured: beyond F + C = 6 the blocked design is as fast or faster at any size */
#define HAVE_SMALL (NF + NC <= 6)
#define HAVE_BLOCKED 1
#endif
/* with both: the small design while x, hid and the outputs, (F + 1 + H + C) x N numbers,
   take at most this many bytes (beyond, its per-hidden-unit passes over them leave L2) */
#define SMALL_BYTES (1 << 20)
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
/* the blocked design's vectors (GCC vector extensions) and register tiles */
#if defined(__AVX512F__)
#define VBYTES 64
#define NREG 32
#elif defined(__AVX__)
#define VBYTES 32
#define NREG 16
#elif defined(__aarch64__)
#define VBYTES 16
#define NREG 32
#else
#define VBYTES 16
#define NREG 16
#endif
#if NREG >= 32
#define TV 4  /* hidden-unit vectors per tile */
#define TR 6  /* samples (or features, classes) per tile: TR*TV accumulators */
#else
#define TV 2
#define TR 5
#endif
#define NB 64  /* samples per block */
#define NBA (NB + 16)  /* block rows allocated: the last tile of a block may run past NB */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* the designs' bodies are compiled once for both losses (mse a run-time flag, tested outside
   the loops): half the code and compile time */
#define ONCE static __attribute__((noinline, noclone))
/* not inlined: GCC clones it once per constant V, and g5 and g6 share the clones (a quarter
   less compile time than inlining, as fast) */
#define SHARED static __attribute__((noinline))
#define UNROLL _Pragma("GCC unroll 16")
#define UNROLL_C _Pragma("GCC unroll 64")  /* the per-sample loops over the classes (NC <= 64) */
/* ==== dtype template ====
   ckernel.py compiles the lines above once, then what follows this comment (which it
   drops) once per dtype, with its string.Template placeholders filled in:
   $real (double / float), $mint (the integer of a $real's width), $sfx (f64 / f32),
   $vl (lanes per sample block of the small design), $exp $log $sqrt.
   Layout (row-major): xa (F+1, N) with a last row of ones; P = [W0a (H, F+1) | W2a (C, H+1)],
   bias in the last column; G likewise; hid (H, N), L and D (C, N) are the small design's
   scratch, work (dlf_work_$sfx(H) numbers) the blocked design's.
   Every sum runs in a fixed order: the small design over blocks of $vl lanes with per-lane
   accumulators (no horizontal reduction inside the loop), the tail through the same inline
   code; the blocked design sequentially over the samples.
   ==== */

#if HAVE_SMALL
/* ---- the small design ---- */

/* The loss of samples 0 .. cnt-1 from their outputs L (C rows of ld numbers): the
   statistics nl[n] (-loss) and cr[n] ("correct": the label's output >= the max, a max
   that propagates NaN), and D = dF/doutputs (C rows of ld).  ce: max-subtracted
   log-softmax, D = (softmax - onehot) * w; mse: loss = sum_c (L_c - onehot_c)^2,
   D = (L - onehot) * 2w.  nl and cr may be rows of L: each sample's outputs are read
   before its statistics are written (no restrict on them). */
ALWAYS_INLINE void
loss_$sfx(const int mse, int64_t cnt, const $real *L, int64_t ld, const int64_t *restrict y,
          const $real *restrict w, $real *restrict D, $real *nl, $real *cr)
{
#pragma omp simd
    for (int64_t n = 0; n < cnt; n++) {
        /* the label as a $real, and "c is the label" as yn - c == 0: an int64 compare, or
           yn == c (whose branches GCC threads into a switch), stops GCC vectorising */
        const $real yn = ($real)y[n];
        $real l[NC], m = L[n], ly = 0;
        UNROLL_C for (int c = 0; c < NC; c++) {
            l[c] = L[c * ld + n];
            m = ((l[c] > m) | (l[c] != l[c])) ? l[c] : m;  /* a max that propagates NaN */
            ly = yn - c == 0 ? l[c] : ly;
        }
        if (mse) {
            $real sq = 0;
            UNROLL_C for (int c = 0; c < NC; c++) {
                const $real e = l[c] - (yn - c == 0);
                sq += e * e;
                D[c * ld + n] = e * (2 * w[n]);
            }
            nl[n] = -sq;
        } else {
            $real e[NC], s = 0;
            UNROLL_C for (int c = 0; c < NC; c++) { e[c] = $exp(l[c] - m); s += e[c]; }
            UNROLL_C for (int c = 0; c < NC; c++) D[c * ld + n] = (e[c] / s - (yn - c == 0)) * w[n];
            nl[n] = (ly - m) - $log(s);
        }
        cr[n] = ly >= m;
    }
}

/* Forward for samples n0 .. n0+cnt-1 (cnt <= $vl): hidden rows hid[h] = relu(W0a[h] . xa),
   accumulated at once into the logits L = W2a . [hid; 1], which stay in registers over h. */
ALWAYS_INLINE void
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
ALWAYS_INLINE void
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

/* Everything but the update: the gradient into G, the statistics (see step_$sfx) into out. */
ONCE void
grad_small_$sfx(const int mse, const $real *restrict xa, const int64_t *restrict y,
                const $real *restrict w, const $real *restrict P, $real *restrict G,
                $real *restrict hid, $real *restrict L, $real *restrict D, $real *restrict out,
                int64_t N, int64_t H)
{
    const int64_t H1 = H + 1, Nv = N - N % $vl;
    const $real *W0 = P, *W2 = P + H * F1;
    $real *gW0 = G, *gW2 = G + H * F1;

    for (int64_t n0 = 0; n0 < Nv; n0 += $vl) fwd_$sfx($vl, n0, xa, W0, W2, hid, L, N, H);
    if (Nv < N) fwd_$sfx((int)(N - Nv), Nv, xa, W0, W2, hid, L, N, H);

    /* D = dF/doutputs; the outputs are dead afterwards, so rows 0 and 1 of L take the
       per-sample -loss and "correct" */
    if (mse)
        loss_$sfx(1, N, L, N, y, w, D, L, L + N);
    else
        loss_$sfx(0, N, L, N, y, w, D, L, L + N);
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
}

#endif

#if HAVE_BLOCKED
/* ---- the blocked design ----
   Per update: the weights are copied into vector-friendly layouts (W0T (F+1, Hp): the
   first layer transposed, its last row the bias; W2p (C, Hp): the second layer's rows;
   W2T (H, CP) its transpose, b2 its bias; Hp = H and CP = C rounded up to whole vectors,
   zero-padded), then each block of NB samples goes through
     g1: hb = relu(xa^T W0)       (block, Hp)   sample-major, tiles of TR samples x TV vectors
     g2: Lb = W2 hb^T + b2        (C, block)    tiles of R2 samples x CV class vectors
     the loss on Lb: Db = dF/doutputs, the statistics
     g4: dAb = (W2^T Db) masked   (block, Hp)   where hb <= 0, as threshold_backward
     g5: gW2p += Db hb            (C, Hp)       tiles of TR classes x TV vectors
     g6: gW0T += xa dAb           (F+1, Hp)     tiles of TR features x TV vectors (bias: the ones row)
   and G is written from gW0T, gW2p and the bias sums at the end.  A tile's rows past the
   block's last sample (or the last class, feature) read that last one and are not stored. */

typedef $real vec_$sfx __attribute__((vector_size(VBYTES)));
typedef $mint vmask_$sfx __attribute__((vector_size(VBYTES)));
enum {
    VL_$sfx = VBYTES / sizeof($real),
    CV_$sfx = (NC + VL_$sfx - 1) / VL_$sfx,  /* class vectors */
    CP_$sfx = CV_$sfx * VL_$sfx,
    /* samples per g2 tile: R2 x CV accumulators */
    R2_$sfx = MIN(8, (NREG - CV_$sfx - 2) / CV_$sfx) < 1 ? 1 : MIN(8, (NREG - CV_$sfx - 2) / CV_$sfx),
};

/* x = 0 where m is true (a bitwise select: keeps NaN elsewhere) */
ALWAYS_INLINE vec_$sfx zero_where_$sfx(vmask_$sfx m, vec_$sfx x)
{
    return (vec_$sfx)((vmask_$sfx)x & ~m);
}

/* The blocked design's loss of samples 0 .. cnt-1 of a block: loss_$sfx's operations in
   the same order for each sample, but class by class over all samples, so that any C
   vectorises without unrolling the loops over the classes (quick to compile).  The
   per-sample max, label output and sum go through m, ly and s, the labels through yr
   (cnt numbers each). */
ALWAYS_INLINE void
loss_rows_$sfx(const int mse, int64_t cnt, const $real *restrict L, int64_t ld,
               const int64_t *restrict y, const $real *restrict w, $real *restrict D,
               $real *restrict nl, $real *restrict cr, $real *restrict m, $real *restrict ly,
               $real *restrict s, $real *restrict yr)
{
#pragma omp simd
    for (int64_t n = 0; n < cnt; n++) { yr[n] = ($real)y[n]; m[n] = L[n]; ly[n] = 0; s[n] = 0; }
    for (int c = 0; c < NC; c++) {
#pragma omp simd
        for (int64_t n = 0; n < cnt; n++) {
            const $real l = L[c * ld + n];
            m[n] = ((l > m[n]) | (l != l)) ? l : m[n];
            ly[n] = yr[n] - c == 0 ? l : ly[n];
        }
    }
    if (mse) {
        for (int c = 0; c < NC; c++) {
#pragma omp simd
            for (int64_t n = 0; n < cnt; n++) {
                const $real e = L[c * ld + n] - (yr[n] - c == 0);
                s[n] += e * e;
                D[c * ld + n] = e * (2 * w[n]);
            }
        }
#pragma omp simd
        for (int64_t n = 0; n < cnt; n++) nl[n] = -s[n];
    } else {
        for (int c = 0; c < NC; c++) {
#pragma omp simd
            for (int64_t n = 0; n < cnt; n++) {
                const $real e = $exp(L[c * ld + n] - m[n]);
                s[n] += e;
                D[c * ld + n] = e;
            }
        }
        for (int c = 0; c < NC; c++) {
#pragma omp simd
            for (int64_t n = 0; n < cnt; n++)
                D[c * ld + n] = (D[c * ld + n] / s[n] - (yr[n] - c == 0)) * w[n];
        }
#pragma omp simd
        for (int64_t n = 0; n < cnt; n++) nl[n] = (ly[n] - m[n]) - $log(s[n]);
    }
#pragma omp simd
    for (int64_t n = 0; n < cnt; n++) cr[n] = ly[n] >= m[n];
}

/* g1 (relu = 1): out[r][hv] = relu(init[hv] + sum_k s[k*sk + sn[r]] M[k][hv]), k < K;
   g4 (relu = 0): the same from init = 0, then zeroed where mask[sn[r]][hv] <= 0.
   V vectors of hidden units from vector v0; rows r0 .. r0+TR-1 of out (Hp numbers a row). */
ALWAYS_INLINE void
rows_$sfx(const int relu, const int V, int64_t v0, int64_t r0, int64_t last, int K,
          const $real *restrict s, int64_t sk, const $real *restrict M,
          const $real *restrict init, const $real *restrict mask, $real *restrict out, int64_t Hp)
{
    const int VL = VL_$sfx;
    vec_$sfx acc[TR][TV];
    int64_t sn[TR];
    UNROLL for (int r = 0; r < TR; r++) sn[r] = MIN(r0 + r, last);
    UNROLL for (int r = 0; r < TR; r++)
        UNROLL for (int v = 0; v < V; v++)
            acc[r][v] = init ? *(const vec_$sfx *)(init + (v0 + v) * VL) : (vec_$sfx){0};
    for (int k = 0; k < K; k++) {
        vec_$sfx m[TV];
        UNROLL for (int v = 0; v < V; v++) m[v] = *(const vec_$sfx *)(M + k * Hp + (v0 + v) * VL);
        UNROLL for (int r = 0; r < TR; r++) {
            const $real x = s[k * sk + sn[r]];
            UNROLL for (int v = 0; v < V; v++) acc[r][v] += x * m[v];
        }
    }
    UNROLL for (int r = 0; r < TR; r++)
        UNROLL for (int v = 0; v < V; v++) {
            vec_$sfx z = acc[r][v];
            if (relu)
                z = zero_where_$sfx(z < 0, z);  /* ReLU that keeps NaN, like clamp_min */
            else
                z = zero_where_$sfx(*(const vec_$sfx *)(mask + sn[r] * Hp + (v0 + v) * VL) <= 0, z);
            *(vec_$sfx *)(out + (r0 + r) * Hp + (v0 + v) * VL) = z;
        }
}

/* g5/g6: acc[k][hv] += sum_{n < nb} s[k*sk + n] A[n][hv] for rows k0 .. k0+TR-1 (< K) of
   acc, V vectors of hidden units from vector v0 (rows of A and acc: Hp numbers). */
SHARED void
accum_$sfx(const int V, int64_t v0, int k0, int K, int64_t nb, const $real *restrict s,
           int64_t sk, const $real *restrict A, $real *restrict acc, int64_t Hp)
{
    const int VL = VL_$sfx;
    vec_$sfx a[TR][TV];
    const $real *sr[TR];
    UNROLL for (int r = 0; r < TR; r++) sr[r] = s + MIN(k0 + r, K - 1) * sk;
    UNROLL for (int r = 0; r < TR; r++)
        UNROLL for (int v = 0; v < V; v++)
            a[r][v] = *(const vec_$sfx *)(acc + MIN(k0 + r, K - 1) * Hp + (v0 + v) * VL);
    for (int64_t n = 0; n < nb; n++) {
        vec_$sfx m[TV];
        UNROLL for (int v = 0; v < V; v++) m[v] = *(const vec_$sfx *)(A + n * Hp + (v0 + v) * VL);
        UNROLL for (int r = 0; r < TR; r++) {
            const $real x = sr[r][n];
            UNROLL for (int v = 0; v < V; v++) a[r][v] += x * m[v];
        }
    }
    UNROLL for (int r = 0; r < TR; r++)
        if (k0 + r < K)
            UNROLL for (int v = 0; v < V; v++)
                *(vec_$sfx *)(acc + (k0 + r) * Hp + (v0 + v) * VL) = a[r][v];
}

/* g2: the outputs of samples r0 .. r0+R2-1 of the block, Lb[c][r] = b2[c] + sum_h hb[r][h] W2T[h][c] */
SHARED void
outputs_$sfx(int64_t r0, int64_t last, const $real *restrict hb, int64_t Hp, int64_t H,
             const $real *restrict W2T, const $real *restrict b2, $real *restrict Lb)
{
    enum { R = R2_$sfx, CV = CV_$sfx, CP = CP_$sfx };
    vec_$sfx acc[R][CV];
    const $real *hr[R];
    UNROLL for (int r = 0; r < R; r++) hr[r] = hb + MIN(r0 + r, last) * Hp;
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int v = 0; v < CV; v++) acc[r][v] = *(const vec_$sfx *)(b2 + v * VL_$sfx);
    for (int64_t h = 0; h < H; h++) {
        vec_$sfx m[CV];
        UNROLL for (int v = 0; v < CV; v++) m[v] = *(const vec_$sfx *)(W2T + h * CP + v * VL_$sfx);
        UNROLL for (int r = 0; r < R; r++) {
            const $real x = hr[r][h];
            UNROLL for (int v = 0; v < CV; v++) acc[r][v] += x * m[v];
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        for (int c = 0; c < NC; c++) Lb[c * NBA + r0 + r] = acc[r][c / VL_$sfx][c % VL_$sfx];
}

/* V = min(TV, vectors left) as a constant, so that each tile's loops unroll */
#define TILES_$sfx(nv, CALL) \
    for (int64_t v0 = 0; v0 < (nv); v0 += TV) { \
        const int64_t left = (nv) - v0; \
        if (left >= TV) CALL(TV); \
        else if (TV > 3 && left == 3) CALL(3); \
        else if (TV > 2 && left == 2) CALL(2); \
        else CALL(1); \
    }

static inline int64_t rup_$sfx(int64_t n) { return (n + VL_$sfx - 1) / VL_$sfx * VL_$sfx; }

/* The numbers of work the blocked design needs for H hidden units (with slack for alignment). */
int64_t dlf_work_$sfx(int64_t H)
{
    const int64_t Hp = rup_$sfx(H);
    return (2 * F1 + 2 * NC + 2 * NBA) * Hp + H * CP_$sfx + CP_$sfx
           + 2 * NC * NBA + 6 * NBA + VL_$sfx;
}

ONCE void
grad_blocked_$sfx(const int mse, const $real *restrict xa, const int64_t *restrict y,
                  const $real *restrict w, const $real *restrict P, $real *restrict G,
                  $real *restrict work, $real *restrict out, int64_t N, int64_t H)
{
    enum { VL = VL_$sfx, CP = CP_$sfx };
    const int64_t H1 = H + 1, Hp = rup_$sfx(H), nv = Hp / VL;
    const $real *W0 = P, *W2 = P + H * F1;
    $real *gW0 = G, *gW2 = G + H * F1;
    $real *p = ($real *)(((uintptr_t)work + VBYTES - 1) & ~(uintptr_t)(VBYTES - 1));
    $real *restrict W0T = p;   p += F1 * Hp;
    $real *restrict W2p = p;   p += NC * Hp;
    $real *restrict gW0T = p;  p += F1 * Hp;
    $real *restrict gW2p = p;  p += NC * Hp;
    $real *restrict hb = p;    p += NBA * Hp;
    $real *restrict dAb = p;   p += NBA * Hp;
    $real *restrict W2T = p;   p += H * CP;
    $real *restrict b2 = p;    p += CP;
    $real *restrict Lb = p;    p += NC * NBA;
    $real *restrict Db = p;    p += NC * NBA;
    $real *restrict nl = p;    p += NBA;
    $real *restrict cr = p;    p += NBA;
    $real *restrict sm = p;    p += NBA;  /* loss_rows_$sfx's scratch */
    $real *restrict sly = p;   p += NBA;
    $real *restrict ss = p;    p += NBA;
    $real *restrict syr = p;

    for (int f = 0; f < F1; f++)
        for (int64_t h = 0; h < Hp; h++) W0T[f * Hp + h] = h < H ? W0[h * F1 + f] : 0;
    for (int c = 0; c < NC; c++)
        for (int64_t h = 0; h < Hp; h++) W2p[c * Hp + h] = h < H ? W2[c * H1 + h] : 0;
    for (int64_t h = 0; h < H; h++)
        for (int c = 0; c < CP; c++) W2T[h * CP + c] = c < NC ? W2[c * H1 + h] : 0;
    for (int c = 0; c < CP; c++) b2[c] = c < NC ? W2[c * H1 + H] : 0;
    for (int64_t i = 0; i < F1 * Hp; i++) gW0T[i] = 0;
    for (int64_t i = 0; i < NC * Hp; i++) gW2p[i] = 0;

    $real lps[NC] = {0}, cor[NC] = {0}, cnt[NC] = {0}, gb[NC] = {0};
    for (int64_t n0 = 0; n0 < N; n0 += NB) {
        const int64_t nb = MIN(NB, N - n0), last = nb - 1;
        const $real *xb = xa + n0;
#define G1(V) for (int64_t r0 = 0; r0 < nb; r0 += TR) \
            rows_$sfx(1, V, v0, r0, last, NF, xb, N, W0T, W0T + NF * Hp, 0, hb, Hp)
        TILES_$sfx(nv, G1)
#undef G1
        for (int64_t r0 = 0; r0 < nb; r0 += R2_$sfx) outputs_$sfx(r0, last, hb, Hp, H, W2T, b2, Lb);
        if (mse)
            loss_rows_$sfx(1, nb, Lb, NBA, y + n0, w + n0, Db, nl, cr, sm, sly, ss, syr);
        else
            loss_rows_$sfx(0, nb, Lb, NBA, y + n0, w + n0, Db, nl, cr, sm, sly, ss, syr);
        for (int64_t n = 0; n < nb; n++) {
            const int64_t yn = y[n0 + n];
            lps[yn] += nl[n];
            cor[yn] += cr[n];
            cnt[yn] += 1;
            for (int c = 0; c < NC; c++) gb[c] += Db[c * NBA + n];
        }
#define G4(V) for (int64_t r0 = 0; r0 < nb; r0 += TR) \
            rows_$sfx(0, V, v0, r0, last, NC, Db, NBA, W2p, 0, hb, dAb, Hp)
        TILES_$sfx(nv, G4)
#undef G4
#define G5(V) for (int k0 = 0; k0 < NC; k0 += TR) accum_$sfx(V, v0, k0, NC, nb, Db, NBA, hb, gW2p, Hp)
        TILES_$sfx(nv, G5)
#undef G5
#define G6(V) for (int k0 = 0; k0 < F1; k0 += TR) accum_$sfx(V, v0, k0, F1, nb, xb, N, dAb, gW0T, Hp)
        TILES_$sfx(nv, G6)
#undef G6
    }
    for (int c = 0; c < NC; c++) {
        out[c] = lps[c]; out[NC + c] = cor[c]; out[2 * NC + c] = cnt[c];
        for (int64_t h = 0; h < H; h++) gW2[c * H1 + h] = gW2p[c * Hp + h];
        gW2[c * H1 + H] = gb[c];
    }
    for (int64_t h = 0; h < H; h++)
        for (int f = 0; f < F1; f++) gW0[h * F1 + f] = gW0T[f * Hp + h];
}
#else
int64_t dlf_work_$sfx(int64_t H) { (void)H; return 0; }
#endif

/* 1 if the step for N samples and H hidden units runs the blocked design, 0 if the small one */
int dlf_blocked_$sfx(int64_t N, int64_t H)
{
#if HAVE_SMALL && HAVE_BLOCKED
    return (F1 + H + NC) * N * (int64_t)sizeof($real) > SMALL_BYTES;
#else
    (void)N; (void)H;
    return HAVE_BLOCKED;
#endif
}

/* One full-batch gradient-descent update.  Writes the statistics of the forward pass
   before the update, out = [sum of -loss per class | correct per class | count per class
   | ||G||], then P -= lr * G.  Labels must lie in 0 .. NC-1. */
ALWAYS_INLINE void
step_$sfx(const int mse, const $real *restrict xa, const int64_t *restrict y,
          const $real *restrict w, $real *restrict P, $real *restrict G,
          $real *restrict hid, $real *restrict L, $real *restrict D, $real *restrict work,
          $real *restrict out, const double *restrict lr, int64_t N, int64_t H)
{
#if HAVE_SMALL && HAVE_BLOCKED
    if (!dlf_blocked_$sfx(N, H))
        grad_small_$sfx(mse, xa, y, w, P, G, hid, L, D, out, N, H);
    else
        grad_blocked_$sfx(mse, xa, y, w, P, G, work, out, N, H);
#elif HAVE_SMALL
    (void)work;
    grad_small_$sfx(mse, xa, y, w, P, G, hid, L, D, out, N, H);
#else
    (void)hid; (void)L; (void)D;
    grad_blocked_$sfx(mse, xa, y, w, P, G, work, out, N, H);
#endif
    /* ||G|| and the update in one pass */
    const int64_t total = H * F1 + NC * (H + 1);
    const $real eta = ($real)*lr;
    $real ss = 0;
#pragma omp simd reduction(+:ss)
    for (int64_t i = 0; i < total; i++) {
        ss += G[i] * G[i];
        P[i] -= eta * G[i];
    }
    out[3 * NC] = $sqrt(ss);
}

void dlf_step_$sfx(const $real *restrict xa, const int64_t *restrict y,
                   const $real *restrict w, $real *restrict P, $real *restrict G,
                   $real *restrict hid, $real *restrict L, $real *restrict D, $real *restrict work,
                   $real *restrict out, const double *restrict lr, int64_t N, int64_t H)
{
    step_$sfx(0, xa, y, w, P, G, hid, L, D, work, out, lr, N, H);
}

void dlf_step_mse_$sfx(const $real *restrict xa, const int64_t *restrict y,
                       const $real *restrict w, $real *restrict P, $real *restrict G,
                       $real *restrict hid, $real *restrict L, $real *restrict D,
                       $real *restrict work, $real *restrict out, const double *restrict lr,
                       int64_t N, int64_t H)
{
    step_$sfx(1, xa, y, w, P, G, hid, L, D, work, out, lr, N, H);
}
