/* One inference step of the mLSTM recurrence (template: include with T and SUF defined, after gates.h); the
 * PyTorch twin is `mlstm_step` in ops/mlstm, which this must equal (docs/native.md). Declaration and shapes in
 * xlstmkit.h.
 *
 * As PyTorch ops a step is about fifteen operator calls on small tensors; here it is one pass per head over the
 * matrix memory, which also accumulates the read-out q^T C while each row of C is written. The previous state is
 * only read (callers may keep it). */
void FN(mlstm_step)(int BH, int DQK, int DV, int exp_forget, double eps, const T *q, const T *k, const T *v,
                    const T *i, const T *f, const T *C0, const T *n0, const T *m0, T *C1, T *n1, T *m1, T *h) {
    const T kscale = (T)1 / (T)sqrt((double)DQK);
    for (int r = 0; r < BH; ++r) {
        const T lm = FN(log_forget)(f[r], exp_forget) + m0[r];
        const T m = FN(max_nan)(lm, i[r]);
        const T fp = EXP(lm - m), ip = EXP(i[r] - m) * kscale;
        const T *restrict qr = q + (size_t)r * DQK, *restrict kr = k + (size_t)r * DQK;
        const T *restrict vr = v + (size_t)r * DV;
        const T *restrict n0r = n0 + (size_t)r * DQK;
        T *restrict n1r = n1 + (size_t)r * DQK, *restrict hr = h + (size_t)r * DV;
        T qn = 0;
        for (int a = 0; a < DQK; ++a) {
            n1r[a] = fp * n0r[a] + ip * kr[a];
            qn += qr[a] * n1r[a];
        }
        for (int d = 0; d < DV; ++d) hr[d] = 0;
        for (int a = 0; a < DQK; ++a) {
            const T ka = ip * kr[a], qa = qr[a];
            const T *restrict c0 = C0 + ((size_t)r * DQK + a) * DV;
            T *restrict c1 = C1 + ((size_t)r * DQK + a) * DV;
            for (int d = 0; d < DV; ++d) {
                const T c = fp * c0[d] + ka * vr[d];
                c1[d] = c;
                hr[d] += qa * c;
            }
        }
        /* denominator max(|q^T n|, exp(-m)) + eps, in the stabilised coordinates */
        const T den = FN(max_nan)(ABS(qn), EXP(-m)) + (T)eps;
        for (int d = 0; d < DV; ++d) hr[d] /= den;
        m1[r] = m;
    }
}
