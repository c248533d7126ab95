/* The sLSTM pointwise step for one unit, and its derivative (template: include with T and SUF defined, after
 * gates.h). The forward loop, the one-token step and the backward all call these; the Python definition is
 * `slstm_pointwise` in ops/slstm/cell.py, and docs/slstm.md has the equations and their semantics at infinities.
 *
 * From the total pre-activations (i, f, z, o) = W x + b + R h_{t-1} and the state (c0, n0, m0):
 *
 *     lm = log f + m0
 *     m  = max(lm, i)  (= i on an empty state, n0 = 0), clipped to the finite range of T
 *     i' = exp(min(i - m, 0)),   f' = exp(min(lm - m, 0))
 *     c  = f' c0 + i' tanh(z),   n = f' n0 + i',   h = sigmoid(o) c / n  (0 where n = 0)
 *
 * Keeping m finite is what makes every infinity well defined without a special case: exp(x - m) is 0 at
 * x = -inf whatever m, 1 at x = m = +inf (m = T_MAX, the exponent clipped at 0), never NaN.
 */

static inline void FN(slstm_cell)(int exp_forget, T i, T f, T zr, T orr, T c0, T n0, T m0, T *c1, T *n1, T *m1,
                                  T *h1) {
    const T lm = FN(log_forget)(f, exp_forget) + m0;
    const T m = FN(clip_finite)(n0 == 0 ? i : FN(max_nan)(lm, i));
    const T ip = FN(exp_nonpos)(i - m), fp = FN(exp_nonpos)(lm - m);
    const T c = fp * c0 + ip * TANH(zr);
    const T n = fp * n0 + ip;
    *c1 = c;
    *n1 = n;
    *m1 = m;
    *h1 = n == 0 ? (T)0 : FN(sigmoid)(orr) * c / n;
}

/* The derivative of slstm_cell (m carries no gradient). In: the pre-activations, the state before (c0, n0, m0) and
 * after (m, c1, n1, h1) the step, the cotangent dh of h1 and the carries *dc, *dn (cotangents of c1, n1 from later
 * steps). Out: the pre-activation gradients *di, *df, *dz, *d_o, and in *dc, *dn those of c0, n0.
 *
 * The gate values are recomputed from the saved state with the same functions as the forward. A clip is active
 * (and passes no gradient) where its argument was above 0: for i' only at i = +inf; for f' only at lm = +inf or on
 * an empty state. On a non-empty state the clip of f' is tested from n0 rather than from the sign of the recomputed
 * exponent, which may come out a rounding error above 0 (vector and scalar exp/log1p may differ in the last bit). */
static inline void FN(slstm_cell_backward)(int exp_forget, T i, T f, T zr, T orr, T c0, T n0, T m0, T m, T c1, T n1,
                                           T h1, T dh, T *dc, T *dn, T *di, T *df, T *dz, T *d_o) {
    const T lm = FN(log_forget)(f, exp_forget) + m0;
    const T ei = i - m, ef = lm - m;
    const T ip = FN(exp_nonpos)(ei), fp = FN(exp_nonpos)(ef);
    const T z = TANH(zr), o = FN(sigmoid)(orr);
    const T dlogf = exp_forget ? (T)1 : FN(sigmoid)(-f);
    const T inv_n = n1 == 0 ? (T)0 : (T)1 / n1;
    const T dcv = *dc + dh * o * inv_n;
    const T dnv = *dn - dh * h1 * inv_n;
    const int f_open = (ef <= 0 || n0 != 0) && ef < (T)INFINITY;
    *di = ei <= 0 ? (dcv * z + dnv) * ip : (T)0;
    *df = f_open ? (dcv * c0 + dnv * n0) * fp * dlogf : (T)0;
    *dz = dcv * ip * ((T)1 - z * z);
    *d_o = dh * c1 * inv_n * o * ((T)1 - o);
    *dc = dcv * fp;
    *dn = dnv * fp;
}
