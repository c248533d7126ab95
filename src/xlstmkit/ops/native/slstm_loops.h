/* The sLSTM time loops (template: include with T and SUF defined, after slstm_cell.h). Declarations and layouts
 * are in xlstmkit.h; G = 4 * DH is a head's gate row (i, f, z, o).
 *
 * Both matrix products are written as sums of scaled rows (axpy over the contiguous axis), which the compiler
 * vectorises without reassociating any sum. */

/* out (B, M) += coef (B, K) @ mat (K, M): each row of mat is read once and reused for every b */
static void FN(add_rows_product)(int B, int K, int M, const T *restrict coef, const T *restrict mat,
                                 T *restrict out) {
    for (int k = 0; k < K; ++k) {
        const T *restrict row = mat + (size_t)k * M;
        for (int b = 0; b < B; ++b) {
            const T a = coef[(size_t)b * K + k];
            T *restrict o = out + (size_t)b * M;
            for (int j = 0; j < M; ++j) o[j] += a * row[j];
        }
    }
}

/* the cell over DH units: raw (G) the row's pre-activations, states (c, n, m, h) read at 0 and written at 1 */
static void FN(slstm_cells)(int DH, int exp_forget, const T *restrict raw, const T *restrict c0,
                            const T *restrict n0, const T *restrict m0, T *restrict c1, T *restrict n1,
                            T *restrict m1, T *restrict h1) {
    const T *restrict ir = raw, *restrict fr = raw + DH, *restrict zr = raw + 2 * DH, *restrict orr = raw + 3 * DH;
    for (int d = 0; d < DH; ++d)
        FN(slstm_cell)(exp_forget, ir[d], fr[d], zr[d], orr[d], c0[d], n0[d], m0[d], c1 + d, n1 + d, m1 + d, h1 + d);
}

static void FN(copy)(size_t count, const T *restrict from, T *restrict to) {
    for (size_t j = 0; j < count; ++j) to[j] = from[j];
}

/* raw (B, G) = h (B, DH) @ R (DH, G) + g (B, G): the recurrent part summed first, then the input part added, as
 * PyTorch's baddbmm does, so that both paths round a large input pre-activation alike */
static void FN(preactivation)(size_t B, int DH, const T *restrict g, const T *restrict h, const T *restrict R,
                              T *restrict raw) {
    const size_t G = 4 * (size_t)DH;
    for (size_t j = 0; j < B * G; ++j) raw[j] = 0;
    FN(add_rows_product)((int)B, DH, (int)G, h, R, raw);
    for (size_t j = 0; j < B * G; ++j) raw[j] += g[j];
}

void FN(slstm_forward)(int S, int NH, int B, int DH, int exp_forget, const T *gx, const T *R,
                       const unsigned char *mask, T *cn, T *m, T *h, T *raws) {
    const int G = 4 * DH;
    const size_t plane = (size_t)NH * B * DH; /* one state at one time */
    const size_t gate_step = (size_t)NH * B * G;
    for (int t = 0; t < S; ++t) {
        const T *c0 = cn + 2 * t * plane, *n0 = c0 + plane, *m0 = m + t * plane, *h0 = h + t * plane;
        T *c1 = cn + 2 * (t + 1) * plane, *n1 = c1 + plane, *m1 = m + (t + 1) * plane, *h1 = h + (t + 1) * plane;
        for (int nh = 0; nh < NH; ++nh) {
            const size_t r0 = (size_t)nh * B;
            T *raw0 = raws + t * gate_step + r0 * G;
            /* all B rows of the head at once: each row of R is read once per step and reused for every b */
            FN(preactivation)((size_t)B, DH, gx + t * gate_step + r0 * G, h0 + r0 * DH, R + (size_t)nh * DH * G,
                              raw0);
            for (int b = 0; b < B; ++b) {
                const size_t s = (r0 + b) * DH;
                if (mask && !mask[(size_t)t * B + b]) { /* a pad: the whole state, h included, carries over */
                    FN(copy)(DH, c0 + s, c1 + s);
                    FN(copy)(DH, n0 + s, n1 + s);
                    FN(copy)(DH, m0 + s, m1 + s);
                    FN(copy)(DH, h0 + s, h1 + s);
                    continue;
                }
                FN(slstm_cells)(DH, exp_forget, raw0 + (size_t)b * G, c0 + s, n0 + s, m0 + s, c1 + s, n1 + s,
                                m1 + s, h1 + s);
            }
        }
    }
}

void FN(slstm_step)(int NH, int B, int DH, int exp_forget, const T *gates, const T *R, const unsigned char *mask,
                    const T *c0, const T *n0, const T *m0, const T *h0, T *c1, T *n1, T *m1, T *h1, T *raw) {
    const int G = 4 * DH;
    for (int b = 0; b < B; ++b) {
        for (int nh = 0; nh < NH; ++nh) {
            const size_t row = (size_t)b * NH + nh, s = row * DH;
            if (mask && !mask[b]) {
                FN(copy)(DH, c0 + s, c1 + s);
                FN(copy)(DH, n0 + s, n1 + s);
                FN(copy)(DH, m0 + s, m1 + s);
                FN(copy)(DH, h0 + s, h1 + s);
                continue;
            }
            FN(preactivation)(1, DH, gates + row * G, h0 + s, R + (size_t)nh * DH * G, raw + row * G);
            FN(slstm_cells)(DH, exp_forget, raw + row * G, c0 + s, n0 + s, m0 + s, c1 + s, n1 + s, m1 + s, h1 + s);
        }
    }
}

/* One row of the backward at one step: the cell's derivative over DH units (not inlined: it vectorises on its
 * own, where inlined into the loop above it would not, for the pointer that may be NULL) */
XK_NOINLINE static void FN(slstm_cells_backward)(int DH, int exp_forget, const T *restrict raw, const T *restrict c0,
                                     const T *restrict n0, const T *restrict m0, const T *restrict m1,
                                     const T *restrict c1, const T *restrict n1, const T *restrict h1,
                                     const T *restrict dH, const T *restrict dh_rec, T *restrict dc,
                                     T *restrict dn, T *restrict dg) {
    const T *restrict ir = raw, *restrict fr = raw + DH, *restrict zr = raw + 2 * DH, *restrict orr = raw + 3 * DH;
    if (dH) /* two loops rather than a test per unit, so that both vectorise */
        for (int d = 0; d < DH; ++d)
            FN(slstm_cell_backward)(exp_forget, ir[d], fr[d], zr[d], orr[d], c0[d], n0[d], m0[d], m1[d], c1[d],
                                    n1[d], h1[d], dH[d] + dh_rec[d], dc + d, dn + d, dg + d, dg + DH + d,
                                    dg + 2 * DH + d, dg + 3 * DH + d);
    else
        for (int d = 0; d < DH; ++d)
            FN(slstm_cell_backward)(exp_forget, ir[d], fr[d], zr[d], orr[d], c0[d], n0[d], m0[d], m1[d], c1[d],
                                    n1[d], h1[d], dh_rec[d], dc + d, dn + d, dg + d, dg + DH + d, dg + 2 * DH + d,
                                    dg + 3 * DH + d);
}

void FN(slstm_backward)(int S, int NH, int B, int DH, int exp_forget, const T *dH, const T *Rt,
                        const unsigned char *mask, const T *raws, const T *cn, const T *m, const T *h, T *dc,
                        T *dn, T *dh_rec, T *dgx) {
    const int G = 4 * DH;
    const size_t plane = (size_t)NH * B * DH;
    const size_t gate_step = (size_t)NH * B * G;
    for (int t = S - 1; t >= 0; --t) {
        const T *c0 = cn + 2 * t * plane, *n0 = c0 + plane, *m0 = m + t * plane;
        const T *c1 = cn + 2 * (t + 1) * plane, *n1 = c1 + plane, *m1 = m + (t + 1) * plane, *h1 = h + (t + 1) * plane;
        for (int nh = 0; nh < NH; ++nh) {
            const size_t r0 = (size_t)nh * B;
            T *dg0 = dgx + t * gate_step + r0 * G;
            T *dhr0 = dh_rec + r0 * DH;
            for (int b = 0; b < B; ++b) {
                const size_t row = r0 + b, s = row * DH;
                T *dhr = dh_rec + s;
                if (mask && !mask[(size_t)t * B + b]) {
                    /* a pad: no gate gradient, c and n carry over, and h_t = h_{t-1} passes its cotangent
                     * (dh_rec is left holding it: the product below adds only zeros to this row) */
                    for (int j = 0; j < G; ++j) dg0[(size_t)b * G + j] = 0;
                    if (dH)
                        for (int d = 0; d < DH; ++d) dhr[d] += dH[t * plane + s + d];
                    continue;
                }
                const T *dHr = dH ? dH + t * plane + s : NULL;
                FN(slstm_cells_backward)(DH, exp_forget, raws + t * gate_step + row * G, c0 + s, n0 + s, m0 + s,
                                         m1 + s, c1 + s, n1 + s, h1 + s, dHr, dhr, dc + s, dn + s,
                                         dg0 + (size_t)b * G);
                for (int d = 0; d < DH; ++d) dhr[d] = 0;
            }
            /* dh_rec (B, DH) += dg (B, G) @ Rt (G, DH), each row of Rt read once */
            FN(add_rows_product)(B, G, DH, dg0, Rt + (size_t)nh * G * DH, dhr0);
        }
    }
}
