/* The float matrix-vector kernel with AVX-512 (included by decode.c once, where the build targets a CPU that has
 * AVX-512 F, BW and VL; matvec.h calls it for T = float). Same function as matvec.h's portable loop; only the
 * order of the additions inside each dot product differs (16 lanes, then a tree).
 *
 * A tile is 4 weight rows times up to 4 batch rows: 16 accumulators of 16 lanes, each weight vector loaded once
 * and used for every batch row, each x vector loaded once and used for 4 weight rows. The last partial vector of
 * a row is read with a masked load (nothing past the end of a row is touched). Weights are widened to float as
 * they are loaded: bfloat16 by a 16-bit shift (exact), int8 by a conversion (exact); bfloat16 rows go 32 at a time
 * through a cheaper widening (zeros interleaved below each weight) against x permuted to match. Each load is
 * paired with a prefetch into L2 of the same place in the next tile's rows: weights stream from memory at batch 1,
 * and four interleaved row streams outran the hardware prefetcher. bf16 products at 1 thread, caches flushed
 * before each call (medians; another job on the other core): (12288, 1024) 9 -> 16 GB/s, (12288, 4096) 14 -> 18,
 * against 17-21 GB/s for torch's sum over the same weights; prefetching into L1 instead gained only in cache. */
#include <immintrin.h>

static inline __attribute__((always_inline)) __m512 xk_load16(const int fmt, const void *w, size_t off,
                                                              __mmask16 m) {
    if (fmt == XK_W_BF16) {
        const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + off);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    if (fmt == XK_W_I8) {
        const __m128i c = _mm_maskz_loadu_epi8(m, (const int8_t *)w + off);
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c));
    }
    return _mm512_maskz_loadu_ps(m, (const float *)w + off);
}

/* the four sums of a0..a3 (each the sum of its 16 lanes), as one 128-bit vector */
static inline __attribute__((always_inline)) __m128 xk_hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(3, 2, 3, 2)));
    /* 128-bit lane k now holds 4 partial sums of a_k */
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4,
                                                                         0), t));
}

/* out[c][k] = sum_i W[row k] x[c] for the 4 rows rows[0..3] (offsets in elements) and CB batch rows */
static inline __attribute__((always_inline)) void xk_tile(const int fmt, const int CB, int I, const void *w,
                                                          const size_t rows[4], const float *x, size_t ldx,
                                                          float out[4][4]) {
    __m512 acc[4][4];
    for (int c = 0; c < CB; ++c)
        for (int k = 0; k < 4; ++k) acc[c][k] = _mm512_setzero_ps();
    const size_t wbytes = fmt == XK_W_BF16 ? 2 : fmt == XK_W_I8 ? 1 : sizeof(float);
    const size_t ahead = 4 * (size_t)I; /* the same place in the next tile (its rows follow these four) */
    int i = 0;
    if (fmt == XK_W_BF16) {
        /* 32 bfloat16 weights per load, widened by interleaving zeros below them (one instruction per 16): within
         * each 128-bit lane, unpacklo yields elements 0-3 and unpackhi 4-7, so x is permuted to match
         * ({0-3, 8-11, 16-19, 24-27} and {4-7, 12-15, 20-23, 28-31}), once per batch row for all four rows */
        const __m512i lo_idx = _mm512_set_epi32(27, 26, 25, 24, 19, 18, 17, 16, 11, 10, 9, 8, 3, 2, 1, 0);
        const __m512i hi_idx = _mm512_set_epi32(31, 30, 29, 28, 23, 22, 21, 20, 15, 14, 13, 12, 7, 6, 5, 4);
        const __m512i zero = _mm512_setzero_si512();
        for (; i + 32 <= I; i += 32) {
            __m512i wv[4];
            for (int k = 0; k < 4; ++k) {
                _mm_prefetch((const char *)w + (rows[k] + ahead + i) * wbytes, _MM_HINT_T1);
                wv[k] = _mm512_loadu_si512((const uint16_t *)w + rows[k] + i);
            }
            for (int c = 0; c < CB; ++c) {
                const __m512 xa = _mm512_loadu_ps(x + c * ldx + i), xb = _mm512_loadu_ps(x + c * ldx + i + 16);
                const __m512 xlo = _mm512_permutex2var_ps(xa, lo_idx, xb);
                const __m512 xhi = _mm512_permutex2var_ps(xa, hi_idx, xb);
                for (int k = 0; k < 4; ++k) {
                    acc[c][k] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, wv[k])), xlo,
                                                acc[c][k]);
                    acc[c][k] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, wv[k])), xhi,
                                                acc[c][k]);
                }
            }
        }
    }
    for (; i + 16 <= I; i += 16) {
        __m512 wv[4];
        for (int k = 0; k < 4; ++k) {
            _mm_prefetch((const char *)w + (rows[k] + ahead + i) * wbytes, _MM_HINT_T1);
            wv[k] = xk_load16(fmt, w, rows[k] + i, 0xFFFF);
        }
        for (int c = 0; c < CB; ++c) {
            const __m512 xv = _mm512_loadu_ps(x + c * ldx + i);
            for (int k = 0; k < 4; ++k) acc[c][k] = _mm512_fmadd_ps(wv[k], xv, acc[c][k]);
        }
    }
    if (i < I) {
        const __mmask16 m = (__mmask16)((1u << (I - i)) - 1u);
        __m512 wv[4];
        for (int k = 0; k < 4; ++k) wv[k] = xk_load16(fmt, w, rows[k] + i, m);
        for (int c = 0; c < CB; ++c) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + c * ldx + i);
            for (int k = 0; k < 4; ++k) acc[c][k] = _mm512_fmadd_ps(wv[k], xv, acc[c][k]);
        }
    }
    for (int c = 0; c < CB; ++c) _mm_storeu_ps(out[c], xk_hsum4(acc[c][0], acc[c][1], acc[c][2], acc[c][3]));
}

static inline __attribute__((always_inline)) void xk_rows_fmt(const int fmt, int I, const void *w,
                                                              const float *scale, int o0, int o1, int B,
                                                              const float *x, size_t ldx, float *y, size_t ldy,
                                                              const float *bias, int accumulate) {
    float out[4][4];
    for (int o = o0; o < o1; o += 4) {
        const int nr = o1 - o < 4 ? o1 - o : 4;
        size_t rows[4];
        for (int k = 0; k < 4; ++k) rows[k] = (size_t)(o + (k < nr ? k : nr - 1)) * I; /* a short tile repeats */
        for (int b = 0; b < B; b += 4) {
            const int cb = B - b < 4 ? B - b : 4;
            const float *xb = x + (size_t)b * ldx;
            switch (cb) {
            case 4: xk_tile(fmt, 4, I, w, rows, xb, ldx, out); break;
            case 3: xk_tile(fmt, 3, I, w, rows, xb, ldx, out); break;
            case 2: xk_tile(fmt, 2, I, w, rows, xb, ldx, out); break;
            default: xk_tile(fmt, 1, I, w, rows, xb, ldx, out); break;
            }
            for (int c = 0; c < cb; ++c) {
                float *yb = y + (size_t)(b + c) * ldy;
                for (int k = 0; k < nr; ++k) {
                    float v = out[c][k];
                    if (scale) v *= scale[o + k];
                    if (bias) v += bias[o + k];
                    yb[o + k] = accumulate ? yb[o + k] + v : v;
                }
            }
        }
    }
}

static void xk_matvec_rows_avx512(int fmt, int I, const void *w, const float *scale, int o0, int o1, int B,
                                  const float *x, size_t ldx, float *y, size_t ldy, const float *bias,
                                  int accumulate) {
    if (fmt == XK_W_BF16)
        xk_rows_fmt(XK_W_BF16, I, w, scale, o0, o1, B, x, ldx, y, ldy, bias, accumulate);
    else if (fmt == XK_W_I8)
        xk_rows_fmt(XK_W_I8, I, w, scale, o0, o1, B, x, ldx, y, ldy, bias, accumulate);
    else
        xk_rows_fmt(XK_W_SAME, I, w, scale, o0, o1, B, x, ldx, y, ldy, bias, accumulate);
}
