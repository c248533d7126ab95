/* The sLSTM recurrence as plain C loops: the part of the cell that cannot be batched over time.
 *
 * xlstmkit compiles this file on first use with the system C compiler (see native/__init__.py) and calls it through
 * ctypes; nothing here is needed at install time, and without a compiler the same math runs as PyTorch ops. The
 * math is that of ops/slstm.py (its module docstring has the equations); the Python op stays the reference and the
 * tests compare the two.
 *
 * Layouts (all contiguous, row-major; G = 4 * DH, gate order i, f, z, o inside G):
 *   gx     (S, NH, B, G)      input pre-activations W x + b
 *   R      (NH, DH, G)        a head's h -> its four gate pre-activations (row e of R[nh] is h[e]'s contribution)
 *   Rt     (NH, G, DH)        R transposed per head (the backward's map from gate gradients back to h)
 *   C, N, M, H  (S + 1, NH, B, DH)   states; index 0 holds the initial state
 *   raws   (S, NH, B, G)      total pre-activations g + R h_{t-1}, saved for the backward
 *
 * Both matrix-vector products are written as sums of scaled rows (axpy over the contiguous axis), which the
 * compiler vectorises without reassociating any sum.
 */
#include <math.h>
#include <stddef.h>

#define DEFINE_SLSTM(T, SUF, EXP, LOG1P, TANH, FMIN, FMAX, ABS)                                                     \
                                                                                                              \
/* out (B, M) += coef (B, K) @ mat (K, M), as sums of scaled rows of mat: each row is read once and reused for  \
 * every b, and the innermost loop runs over M contiguous numbers (vectorised without reassociating a sum). */   \
static void add_rows_product_##SUF(int B, int K, int M, const T *restrict coef, const T *restrict mat,        \
                                   T *restrict out) {                                                        \
    for (int k = 0; k < K; ++k) {                                                                             \
        const T *restrict row = mat + (size_t)k * M;                                                          \
        for (int b = 0; b < B; ++b) {                                                                         \
            const T a = coef[(size_t)b * K + k];                                                              \
            T *restrict o = out + (size_t)b * M;                                                              \
            for (int j = 0; j < M; ++j) o[j] += a * row[j];                                                   \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* out (G) = g (G) + sum_e h[e] * R[e, :] */                                                                  \
static void recurrent_preact_##SUF(int DH, int G, const T *restrict g, const T *restrict h,                  \
                                   const T *restrict R, T *restrict out) {                                   \
    for (int j = 0; j < G; ++j) out[j] = g[j];                                                                \
    add_rows_product_##SUF(1, DH, G, h, R, out);                                                              \
}                                                                                                             \
                                                                                                              \
/* the gate arithmetic of one step for one (head, batch) row of DH units */                                   \
static void pointwise_##SUF(int DH, int exp_forget, const T *restrict raw, const T *restrict c0,              \
                            const T *restrict n0, const T *restrict m0, T *restrict c1, T *restrict n1,       \
                            T *restrict m1, T *restrict h1) {                                                 \
    const T *ir = raw, *fr = raw + DH, *zr = raw + 2 * DH, *orr = raw + 3 * DH;                               \
    for (int d = 0; d < DH; ++d) {                                                                            \
        const T f = fr[d];                                                                                    \
        /* log sigmoid(f) = min(f, 0) - log1p(exp(-|f|)) */                                                   \
        const T logf = exp_forget ? f : FMIN(f, (T)0) - LOG1P(EXP(-ABS(f)));                                 \
        const T lm = logf + m0[d];                                                                            \
        const T i = ir[d];                                                                                    \
        const T m = n0[d] == (T)0 ? i : FMAX(lm, i); /* empty state: start the stabiliser at i~ */            \
        const T ip = EXP(i - m);                                                                              \
        const T fp = EXP(FMIN(lm - m, (T)0)); /* <= 0 except on an empty state, where it multiplies zeros */  \
        const T c = fp * c0[d] + ip * TANH(zr[d]);                                                            \
        const T n = fp * n0[d] + ip;                                                                          \
        const T o = (T)1 / ((T)1 + EXP(-orr[d]));                                                             \
        c1[d] = c;                                                                                            \
        n1[d] = n;                                                                                            \
        m1[d] = m;                                                                                            \
        h1[d] = o * c / n;                                                                                    \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* S steps forward; fills C, N, M, H [1..S] and raws */                                                       \
void slstm_forward_##SUF(int S, int NH, int B, int DH, int exp_forget, const T *restrict gx,                 \
                         const T *restrict R, T *restrict C, T *restrict N, T *restrict M, T *restrict H,     \
                         T *restrict raws) {                                                                  \
    const int G = 4 * DH;                                                                                     \
    const size_t state_step = (size_t)NH * B * DH, gate_step = (size_t)NH * B * G;                            \
    for (int t = 0; t < S; ++t) {                                                                             \
        for (int nh = 0; nh < NH; ++nh) {                                                                     \
            const T *Rh = R + (size_t)nh * DH * G;                                                            \
            const size_t r0 = (size_t)nh * B;                                                                 \
            T *raw0 = raws + t * gate_step + r0 * G;                                                          \
            const T *h0 = H + t * state_step + r0 * DH;                                                       \
            /* all B rows of the head at once: each row of R is read once per step and reused for every b */ \
            for (size_t j = 0; j < (size_t)B * G; ++j) raw0[j] = gx[t * gate_step + r0 * G + j];              \
            add_rows_product_##SUF(B, DH, G, h0, Rh, raw0);                                                   \
            for (int b = 0; b < B; ++b) {                                                                     \
                const size_t s0 = t * state_step + (r0 + b) * DH, s1 = s0 + state_step;                      \
                pointwise_##SUF(DH, exp_forget, raw0 + (size_t)b * G, C + s0, N + s0, M + s0, C + s1, N + s1, \
                                M + s1, H + s1);                                                              \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* One step, with the layouts of the step API: gates gx (B, NH, G), states (B, NH, DH); raw (B, NH, G) scratch.   \
 * Generation's hot path: one call per sLSTM layer and token. */                                              \
void slstm_step_##SUF(int NH, int B, int DH, int exp_forget, const T *restrict gx, const T *restrict R,      \
                      const T *restrict c0, const T *restrict n0, const T *restrict m0, const T *restrict h0, \
                      T *restrict c1, T *restrict n1, T *restrict m1, T *restrict h1, T *restrict raw) {      \
    const int G = 4 * DH;                                                                                     \
    for (int b = 0; b < B; ++b) {                                                                             \
        for (int nh = 0; nh < NH; ++nh) {                                                                     \
            const size_t row = (size_t)b * NH + nh, s = row * DH;                                             \
            recurrent_preact_##SUF(DH, G, gx + row * G, h0 + s, R + (size_t)nh * DH * G, raw + row * G);      \
            pointwise_##SUF(DH, exp_forget, raw + row * G, c0 + s, n0 + s, m0 + s, c1 + s, n1 + s, m1 + s,    \
                            h1 + s);                                                                          \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* The backward through time. Recomputes each step's gate values from the saved pre-activations and states (the   \
 * same vectorised functions as the forward, so its branch choices are reproduced exactly) and runs the carries    \
 * dc, dn (NH, B, DH) and dh_rec = R dg of the step after, writing each step's gate gradients into                \
 * dgx (S, NH, B, G). dH (S, NH, B, DH) may be NULL (no gradient on the hidden outputs). dc, dn, dh_rec are in/out. \
 * The weight gradient dR = sum_t h_{t-1} dg_t^T is left to the caller: one matrix product over all steps. */    \
void slstm_backward_##SUF(int S, int NH, int B, int DH, int exp_forget, const T *restrict dH,                \
                          const T *restrict Rt, const T *restrict raws, const T *restrict C, const T *restrict N, \
                          const T *restrict M, const T *restrict H, T *restrict dc, T *restrict dn,           \
                          T *restrict dh_rec, T *restrict dgx) {                                              \
    const int G = 4 * DH;                                                                                     \
    const size_t state_step = (size_t)NH * B * DH, gate_step = (size_t)NH * B * G;                            \
    for (int t = S - 1; t >= 0; --t) {                                                                        \
        for (int nh = 0; nh < NH; ++nh) {                                                                     \
            const T *Rth = Rt + (size_t)nh * G * DH;                                                          \
            for (int b = 0; b < B; ++b) {                                                                     \
                const size_t row = (size_t)nh * B + b;                                                        \
                const size_t k0 = t * state_step + row * DH, k1 = k0 + state_step; /* before / after step t */ \
                const T *raw = raws + t * gate_step + row * G;                                                \
                const T *restrict ir = raw, *restrict fr = raw + DH, *restrict zr = raw + 2 * DH;             \
                const T *restrict orr = raw + 3 * DH;                                                         \
                const T *restrict dHr = dH ? dH + k0 : NULL;                                                  \
                T *restrict dcr = dc + row * DH, *restrict dnr = dn + row * DH;                               \
                const T *restrict dhr = dh_rec + row * DH;                                                    \
                T *restrict dg = dgx + t * gate_step + row * G;                                               \
                for (int d = 0; d < DH; ++d) {                                                                \
                    const T f = fr[d];                                                                        \
                    const T logf = exp_forget ? f : FMIN(f, (T)0) - LOG1P(EXP(-ABS(f)));                      \
                    const T dlogf = exp_forget ? (T)1 : (T)1 / ((T)1 + EXP(f)); /* sigmoid(-f) */             \
                    const T m_prev = M[k0 + d], m = M[k1 + d], n_prev = N[k0 + d];                            \
                    const T expo = logf + m_prev - m;                                                         \
                    const T fp = EXP(FMIN(expo, (T)0));                                                       \
                    const T ip = EXP(ir[d] - m);                                                              \
                    const T z = TANH(zr[d]);                                                                  \
                    const T o = (T)1 / ((T)1 + EXP(-orr[d]));                                                 \
                    const T inv_n = (T)1 / N[k1 + d];                                                         \
                    /* the clamp of fp can only act on an empty state (n = 0), where it multiplies zeros */   \
                    const T df_fac = (expo <= (T)0 || n_prev != (T)0) ? fp * dlogf : (T)0;                    \
                    const T dh = (dHr ? dHr[d] : (T)0) + dhr[d];                                              \
                    const T dcv = dcr[d] + dh * o * inv_n;                                                    \
                    const T dnv = dnr[d] - dh * H[k1 + d] * inv_n;                                            \
                    dg[d] = (dcv * z + dnv) * ip;                                                             \
                    dg[DH + d] = (dcv * C[k0 + d] + dnv * n_prev) * df_fac;                                   \
                    dg[2 * DH + d] = dcv * ip * ((T)1 - z * z);                                               \
                    dg[3 * DH + d] = dh * C[k1 + d] * inv_n * o * ((T)1 - o);                                 \
                    dcr[d] = dcv * fp;                                                                        \
                    dnr[d] = dnv * fp;                                                                        \
                }                                                                                             \
            }                                                                                                 \
            /* dh_rec (DH) = sum_j dg[j] * Rt[j, :] for every row b, each row of Rt read once */              \
            T *dhr0 = dh_rec + (size_t)nh * B * DH;                                                           \
            const T *dg0 = dgx + t * gate_step + (size_t)nh * B * G;                                          \
            for (size_t d = 0; d < (size_t)B * DH; ++d) dhr0[d] = (T)0;                                       \
            add_rows_product_##SUF(B, G, DH, dg0, Rth, dhr0);                                                 \
        }                                                                                                     \
    }                                                                                                         \
}

DEFINE_SLSTM(float, f32, expf, log1pf, tanhf, fminf, fmaxf, fabsf)
DEFINE_SLSTM(double, f64, exp, log1p, tanh, fmin, fmax, fabs)

/* the version of this interface (slstm.c and mlstm.c); the loader refuses a library that reports another */
int xlstmkit_native_abi(void) { return 3; }
