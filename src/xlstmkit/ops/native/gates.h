/* The gate rule both cells share (template: include with T and SUF defined; see common.h). The Python twin is
 * ops/gates.py; docs/slstm.md gives the equations and the semantics at infinities. */

/* log f from the forget pre-activation: log sigmoid(f) = min(f, 0) - log1p(exp(-|f|)) (no overflow for any f;
 * -inf at f = -inf, 0 at +inf, NaN for NaN), or f itself for the exponential forget gate */
static inline T FN(log_forget)(T f, int exp_forget) {
    const T neg = f < 0 ? f : (T)0;
    return exp_forget ? f : neg - LOG1P(EXP(-ABS(f)));
}

/* max(a, b) that returns NaN if either is NaN, like torch.maximum (C's fmax would drop it) */
static inline T FN(max_nan)(T a, T b) {
    return (a > b || a != a) ? a : b;
}

/* x clipped to the finite range of T (NaN stays NaN) */
static inline T FN(clip_finite)(T x) {
    return x < -T_MAX ? -T_MAX : (x > T_MAX ? T_MAX : x);
}

/* exp(min(d, 0)): a gate relative to the stabiliser (d = x - m <= 0 except where a clip applies) */
static inline T FN(exp_nonpos)(T d) {
    return EXP(d > 0 ? (T)0 : d);
}

/* 1 / (1 + exp(-x)): exactly 0 at x = -inf and wherever exp(-x) overflows, 1 at +inf, NaN for NaN */
static inline T FN(sigmoid)(T x) {
    return (T)1 / ((T)1 + EXP(-x));
}
