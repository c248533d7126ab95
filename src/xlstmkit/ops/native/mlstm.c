/* One inference step of the mLSTM recurrence (ops/mlstm.py, `mlstm_step`), for token-by-token generation.
 *
 * As PyTorch ops a step is about fifteen operator calls on small tensors; here it is one pass per head over the
 * matrix memory, which also accumulates the read-out q^T C while each row of C is written. Shapes (contiguous,
 * row-major), BH = batch x heads: q, k (BH, DQK); v (BH, DV); i, f (BH) gate pre-activations; C (BH, DQK, DV),
 * n (BH, DQK), m (BH) before (0) and after (1) the step; h (BH, DV). Keys are scaled by DQK^-1/2 here, as in the
 * op. The previous state is only read (callers may keep it).
 */
#include <math.h>
#include <stddef.h>

#define DEFINE_MLSTM_STEP(T, SUF, EXP, LOG1P, FMIN, FMAX, ABS, SQRT)                                         \
void mlstm_step_##SUF(int BH, int DQK, int DV, int exp_forget, double eps, const T *restrict q,               \
                      const T *restrict k, const T *restrict v, const T *restrict ig, const T *restrict fg,   \
                      const T *restrict C0, const T *restrict n0, const T *restrict m0, T *restrict C1,       \
                      T *restrict n1, T *restrict m1, T *restrict h) {                                        \
    const T kscale = (T)1 / SQRT((T)DQK);                                                                     \
    for (int r = 0; r < BH; ++r) {                                                                            \
        const T f = fg[r];                                                                                    \
        const T logf = exp_forget ? f : FMIN(f, (T)0) - LOG1P(EXP(-ABS(f)));                                 \
        const T lm = logf + m0[r];                                                                            \
        const T m = FMAX(lm, ig[r]);                                                                          \
        const T fp = EXP(lm - m), ip = EXP(ig[r] - m) * kscale;                                               \
        const T *restrict qr = q + (size_t)r * DQK, *restrict kr = k + (size_t)r * DQK;                       \
        const T *restrict vr = v + (size_t)r * DV;                                                            \
        const T *restrict n0r = n0 + (size_t)r * DQK;                                                         \
        T *restrict n1r = n1 + (size_t)r * DQK, *restrict hr = h + (size_t)r * DV;                            \
        T qn = 0;                                                                                             \
        for (int a = 0; a < DQK; ++a) {                                                                       \
            n1r[a] = fp * n0r[a] + ip * kr[a];                                                                \
            qn += qr[a] * n1r[a];                                                                             \
        }                                                                                                     \
        for (int d = 0; d < DV; ++d) hr[d] = 0;                                                               \
        for (int a = 0; a < DQK; ++a) {                                                                       \
            const T ka = ip * kr[a], qa = qr[a];                                                              \
            const T *restrict c0 = C0 + ((size_t)r * DQK + a) * DV;                                           \
            T *restrict c1 = C1 + ((size_t)r * DQK + a) * DV;                                                 \
            for (int d = 0; d < DV; ++d) {                                                                    \
                const T c = fp * c0[d] + ka * vr[d];                                                          \
                c1[d] = c;                                                                                    \
                hr[d] += qa * c;                                                                              \
            }                                                                                                 \
        }                                                                                                     \
        /* denominator max(|q^T n|, exp(-m)) + eps, in the stabilised coordinates */                          \
        const T den = FMAX(ABS(qn), EXP(-m)) + (T)eps;                                                        \
        for (int d = 0; d < DV; ++d) hr[d] /= den;                                                            \
        m1[r] = m;                                                                                            \
    }                                                                                                         \
}

DEFINE_MLSTM_STEP(float, f32, expf, log1pf, fminf, fmaxf, fabsf, sqrtf)
DEFINE_MLSTM_STEP(double, f64, exp, log1p, fmin, fmax, fabs, sqrt)
