/* Matrix-vector products for decoding (template: include with T and SUF defined; see common.h), with weights in
 * one of three formats and activations in T (docs/inference.md, "Weights").
 *
 *     y[b, o] = (accumulate ? y[b, o] : 0) + (scale[o] * sum_i W[o, i] x[b, i] + bias[o])
 *
 * W is row-major (O, I), nn.Linear's layout, so a model's weights are used where they are (memory-mapped
 * checkpoints included), never copied. A decoding step reads every weight once per token: at batch 1 the product
 * is bound by how fast the weights stream from cache or memory, so narrower weights (bfloat16: half the bytes,
 * int8: a quarter) are faster, while every sum is accumulated in T.
 *
 * Formats: XK_W_SAME (T), XK_W_BF16 (the top 16 bits of a float32: widening is exact), XK_W_I8 (signed int8 with one
 * T scale per output row). Each output is the dot product of a weight row with x, summed in 16 lanes (AVX-512,
 * float) or in the lanes the compiler picks (`omp simd` reduction; the only reassociation the library allows).
 *
 * Rows are split over `nthreads` OpenMP threads (when built with OpenMP) in tiles of 4.
 */

/* one weight as T */
static inline T FN(wload)(int fmt, const void *w, size_t idx) {
    if (fmt == XK_W_BF16) return (T)xk_bf16_to_float(((const uint16_t *)w)[idx]);
    if (fmt == XK_W_I8) return (T)((const int8_t *)w)[idx];
    return ((const T *)w)[idx];
}

/* the portable rows [o0, o1): one dot product per (row, batch row) */
static void FN(matvec_rows_generic)(int fmt, int I, const void *w, const T *scale, int o0, int o1, int B,
                                    const T *x, size_t ldx, T *y, size_t ldy, const T *bias, int accumulate) {
    for (int o = o0; o < o1; ++o) {
        const size_t r = (size_t)o * I;
        for (int b = 0; b < B; ++b) {
            const T *restrict xb = x + (size_t)b * ldx;
            T acc = 0;
            if (fmt == XK_W_BF16) {
                const uint16_t *restrict wr = (const uint16_t *)w + r;
#pragma omp simd reduction(+ : acc)
                for (int i = 0; i < I; ++i) acc += (T)xk_bf16_to_float(wr[i]) * xb[i];
            } else if (fmt == XK_W_I8) {
                const int8_t *restrict wr = (const int8_t *)w + r;
#pragma omp simd reduction(+ : acc)
                for (int i = 0; i < I; ++i) acc += (T)wr[i] * xb[i];
            } else {
                const T *restrict wr = (const T *)w + r;
#pragma omp simd reduction(+ : acc)
                for (int i = 0; i < I; ++i) acc += wr[i] * xb[i];
            }
            if (scale) acc *= scale[o];
            if (bias) acc += bias[o];
            T *yo = y + (size_t)b * ldy + o;
            *yo = accumulate ? *yo + acc : acc;
        }
    }
}

/* rows [o0, o1) of the product: the AVX-512 kernel for float where the build has it, else the portable one */
static void FN(matvec_rows)(int fmt, int I, const void *w, const T *scale, int o0, int o1, int B, const T *x,
                            size_t ldx, T *y, size_t ldy, const T *bias, int accumulate) {
#if XK_HAVE_AVX512 && XK_T_IS_FLOAT
    xk_matvec_rows_avx512(fmt, I, w, scale, o0, o1, B, x, ldx, y, ldy, bias, accumulate);
    return;
#endif
    FN(matvec_rows_generic)(fmt, I, w, scale, o0, o1, B, x, ldx, y, ldy, bias, accumulate);
}

/* the whole product, rows split over nthreads threads in tiles of 4 (one thread for small products, where
 * starting threads costs more than it saves) */
static void FN(matvec)(int fmt, int O, int I, const void *w, const T *scale, int B, const T *x, size_t ldx, T *y,
                       size_t ldy, const T *bias, int accumulate, int nthreads) {
    const double work = (double)O * I * B;
    int nt = nthreads;
    if (work < XK_PARALLEL_MIN_WORK || O < 8) nt = 1;
    if (nt <= 1) {
        FN(matvec_rows)(fmt, I, w, scale, 0, O, B, x, ldx, y, ldy, bias, accumulate);
        return;
    }
    const int tiles = (O + 3) / 4;
#pragma omp parallel num_threads(nt)
    {
        int id = 0, n = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        n = omp_get_num_threads();
#endif
        const int t0 = (int)((long long)tiles * id / n), t1 = (int)((long long)tiles * (id + 1) / n);
        const int o0 = 4 * t0, o1 = 4 * t1 < O ? 4 * t1 : O;
        if (o0 < o1) FN(matvec_rows)(fmt, I, w, scale, o0, o1, B, x, ldx, y, ldy, bias, accumulate);
    }
}
