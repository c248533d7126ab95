/* The pieces of a decoding step other than the matrix products (template: include with T and SUF defined, after
 * gates.h and slstm_cell.h): norms, activations, the causal convolution's step, head-wise maps and the mLSTM
 * cell. Each is the PyTorch layer's arithmetic (nn/, ops/) for one token of one row. */

/* LayerNorm over N: (x - mean) / sqrt(var + eps) * scale (+ bias), the variance biased (F.layer_norm); y may be
 * x (in place) */
static void FN(layer_norm)(int N, const T *x, const T *restrict scale, const T *restrict bias, T eps, T *y) {
    T mu = 0;
#pragma omp simd reduction(+ : mu)
    for (int j = 0; j < N; ++j) mu += x[j];
    mu /= (T)N;
    T var = 0;
#pragma omp simd reduction(+ : var)
    for (int j = 0; j < N; ++j) var += (x[j] - mu) * (x[j] - mu);
    const T r = (T)1 / (T)sqrt((double)(var / (T)N + eps));
    if (bias)
        for (int j = 0; j < N; ++j) y[j] = (x[j] - mu) * r * scale[j] + bias[j];
    else
        for (int j = 0; j < N; ++j) y[j] = (x[j] - mu) * r * scale[j];
}

/* RMSNorm over N: x / sqrt(mean(x^2) + eps) * scale (+ bias) (F.rms_norm, then the scale) */
static void FN(rms_norm)(int N, const T *x, const T *restrict scale, const T *restrict bias, T eps, T *y) {
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int j = 0; j < N; ++j) ss += x[j] * x[j];
    const T r = (T)1 / (T)sqrt((double)(ss / (T)N + eps));
    if (bias)
        for (int j = 0; j < N; ++j) y[j] = x[j] * r * scale[j] + bias[j];
    else
        for (int j = 0; j < N; ++j) y[j] = x[j] * r * scale[j];
}

static inline T FN(silu)(T x) { return x * FN(sigmoid)(x); }

/* GELU, the exact (erf) form of F.gelu */
static inline T FN(gelu)(T x) { return (T)0.5 * x * ((T)1 + ERF(x * (T)0.70710678118654752440)); }

/* one step of the depthwise causal convolution over N channels, for one row: the window is the K-1 inputs in
 * `st` ((K-1, N), oldest first) and x; y = bias + sum_j w[j] * window[j] ((K, N) taps, w[j][c] for channel c).
 * The state then drops its oldest input and takes x (in place). */
static void FN(conv_step)(int N, int K, const T *restrict w, const T *restrict bias, T *restrict st,
                          const T *restrict x, T *restrict y) {
    for (int c = 0; c < N; ++c) y[c] = 0;
    for (int j = 0; j < K - 1; ++j) {
        const T *restrict wj = w + (size_t)j * N, *restrict sj = st + (size_t)j * N;
        for (int c = 0; c < N; ++c) y[c] += wj[c] * sj[c];
    }
    const T *restrict wl = w + (size_t)(K - 1) * N;
    for (int c = 0; c < N; ++c) y[c] += wl[c] * x[c];
    if (bias)
        for (int c = 0; c < N; ++c) y[c] += bias[c];
    for (int j = 0; j + 1 < K - 1; ++j) {
        T *restrict a = st + (size_t)j * N;
        const T *restrict b = st + (size_t)(j + 1) * N;
        for (int c = 0; c < N; ++c) a[c] = b[c];
    }
    if (K > 1) {
        T *restrict last = st + (size_t)(K - 2) * N;
        for (int c = 0; c < N; ++c) last[c] = x[c];
    }
}

/* a head-wise (block-diagonal) map: y[h*DO + o] = sum_i W[h, o, i] x[h*DI + i] (+ bias), W (NH, DO, DI). The dot
 * products are vector reductions (`omp simd`: the order of the sum is the compiler's, as in any BLAS); summed in
 * order they were a chain of scalar adds, a sixth of an sLSTM-only decoding step. */
static void FN(headwise)(int NH, int DO, int DI, const T *restrict W, const T *restrict bias, const T *restrict x,
                         T *restrict y) {
    for (int h = 0; h < NH; ++h) {
        const T *restrict xh = x + (size_t)h * DI;
        for (int o = 0; o < DO; ++o) {
            const T *restrict wr = W + ((size_t)h * DO + o) * DI;
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < DI; ++i) acc += wr[i] * xh[i];
            y[(size_t)h * DO + o] = bias ? acc + bias[(size_t)h * DO + o] : acc;
        }
    }
}

/* `headwise` (no bias) with W in format fmt (XK_W_SAME: T, XK_W_BF16: bfloat16), starting at element `at` */
static void FN(headwise_fmt)(int fmt, int NH, int DO, int DI, const void *W, size_t at, const T *restrict x,
                             T *restrict y) {
    if (fmt != XK_W_BF16) {
        FN(headwise)(NH, DO, DI, (const T *)W + at, 0, x, y);
        return;
    }
    for (int h = 0; h < NH; ++h) {
        const T *restrict xh = x + (size_t)h * DI;
        for (int o = 0; o < DO; ++o) {
            const uint16_t *restrict wr = (const uint16_t *)W + at + ((size_t)h * DO + o) * DI;
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < DI; ++i) acc += (T)xk_bf16_to_float(wr[i]) * xh[i];
            y[(size_t)h * DO + o] = acc;
        }
    }
}

/* The same map for small blocks (Q <= XK_BLOCKDIAG_T_MAX), with the weights stored transposed, Wt (Q_out, Q_in, NB)
 * (Wt[o][i][h] = W[h, o, i]), so that the inner loop runs over the NB blocks, contiguous, as vectors: the mLSTM's
 * q, k and v maps have blocks of 4, where `headwise` spends its time in loop overhead. Each output is summed over
 * i in order, as `headwise` sums it. x and y as in `headwise`; chunks of blocks go through small buffers on the
 * stack. */
#ifndef XK_BLOCKDIAG_T_MAX
#define XK_BLOCKDIAG_T_MAX 16
#define XK_BLOCKDIAG_T_CHUNK 64
#endif
static void FN(blockdiag_t)(int NB, int Q, const T *restrict Wt, const T *restrict bias, const T *restrict x,
                            T *restrict y) {
    T xt[XK_BLOCKDIAG_T_MAX * XK_BLOCKDIAG_T_CHUNK], yt[XK_BLOCKDIAG_T_MAX * XK_BLOCKDIAG_T_CHUNK];
    const int C = XK_BLOCKDIAG_T_CHUNK;
    for (int h0 = 0; h0 < NB; h0 += C) {
        const int n = NB - h0 < C ? NB - h0 : C;
        for (int h = 0; h < n; ++h)
            for (int i = 0; i < Q; ++i) xt[i * C + h] = x[(size_t)(h0 + h) * Q + i];
        for (int o = 0; o < Q; ++o) {
            T *restrict yo = yt + o * C;
            for (int h = 0; h < n; ++h) yo[h] = 0;
            for (int i = 0; i < Q; ++i) {
                const T *restrict w = Wt + ((size_t)o * Q + i) * NB + h0;
                const T *restrict xi = xt + i * C;
#pragma omp simd
                for (int h = 0; h < n; ++h) yo[h] += w[h] * xi[h];
            }
        }
        for (int h = 0; h < n; ++h)
            for (int o = 0; o < Q; ++o) {
                const size_t at = (size_t)(h0 + h) * Q + o;
                y[at] = bias ? yt[o * C + h] + bias[at] : yt[o * C + h];
            }
    }
}

/* One mLSTM step for one head (docs/mlstm.md): q, k (DQK), v (DV), gate pre-activations ig, fg; the state
 * (C (DQK, DV), n (DQK), m) is read from C0, n0, *m0 and written to C1, n1, *m1 (which may be the same memory);
 * h (DV) receives the output. The semantics at infinities are the ops' (docs/mlstm.md, "Infinities"): an input
 * gate of +inf and a stabiliser of +-inf enter as +-BIG, the largest finite T; the stabiliser comes out within
 * +-BIG (the model's state carries it so; the ops read +-BIG as +-inf). */
static void FN(mlstm_cell)(int DQK, int DV, int exp_forget, T eps, const T *restrict q, const T *restrict k,
                           const T *restrict v, T ig, T fg, const T *C0, const T *n0, const T *m0, T *C1, T *n1,
                           T *m1, T *restrict h) {
    const T big = T_MAX;
    T lf = FN(log_forget)(fg, exp_forget);
    if (exp_forget && lf == (T)INFINITY) lf = (T)NAN; /* an infinite exponential forget gate is undefined */
    const T i = ig > big ? big : ig;                  /* +inf -> BIG; NaN stays NaN */
    const T lm = lf + FN(clip_finite)(*m0);
    T m = FN(max_nan)(lm, i);
    m = m < -big ? -big : m; /* the empty state's -inf as -BIG: no inf - inf */
    const T fp = EXP(lm - m);
    const T ip = EXP(i - m) * ((T)1 / (T)sqrt((double)DQK));
    T qn = 0;
#pragma omp simd reduction(+ : qn)
    for (int a = 0; a < DQK; ++a) {
        const T nv = fp * n0[a] + ip * k[a];
        n1[a] = nv;
        qn += q[a] * nv;
    }
    for (int d = 0; d < DV; ++d) h[d] = 0;
    for (int a = 0; a < DQK; ++a) {
        const T ka = ip * k[a], qa = q[a];
        const T *c0 = C0 + (size_t)a * DV;
        T *c1 = C1 + (size_t)a * DV;
#pragma omp simd
        for (int d = 0; d < DV; ++d) {
            const T c = fp * c0[d] + ka * v[d];
            c1[d] = c;
            h[d] += qa * c;
        }
    }
    const T den = FN(max_nan)(ABS(qn), EXP(-m)) + eps;
    for (int d = 0; d < DV; ++d) h[d] /= den;
    *m1 = m;
}
