/* What every native source shares: the math functions by element type, the template naming, and (where the build
 * found glibc's vector math library) the declaration that lets the compiler call its vectorised exp, log1p, tanh and
 * erf.
 *
 * The templates (gates.h, slstm_cell.h, slstm_loops.h, mlstm_step.h) are included once per element type, with T
 * (float or double) and SUF (f32 or f64) defined; FN(name) names a function of that instantiation (name_f32,
 * name_f64), and EXP/LOG1P/TANH pick the function of T's precision.
 *
 * IEEE arithmetic (docs/native.md): the library is compiled without -ffast-math. Its finite-math and reciprocal
 * parts change results (1 / (1 + inf) became NaN, and isnan/isinf tests are removed), so only the flags that change
 * no value are used (-fno-math-errno, -fno-trapping-math). -ffast-math used to be what let GCC call glibc's vector
 * functions (math.h declares them only under __FAST_MATH__); with XLSTMKIT_LIBMVEC the same declaration is made here,
 * so the loops stay vectorised. glibc's vector functions return IEEE results at infinities and NaN (as the scalar
 * ones), within a few ulp elsewhere.
 */
#ifndef XLSTMKIT_COMMON_H
#define XLSTMKIT_COMMON_H

#include <float.h>
#include <math.h>
#include <stddef.h>

#if defined(XLSTMKIT_LIBMVEC) && defined(__GNUC__) && !defined(__clang__)
#define XK_VECTOR_MATH __attribute__((__simd__("notinbranch")))
XK_VECTOR_MATH float expf(float);
XK_VECTOR_MATH double exp(double);
XK_VECTOR_MATH float log1pf(float);
XK_VECTOR_MATH double log1p(double);
XK_VECTOR_MATH float tanhf(float);
XK_VECTOR_MATH double tanh(double);
XK_VECTOR_MATH float erff(float);
XK_VECTOR_MATH double erf(double);
#endif

#define EXP(x) _Generic((x), float: expf, double: exp)(x)
#define LOG1P(x) _Generic((x), float: log1pf, double: log1p)(x)
#define TANH(x) _Generic((x), float: tanhf, double: tanh)(x)
#define ABS(x) _Generic((x), float: fabsf, double: fabs)(x)
#define ERF(x) _Generic((x), float: erff, double: erf)(x)
/* the largest finite number of T (T as defined where the macro is used) */
#define T_MAX _Generic((T)0, float: FLT_MAX, double: DBL_MAX)

#if defined(__GNUC__)
#define XK_NOINLINE __attribute__((noinline))
#else
#define XK_NOINLINE
#endif

/* weight formats of the decoders (matvec.h), by the byte width of an element */
#define XK_W_SAME 0 /* the activations' type T */
#define XK_W_BF16 1 /* bfloat16: the top half of a float32 */
#define XK_W_I8 2   /* int8, with one scale per output row */

#include <stdint.h>
#include <string.h>

/* a bfloat16 (its 16 bits) widened to float: exact */
static inline float xk_bf16_to_float(uint16_t u) {
    const uint32_t bits = (uint32_t)u << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#define XK_PASTE(name, suffix) name##_##suffix
#define XK_NAME(name, suffix) XK_PASTE(name, suffix)
#define FN(name) XK_NAME(name, SUF)

#endif
