/* One token through a whole xLSTMLM in one call (template: include with T and SUF defined, after matvec.h and
 * decode_cells.h). docs/inference.md describes the design; models/native_decode.py writes the plan and the blob.
 *
 * Why one call: at the paper's sizes a token costs a few MFLOP over about 10 MB of weights, which the CPU does in
 * a fraction of a millisecond, while running it as PyTorch operations costs hundreds of operator calls of a few
 * microseconds each. Here the whole stack (embedding, every block's norms, projections, convolution, cell,
 * feed-forward, the post norm and the head) runs without returning to Python.
 *
 * The plan (int64) says where everything is. Offsets are in bytes into the blob (-1: absent); a matrix is five
 * entries (format, rows, cols, offset of the weights, offset of the int8 scales or -1); state offsets are in T
 * elements per batch row (a state tensor of row size r at offset s occupies state[B*s : B*(s+r)], row b at
 * B*s + b*r, which is the layout of the model's state tensors (B, ...) one after another). The layout constants
 * below are mirrored in native_decode.py; every entry is checked against the sizes of the arrays before any is
 * read (`FN(lm_plan_check)`), so a damaged plan is an error code, never a read out of bounds.
 */

#ifndef XK_LM_PLAN
#define XK_LM_PLAN
enum {
    LM_MAGIC = 0x784C4D31,
    LM_HEADER = 24,
    LM_BLOCK = 48,
    /* header */
    H_MAGIC = 0, H_NBLOCKS, H_E, H_V, H_STATE, H_SCRATCH, H_EXPF, H_CONSTS, H_EMB, H_POST_W = H_EMB + 5, H_POST_B,
    H_HEAD, H_BLOCKLEN = H_HEAD + 5,
    /* mLSTM block */
    M_KIND = 0, M_I, M_NH, M_DH, M_K, M_QB, M_NORM_W, M_NORM_B, M_UP, M_UP_B = M_UP + 5, M_CONV_W, M_CONV_B, M_Q_W,
    M_Q_B, M_K_W, M_K_B, M_V_W, M_V_B, M_GATE_W, M_GATE_B, M_ON_W, M_SKIP, M_DOWN, M_DOWN_B = M_DOWN + 5, M_ST_CONV,
    M_ST_C, M_ST_N, M_ST_M,
    /* sLSTM block */
    S_KIND = 0, S_NH, S_DH, S_K, S_F, S_NORM_W, S_NORM_B, S_CONV_W, S_CONV_B, S_GATE_W, S_GATE_B, S_R, S_ON_W,
    S_FFN_NORM_W, S_FFN_NORM_B, S_UP, S_UP_B = S_UP + 5, S_DOWN, S_DOWN_B = S_DOWN + 5, S_ST_CONV, S_ST_C, S_ST_N,
    S_ST_M, S_ST_H, S_HW_FMT /* the format of S_GATE_W and S_R: XK_W_SAME or XK_W_BF16 */,
    /* status codes (status[0]); status[1] holds the plan index or batch row at fault */
    XK_OK = 0, XK_BAD_PLAN = 1, XK_BAD_TOKEN = 2, XK_BAD_SIZES = 3
};
#define XK_MAX_DIM (1 << 24)
#endif

/* the widths of the scratch buffers (T elements per batch row), from a checked plan */
typedef struct {
    int64_t e, u, c, q, g, h, total;
} FN(lm_scratch);

static FN(lm_scratch) FN(lm_scratch_widths)(const int64_t *plan) {
    const int64_t E = plan[H_E], nb = plan[H_NBLOCKS];
    FN(lm_scratch) s = {E, 1, E, 4 * E, 4 * E, E, 0};
    for (int64_t k = 0; k < nb; ++k) {
        const int64_t *p = plan + LM_HEADER + k * LM_BLOCK;
        if (p[0] == 0) {
            const int64_t I = p[M_I];
            if (2 * I > s.u) s.u = 2 * I;
            if (I > s.c) s.c = I;
            if (3 * I > s.q) s.q = 3 * I;
            if (2 * p[M_NH] > s.g) s.g = 2 * p[M_NH];
            if (I > s.h) s.h = I;
        } else if (2 * p[S_F] > s.u) {
            s.u = 2 * p[S_F];
        }
    }
    s.total = 2 * s.e + s.u + s.c + s.q + s.g + s.h;
    return s;
}

/* the checks of one plan entry: an optional vector of `count` elements of `eb` bytes (T: sizeof(T)), a matrix of
 * (rows, cols), a state slot */
static int FN(bytes_ok)(int64_t off, int64_t count, int64_t eb, int optional, int64_t NW) {
    if (off == -1) return optional;
    return off >= 0 && count >= 0 && off % eb == 0 && count <= (NW - off) / eb;
}

static int FN(vec_ok)(int64_t off, int64_t count, int optional, int64_t NW) {
    return FN(bytes_ok)(off, count, (int64_t)sizeof(T), optional, NW);
}

static int FN(mat_ok)(const int64_t *d, int64_t rows, int64_t cols, int64_t NW) {
    const int64_t fmt = d[0], off = d[3], soff = d[4];
    const int64_t wb = fmt == XK_W_SAME ? (int64_t)sizeof(T) : fmt == XK_W_BF16 ? 2 : fmt == XK_W_I8 ? 1 : 0;
    if (wb == 0 || d[1] != rows || d[2] != cols || rows < 1 || cols < 1 || rows > XK_MAX_DIM || cols > XK_MAX_DIM)
        return 0;
    if (off < 0 || off % wb != 0 || rows * cols > (NW - off) / wb) return 0;
    return fmt == XK_W_I8 ? (soff != -1 && FN(vec_ok)(soff, rows, 0, NW)) : soff == -1;
}

static int FN(slot_ok)(int64_t off, int64_t size, int64_t per_row) {
    return off >= 0 && size >= 0 && off <= per_row && size <= per_row - off;
}

static int FN(dim_ok)(int64_t v, int64_t lo) { return v >= lo && v <= XK_MAX_DIM; }

/* 0 if the plan is consistent with the arrays, else the index of the first bad entry + 1 */
static int64_t FN(lm_plan_check)(int B, int NP, int NW, int NS, int V, int NSCR, const int64_t *plan) {
    if (NP < LM_HEADER || plan[H_MAGIC] != LM_MAGIC || plan[H_BLOCKLEN] != LM_BLOCK) return 1;
    const int64_t nb = plan[H_NBLOCKS], E = plan[H_E], per_row = plan[H_STATE];
    if (nb < 0 || nb > 4096 || NP != LM_HEADER + nb * LM_BLOCK) return H_NBLOCKS + 1;
    if (!FN(dim_ok)(E, 1)) return H_E + 1;
    if (plan[H_V] != V || !FN(dim_ok)(V, 1)) return H_V + 1;
    if (per_row < 0 || per_row * B != NS) return H_STATE + 1;
    if (plan[H_EXPF] != 0 && plan[H_EXPF] != 1) return H_EXPF + 1;
    if (!FN(vec_ok)(plan[H_CONSTS], 2, 0, NW)) return H_CONSTS + 1;
    if (plan[H_EMB + 1] < 1 || !FN(mat_ok)(plan + H_EMB, plan[H_EMB + 1], E, NW)) return H_EMB + 1;
    if (!FN(vec_ok)(plan[H_POST_W], E, 1, NW) || (plan[H_POST_W] == -1 && plan[H_POST_B] != -1)) return H_POST_W + 1;
    if (!FN(vec_ok)(plan[H_POST_B], E, 1, NW)) return H_POST_B + 1;
    if (!FN(mat_ok)(plan + H_HEAD, V, E, NW)) return H_HEAD + 1;
    for (int64_t k = 0; k < nb; ++k) {
        const int64_t base = LM_HEADER + k * LM_BLOCK;
        const int64_t *p = plan + base;
        if (p[0] == 0) {
            const int64_t I = p[M_I], NH = p[M_NH], DH = p[M_DH], K = p[M_K], QB = p[M_QB];
            if (!FN(dim_ok)(I, 1) || !FN(dim_ok)(NH, 1) || !FN(dim_ok)(DH, 1) || NH * DH != I || !FN(dim_ok)(K, 1)
                || K > 64 || !FN(dim_ok)(QB, 1) || I % QB != 0)
                return base + 1;
            const int64_t checks[][3] = {
                {M_NORM_W, E, 0}, {M_NORM_B, E, 1}, {M_UP_B, 2 * I, 1}, {M_CONV_W, K * I, 0}, {M_CONV_B, I, 1},
                {M_Q_W, I * QB, 0}, {M_Q_B, I, 1}, {M_K_W, I * QB, 0}, {M_K_B, I, 1}, {M_V_W, I * QB, 0},
                {M_V_B, I, 1}, {M_GATE_W, 2 * NH * 3 * I, 0}, {M_GATE_B, 2 * NH, 0}, {M_ON_W, I, 0}, {M_SKIP, I, 0},
                {M_DOWN_B, E, 1}};
            for (size_t c = 0; c < sizeof checks / sizeof checks[0]; ++c)
                if (!FN(vec_ok)(p[checks[c][0]], checks[c][1], (int)checks[c][2], NW)) return base + checks[c][0] + 1;
            if (!FN(mat_ok)(p + M_UP, 2 * I, E, NW)) return base + M_UP + 1;
            if (!FN(mat_ok)(p + M_DOWN, E, I, NW)) return base + M_DOWN + 1;
            if (!FN(slot_ok)(p[M_ST_CONV], (K - 1) * I, per_row)) return base + M_ST_CONV + 1;
            if (!FN(slot_ok)(p[M_ST_C], NH * DH * DH, per_row)) return base + M_ST_C + 1;
            if (!FN(slot_ok)(p[M_ST_N], NH * DH, per_row)) return base + M_ST_N + 1;
            if (!FN(slot_ok)(p[M_ST_M], NH, per_row)) return base + M_ST_M + 1;
        } else if (p[0] == 1) {
            const int64_t NH = p[S_NH], DH = p[S_DH], K = p[S_K], F = p[S_F], hw = p[S_HW_FMT];
            if (!FN(dim_ok)(NH, 1) || !FN(dim_ok)(DH, 1) || NH * DH != E || K < 0 || K > 64 || !FN(dim_ok)(F, 1))
                return base + 1;
            if (hw != XK_W_SAME && !(hw == XK_W_BF16 && sizeof(T) == 4)) return base + S_HW_FMT + 1;
            const int64_t hwb = hw == XK_W_BF16 ? 2 : (int64_t)sizeof(T);
            if (!FN(bytes_ok)(p[S_GATE_W], 4 * NH * DH * DH, hwb, 0, NW)) return base + S_GATE_W + 1;
            if (!FN(bytes_ok)(p[S_R], NH * DH * 4 * DH, hwb, 0, NW)) return base + S_R + 1;
            const int64_t checks[][3] = {
                {S_NORM_W, E, 0}, {S_NORM_B, E, 1}, {S_CONV_B, E, 1}, {S_GATE_B, 4 * E, 0}, {S_ON_W, E, 0},
                {S_FFN_NORM_W, E, 0}, {S_FFN_NORM_B, E, 1}, {S_UP_B, 2 * F, 1}, {S_DOWN_B, E, 1}};
            for (size_t c = 0; c < sizeof checks / sizeof checks[0]; ++c)
                if (!FN(vec_ok)(p[checks[c][0]], checks[c][1], (int)checks[c][2], NW)) return base + checks[c][0] + 1;
            if (!FN(vec_ok)(p[S_CONV_W], K * E, K == 0, NW)) return base + S_CONV_W + 1;
            if (!FN(mat_ok)(p + S_UP, 2 * F, E, NW)) return base + S_UP + 1;
            if (!FN(mat_ok)(p + S_DOWN, E, F, NW)) return base + S_DOWN + 1;
            if (!FN(slot_ok)(p[S_ST_CONV], (K > 0 ? K - 1 : 0) * E, per_row)) return base + S_ST_CONV + 1;
            for (int j = S_ST_C; j <= S_ST_H; ++j)
                if (!FN(slot_ok)(p[j], NH * DH, per_row)) return base + j + 1;
        } else {
            return base + 1;
        }
    }
    const FN(lm_scratch) s = FN(lm_scratch_widths)(plan);
    if (plan[H_SCRATCH] < s.total || (int64_t)NSCR < s.total * B) return H_SCRATCH + 1;
    return 0;
}

#define XK_AT(type, off) ((const type *)(blob + (off)))
#define XK_OPT(off) ((off) == -1 ? (const T *)0 : (const T *)(blob + (off)))

/* matrix descriptor d (5 plan entries) -> the matvec's arguments */
static void FN(lm_matvec)(const uint8_t *blob, const int64_t *d, int B, const T *x, size_t ldx, T *y, size_t ldy,
                          const T *bias, int accumulate, int nthreads) {
    FN(matvec)((int)d[0], (int)d[1], (int)d[2], blob + d[3], d[4] == -1 ? (const T *)0 : XK_AT(T, d[4]), B, x, ldx, y,
               ldy, bias, accumulate, nthreads);
}

/* row `tok` of the embedding matrix as T */
static void FN(embed_row)(const uint8_t *blob, const int64_t *d, int64_t tok, T *x) {
    const int fmt = (int)d[0];
    const int64_t E = d[2];
    const void *w = blob + d[3];
    const T s = fmt == XK_W_I8 ? XK_AT(T, d[4])[tok] : (T)1;
    for (int64_t j = 0; j < E; ++j) x[j] = FN(wload)(fmt, w, (size_t)(tok * E + j)) * s;
}

static void FN(lm_mlstm_block)(int B, int E, const int64_t *p, const uint8_t *blob, T norm_eps, T mlstm_eps,
                                int exp_forget, T *state, const FN(lm_scratch) *sw, T *x, T *xn, T *u, T *xc, T *qkv,
                                T *g, T *hb, int nthreads) {
    const int I = (int)p[M_I], NH = (int)p[M_NH], DH = (int)p[M_DH], K = (int)p[M_K], QB = (int)p[M_QB];
    for (int b = 0; b < B; ++b)
        FN(layer_norm)(E, x + (size_t)b * sw->e, XK_AT(T, p[M_NORM_W]), XK_OPT(p[M_NORM_B]), norm_eps,
                       xn + (size_t)b * sw->e);
    FN(lm_matvec)(blob, p + M_UP, B, xn, (size_t)sw->e, u, (size_t)sw->u, XK_OPT(p[M_UP_B]), 0, nthreads);
    T *conv_st = state + (size_t)B * p[M_ST_CONV];
    for (int b = 0; b < B; ++b) {
        const T *x_in = u + (size_t)b * sw->u;
        T *c = xc + (size_t)b * sw->c, *r = qkv + (size_t)b * sw->q;
        FN(conv_step)(I, K, XK_AT(T, p[M_CONV_W]), XK_OPT(p[M_CONV_B]), conv_st + (size_t)b * (K - 1) * I, x_in, c);
        for (int j = 0; j < I; ++j) c[j] = FN(silu)(c[j]);
        if (QB <= XK_BLOCKDIAG_T_MAX) { /* q, k, v stored transposed (native_decode.pack_lm) */
            FN(blockdiag_t)(I / QB, QB, XK_AT(T, p[M_Q_W]), XK_OPT(p[M_Q_B]), c, r);
            FN(blockdiag_t)(I / QB, QB, XK_AT(T, p[M_K_W]), XK_OPT(p[M_K_B]), c, r + I);
            FN(blockdiag_t)(I / QB, QB, XK_AT(T, p[M_V_W]), XK_OPT(p[M_V_B]), x_in, r + 2 * I);
        } else {
            FN(headwise)(I / QB, QB, QB, XK_AT(T, p[M_Q_W]), XK_OPT(p[M_Q_B]), c, r);
            FN(headwise)(I / QB, QB, QB, XK_AT(T, p[M_K_W]), XK_OPT(p[M_K_B]), c, r + I);
            FN(headwise)(I / QB, QB, QB, XK_AT(T, p[M_V_W]), XK_OPT(p[M_V_B]), x_in, r + 2 * I);
        }
    }
    /* input and forget gate pre-activations (2 NH) from cat[q, k, v] */
    FN(matvec)(XK_W_SAME, 2 * NH, 3 * I, blob + p[M_GATE_W], 0, B, qkv, (size_t)sw->q, g, (size_t)sw->g,
               XK_AT(T, p[M_GATE_B]), 0, 1);
    T *Cs = state + (size_t)B * p[M_ST_C], *ns = state + (size_t)B * p[M_ST_N], *ms = state + (size_t)B * p[M_ST_M];
    const T *on_w = XK_AT(T, p[M_ON_W]), *skip = XK_AT(T, p[M_SKIP]);
    const int pairs = B * NH;
    const int nt = (double)pairs * DH * DH >= XK_PARALLEL_MIN_WORK / 4 ? nthreads : 1;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int r = 0; r < pairs; ++r) {
        const int b = r / NH, hd = r % NH;
        const T *qr = qkv + (size_t)b * sw->q + (size_t)hd * DH;
        T *C = Cs + (size_t)r * DH * DH, *n = ns + (size_t)r * DH, *m = ms + r;
        T *h = hb + (size_t)b * sw->h + (size_t)hd * DH;
        const T *gr = g + (size_t)b * sw->g;
        FN(mlstm_cell)(DH, DH, exp_forget, mlstm_eps, qr, qr + I, qr + 2 * I, gr[hd], gr[NH + hd], C, n, m, C, n, m,
                       h);
    }
    for (int b = 0; b < B; ++b) {
        T *h = hb + (size_t)b * sw->h;
        const T *c = xc + (size_t)b * sw->c, *z = u + (size_t)b * sw->u + I;
        for (int hd = 0; hd < NH; ++hd) /* the head norm, in place */
            FN(layer_norm)(DH, h + (size_t)hd * DH, on_w + (size_t)hd * DH, 0, norm_eps, h + (size_t)hd * DH);
        for (int j = 0; j < I; ++j) h[j] = (h[j] + skip[j] * c[j]) * FN(silu)(z[j]);
    }
    FN(lm_matvec)(blob, p + M_DOWN, B, hb, (size_t)sw->h, x, (size_t)sw->e, XK_OPT(p[M_DOWN_B]), 1, nthreads);
}

/* rr (G) = sum_a hp[a] R[a, :] over the DH rows of R (T or bfloat16, from element `at`), four rows per pass over
 * rr (a quarter of the loads and stores of rr); rows in order, each pass adding (h0 R0 + h1 R1) + (h2 R2 + h3 R3) */
static void FN(recurrent_rows)(int fmt, int DH, int G, const void *R, size_t at, const T *hp, T *restrict rr) {
    int a = 0;
    for (int j = 0; j < G; ++j) rr[j] = 0;
    if (fmt == XK_W_BF16) {
        const uint16_t *Rh = (const uint16_t *)R + at;
        for (; a < DH % 4; ++a)
            for (int j = 0; j < G; ++j) rr[j] += hp[a] * (T)xk_bf16_to_float(Rh[(size_t)a * G + j]);
        for (; a < DH; a += 4) {
            const T h0 = hp[a], h1 = hp[a + 1], h2 = hp[a + 2], h3 = hp[a + 3];
            const uint16_t *R0 = Rh + (size_t)a * G, *R1 = R0 + G, *R2 = R1 + G, *R3 = R2 + G;
#pragma omp simd
            for (int j = 0; j < G; ++j)
                rr[j] += (h0 * (T)xk_bf16_to_float(R0[j]) + h1 * (T)xk_bf16_to_float(R1[j])) +
                         (h2 * (T)xk_bf16_to_float(R2[j]) + h3 * (T)xk_bf16_to_float(R3[j]));
        }
        return;
    }
    const T *Rh = (const T *)R + at;
    for (; a < DH % 4; ++a)
        for (int j = 0; j < G; ++j) rr[j] += hp[a] * Rh[(size_t)a * G + j];
    for (; a < DH; a += 4) {
        const T h0 = hp[a], h1 = hp[a + 1], h2 = hp[a + 2], h3 = hp[a + 3];
        const T *R0 = Rh + (size_t)a * G, *R1 = R0 + G, *R2 = R1 + G, *R3 = R2 + G;
#pragma omp simd
        for (int j = 0; j < G; ++j) rr[j] += (h0 * R0[j] + h1 * R1[j]) + (h2 * R2[j] + h3 * R3[j]);
    }
}

static void FN(lm_slstm_block)(int B, int E, const int64_t *p, const uint8_t *blob, T norm_eps, int exp_forget,
                                T *state, const FN(lm_scratch) *sw, T *x, T *xn, T *u, T *xc, T *gin, T *raw, T *hb,
                                int nthreads) {
    const int NH = (int)p[S_NH], DH = (int)p[S_DH], K = (int)p[S_K], F = (int)p[S_F], G = 4 * DH;
    const int hw = (int)p[S_HW_FMT]; /* head-wise gate and recurrent weights: T or bfloat16 (a bf16 model) */
    const void *gw = blob + p[S_GATE_W], *R = blob + p[S_R];
    const T *gb = XK_AT(T, p[S_GATE_B]);
    const size_t gstride = (size_t)NH * DH * DH; /* one gate's head-wise weights */
    T *conv_st = state + (size_t)B * p[S_ST_CONV];
    T *cs = state + (size_t)B * p[S_ST_C], *ns = state + (size_t)B * p[S_ST_N], *mst = state + (size_t)B * p[S_ST_M],
      *hs = state + (size_t)B * p[S_ST_H];
    for (int b = 0; b < B; ++b) {
        T *xnb = xn + (size_t)b * sw->e, *c = xc + (size_t)b * sw->c, *gi = gin + (size_t)b * sw->q;
        T *rw = raw + (size_t)b * sw->g, *h = hb + (size_t)b * sw->h;
        FN(layer_norm)(E, x + (size_t)b * sw->e, XK_AT(T, p[S_NORM_W]), XK_OPT(p[S_NORM_B]), norm_eps, xnb);
        if (K > 0) {
            FN(conv_step)(E, K, XK_AT(T, p[S_CONV_W]), XK_OPT(p[S_CONV_B]), conv_st + (size_t)b * (K - 1) * E, xnb, c);
            for (int j = 0; j < E; ++j) c[j] = FN(silu)(c[j]);
        } else {
            for (int j = 0; j < E; ++j) c[j] = xnb[j];
        }
        /* (i, f) from the convolved input, (z, o) from the normalised one: gin laid out (4, E) */
        for (int gt = 0; gt < 4; ++gt)
            FN(headwise_fmt)(hw, NH, DH, DH, gw, gt * gstride, gt < 2 ? c : xnb, gi + (size_t)gt * E);
        const size_t base = (size_t)b * E; /* this row's (NH, DH) in the cell states */
        for (int hd = 0; hd < NH; ++hd) {
            /* raw (4 DH) = h_prev @ R[hd] (recurrent part first) + (input part + bias) */
            T *rr = rw + (size_t)hd * G;
            const T *hp = hs + base + (size_t)hd * DH;
            FN(recurrent_rows)(hw, DH, G, R, (size_t)hd * DH * G, hp, rr);
            for (int gt = 0; gt < 4; ++gt)
                for (int d = 0; d < DH; ++d)
                    rr[gt * DH + d] += gi[(size_t)gt * E + (size_t)hd * DH + d] + gb[((size_t)hd * 4 + gt) * DH + d];
        }
        for (int hd = 0; hd < NH; ++hd) {
            const T *rr = rw + (size_t)hd * G;
            const size_t s = base + (size_t)hd * DH;
            for (int d = 0; d < DH; ++d)
                FN(slstm_cell)(exp_forget, rr[d], rr[DH + d], rr[2 * DH + d], rr[3 * DH + d], cs[s + d], ns[s + d],
                               mst[s + d], cs + s + d, ns + s + d, mst + s + d, hs + s + d);
            FN(layer_norm)(DH, hs + s, XK_AT(T, p[S_ON_W]) + (size_t)hd * DH, 0, norm_eps, h + (size_t)hd * DH);
        }
        T *xb = x + (size_t)b * sw->e;
        for (int j = 0; j < E; ++j) xb[j] += h[j];
        FN(layer_norm)(E, xb, XK_AT(T, p[S_FFN_NORM_W]), XK_OPT(p[S_FFN_NORM_B]), norm_eps, xnb);
    }
    FN(lm_matvec)(blob, p + S_UP, B, xn, (size_t)sw->e, u, (size_t)sw->u, XK_OPT(p[S_UP_B]), 0, nthreads);
    for (int b = 0; b < B; ++b) {
        T *ub = u + (size_t)b * sw->u;
        for (int j = 0; j < F; ++j) ub[j] = FN(gelu)(ub[j]) * ub[F + j];
    }
    FN(lm_matvec)(blob, p + S_DOWN, B, u, (size_t)sw->u, x, (size_t)sw->e, XK_OPT(p[S_DOWN_B]), 1, nthreads);
}

void FN(lm_decode)(int B, int NP, int NW, int NS, int V, int NSCR, int nthreads, const int64_t *plan,
                   const uint8_t *blob, const int64_t *tokens, const T *state0, T *state1, T *logits, T *scratch,
                   int32_t *status) {
    const int64_t bad = FN(lm_plan_check)(B, NP, NW, NS, V, NSCR, plan);
    if (bad) {
        status[0] = XK_BAD_PLAN;
        status[1] = (int32_t)(bad - 1);
        return;
    }
    const int64_t vocab = plan[H_EMB + 1];
    for (int b = 0; b < B; ++b)
        if (tokens[b] < 0 || tokens[b] >= vocab) {
            status[0] = XK_BAD_TOKEN;
            status[1] = b;
            return;
        }
    status[0] = XK_OK;
    status[1] = 0;
    if (state1 != state0) memcpy(state1, state0, (size_t)NS * sizeof(T));
    const int E = (int)plan[H_E];
    const FN(lm_scratch) sw = FN(lm_scratch_widths)(plan);
    T *x = scratch, *xn = x + (size_t)B * sw.e, *u = xn + (size_t)B * sw.e, *xc = u + (size_t)B * sw.u;
    T *q = xc + (size_t)B * sw.c, *g = q + (size_t)B * sw.q, *hb = g + (size_t)B * sw.g;
    const T norm_eps = XK_AT(T, plan[H_CONSTS])[0], mlstm_eps = XK_AT(T, plan[H_CONSTS])[1];
    const int exp_forget = (int)plan[H_EXPF];
    for (int b = 0; b < B; ++b) FN(embed_row)(blob, plan + H_EMB, tokens[b], x + (size_t)b * sw.e);
    for (int64_t k = 0; k < plan[H_NBLOCKS]; ++k) {
        const int64_t *p = plan + LM_HEADER + k * LM_BLOCK;
        if (p[0] == 0)
            FN(lm_mlstm_block)(B, E, p, blob, norm_eps, mlstm_eps, exp_forget, state1, &sw, x, xn, u, xc, q, g, hb,
                               nthreads);
        else
            FN(lm_slstm_block)(B, E, p, blob, norm_eps, exp_forget, state1, &sw, x, xn, u, xc, q, g, hb, nthreads);
    }
    const T *fin = x;
    if (plan[H_POST_W] != -1) {
        for (int b = 0; b < B; ++b)
            FN(layer_norm)(E, x + (size_t)b * sw.e, XK_AT(T, plan[H_POST_W]), XK_OPT(plan[H_POST_B]), norm_eps,
                           xn + (size_t)b * sw.e);
        fin = xn;
    }
    FN(lm_matvec)(blob, plan + H_HEAD, B, fin, (size_t)sw.e, logits, (size_t)V, 0, 0, nthreads);
}

#undef XK_AT
#undef XK_OPT
