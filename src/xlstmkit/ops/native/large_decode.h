/* One xLSTMLarge block for one token (template: include with T and SUF defined, after matvec.h and
 * decode_cells.h); the arithmetic of `xLSTMLargeBlock.step` (models/xlstm_large/model.py, docs/blocks.md):
 *
 *     xn = RMSNorm(x);  q, k, v, o~ = W xn;  i~, f~ = cap tanh((W xn + b) / cap)
 *     h  = mLSTM step (sigmoid forget gate);  x += W_out (sigmoid(o~) * LayerNorm_per_head(h))
 *     xn = RMSNorm(x);  x += W_down (silu(W_gate xn) * (W_up xn))
 *
 * The large matrices arrive as the model's own weights (nn.Linear layout, any of the three formats of matvec.h)
 * and are read in place: a memory-mapped 7B checkpoint is never copied. A call per block keeps every weight an
 * argument that `native.call` checks; at these sizes a call's overhead is nothing beside the weights' bytes. */

static void FN(large_matvec)(int WB, int O, int I, const uint8_t *w, const T *scale, int B, const T *x, size_t ldx,
                             T *y, size_t ldy, const T *bias, int accumulate, int nthreads) {
    const int fmt = WB == 1 ? XK_W_I8 : WB == 2 && sizeof(T) != 2 ? XK_W_BF16 : XK_W_SAME;
    FN(matvec)(fmt, O, I, w, scale, B, x, ldx, y, ldy, bias, accumulate, nthreads);
}

static int FN(wb_ok)(int WB, const T *scale) {
    if (WB == 1) return scale != 0;
    return (WB == 2 || WB == (int)sizeof(T)) && scale == 0;
}

void FN(linear)(int B, int O, int I, int WB, int nthreads, const T *x, const uint8_t *w, const T *scale,
                const T *bias, T *y, int32_t *status) {
    if (!FN(wb_ok)(WB, scale)) {
        status[0] = XK_BAD_SIZES;
        return;
    }
    status[0] = XK_OK;
    FN(large_matvec)(WB, O, I, w, scale, B, x, (size_t)I, y, (size_t)O, bias, 0, nthreads);
}

void FN(large_block)(int B, int E, int NH, int DQK, int DV, int F, int WB, int nthreads, double norm_eps, double eps,
                     double gate_cap, const T *norm1_w, const T *norm1_b, const uint8_t *wq, const T *sq,
                     const T *bq, const uint8_t *wk, const T *sk, const T *bk, const uint8_t *wv, const T *sv,
                     const T *bv, const uint8_t *wo, const T *so, const T *bo, const T *wif, const T *bif,
                     const T *hn_w, const T *hn_b, const uint8_t *wout, const T *sout, const T *bout,
                     const T *norm2_w, const T *norm2_b, const uint8_t *wg, const T *sg, const T *bg,
                     const uint8_t *wu, const T *su, const T *bu, const uint8_t *wdown, const T *sdown,
                     const T *bdown, T *x, const T *C0, const T *n0, const T *m0, T *C1, T *n1, T *m1, T *scratch,
                     int32_t *status) {
    if (!FN(wb_ok)(WB, sq) || !FN(wb_ok)(WB, sk) || !FN(wb_ok)(WB, sv) || !FN(wb_ok)(WB, so)
        || !FN(wb_ok)(WB, sout) || !FN(wb_ok)(WB, sg) || !FN(wb_ok)(WB, su) || !FN(wb_ok)(WB, sdown)) {
        status[0] = XK_BAD_SIZES;
        return;
    }
    status[0] = XK_OK;
    const size_t QK = (size_t)NH * DQK, VD = (size_t)NH * DV;
    const size_t W = (size_t)E + 2 * QK + 3 * VD + 2 * (size_t)NH + 2 * (size_t)F; /* scratch per row */
    T *xn = scratch, *q = xn + E, *k = q + QK, *v = k + QK, *o = v + VD, *g = o + VD, *h = g + 2 * NH;
    const T teps = (T)norm_eps;
    for (int b = 0; b < B; ++b)
        FN(rms_norm)(E, x + (size_t)b * E, norm1_w, norm1_b, teps, xn + (size_t)b * W);
    FN(large_matvec)(WB, (int)QK, E, wq, sq, B, xn, W, q, W, bq, 0, nthreads);
    FN(large_matvec)(WB, (int)QK, E, wk, sk, B, xn, W, k, W, bk, 0, nthreads);
    FN(large_matvec)(WB, (int)VD, E, wv, sv, B, xn, W, v, W, bv, 0, nthreads);
    FN(large_matvec)(WB, (int)VD, E, wo, so, B, xn, W, o, W, bo, 0, nthreads);
    FN(matvec)(XK_W_SAME, 2 * NH, E, wif, 0, B, xn, W, g, W, bif, 0, nthreads);
    for (int b = 0; b < B; ++b) {
        T *gb = g + (size_t)b * W;
        if (gate_cap > 0)
            for (int j = 0; j < 2 * NH; ++j) gb[j] = (T)gate_cap * TANH(gb[j] / (T)gate_cap);
    }
    const int pairs = B * NH;
    const int nt = (double)pairs * DQK * DV >= XK_PARALLEL_MIN_WORK / 4 ? nthreads : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int r = 0; r < pairs; ++r) {
        const int b = r / NH, hd = r % NH;
        const size_t row = (size_t)b * W;
        FN(mlstm_cell)(DQK, DV, 0, (T)eps, q + row + (size_t)hd * DQK, k + row + (size_t)hd * DQK,
                       v + row + (size_t)hd * DV, g[row + hd], g[row + NH + hd], C0 + (size_t)r * DQK * DV,
                       n0 + (size_t)r * DQK, m0 + r, C1 + (size_t)r * DQK * DV, n1 + (size_t)r * DQK, m1 + r,
                       h + row + (size_t)hd * DV);
    }
    for (int b = 0; b < B; ++b) {
        T *hb = h + (size_t)b * W;
        const T *ob = o + (size_t)b * W;
        for (int hd = 0; hd < NH; ++hd)
            FN(layer_norm)(DV, hb + (size_t)hd * DV, hn_w + (size_t)hd * DV, hn_b ? hn_b + (size_t)hd * DV : 0, teps,
                           hb + (size_t)hd * DV);
        for (size_t j = 0; j < VD; ++j) hb[j] *= FN(sigmoid)(ob[j]);
    }
    FN(large_matvec)(WB, E, (int)VD, wout, sout, B, h, W, x, (size_t)E, bout, 1, nthreads);
    for (int b = 0; b < B; ++b)
        FN(rms_norm)(E, x + (size_t)b * E, norm2_w, norm2_b, teps, xn + (size_t)b * W);
    /* the FFN's hidden vector (gate | up), 2 F per row after h */
    T *gate = h + VD, *up = gate + F;
    FN(large_matvec)(WB, F, E, wg, sg, B, xn, W, gate, W, bg, 0, nthreads);
    FN(large_matvec)(WB, F, E, wu, su, B, xn, W, up, W, bu, 0, nthreads);
    for (int b = 0; b < B; ++b) {
        T *gb = gate + (size_t)b * W;
        const T *ub = up + (size_t)b * W;
        for (int j = 0; j < F; ++j) gb[j] = FN(silu)(gb[j]) * ub[j];
    }
    FN(large_matvec)(WB, E, F, wdown, sdown, B, gate, W, x, (size_t)E, bdown, 1, nthreads);
}

void FN(stream_sum)(int N, int nthreads, const T *x, T *out) {
    T total = 0;
#pragma omp parallel num_threads(nthreads) reduction(+ : total) if (nthreads > 1)
    {
        int id = 0, n = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        n = omp_get_num_threads();
#endif
        const int64_t j0 = (int64_t)N * id / n, j1 = (int64_t)N * (id + 1) / n;
        T part = 0;
#pragma omp simd reduction(+ : part)
        for (int64_t j = j0; j < j1; ++j) part += x[j];
        total += part;
    }
    *out = total;
}
