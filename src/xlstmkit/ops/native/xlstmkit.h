/* The native interface of xlstmkit, declared once (docs/native.md).
 *
 * This header is the single source of truth for the compiled library: the C files include it, so the compiler
 * checks every definition against it, and the Python loader (native/loader.py) reads it to learn the interface
 * version, the name and argument list of every exported function, and the shape of every array argument, which it
 * validates before each call. Format, kept simple so that it can be read without a C parser:
 *
 *   - each exported function is one `void name_##SUF(...);` entry of XLSTMKIT_DECLARE, which is expanded once per
 *     element type T (float, suffix f32; double, suffix f64);
 *   - scalar arguments are `int NAME` or `double NAME`; arrays are `const T *name` (read) or `T *name` (written),
 *     or `const unsigned char *name` (a mask: a contiguous torch.bool tensor);
 *   - each array argument is followed by a comment holding its shape, in terms of the int arguments (products and
 *     sums of them and of integer literals), and `or NULL` where the argument is optional.
 *
 * Arrays are contiguous and row-major. A Python tensor with more leading dimensions than declared is accepted when
 * the product of its leading dimensions is the first declared dimension (e.g. (B, NH, DQK) for (BH, DQK)).
 */
#ifndef XLSTMKIT_H
#define XLSTMKIT_H

/* the interface version; the loader refuses a library that reports another (bump it on any change below) */
#define XLSTMKIT_NATIVE_ABI 4

int xlstmkit_native_abi(void);

#define XLSTMKIT_DECLARE(T, SUF)                                                                               \
    /* sLSTM, S steps forward (gate order i, f, z, o): fills the states of steps 1..S and raws. cn[t] holds    \
     * (c, n) after step t, m[t] and h[t] the stabiliser and output; index 0 is the initial state. Rows whose   \
     * mask is 0 carry their state unchanged. */                                                                \
    void slstm_forward_##SUF(int S, int NH, int B, int DH, int exp_forget,                                     \
                             const T *gx /* (S, NH, B, 4*DH) */,                                              \
                             const T *R /* (NH, DH, 4*DH) */,                                                 \
                             const unsigned char *mask /* (S, B) or NULL */,                                   \
                             T *cn /* (S+1, 2, NH, B, DH) */,                                                 \
                             T *m /* (S+1, NH, B, DH) */,                                                     \
                             T *h /* (S+1, NH, B, DH) */,                                                     \
                             T *raws /* (S, NH, B, 4*DH) */);                                                 \
                                                                                                               \
    /* sLSTM backward through time: dc, dn, dh_rec are the carries (in: cotangents of the final c, n, h; out:   \
     * those of the initial state); dgx receives the gate gradients. dR is left to the caller. */               \
    void slstm_backward_##SUF(int S, int NH, int B, int DH, int exp_forget,                                    \
                              const T *dH /* (S, NH, B, DH) or NULL */,                                       \
                              const T *Rt /* (NH, 4*DH, DH) */,                                               \
                              const unsigned char *mask /* (S, B) or NULL */,                                  \
                              const T *raws /* (S, NH, B, 4*DH) */,                                           \
                              const T *cn /* (S+1, 2, NH, B, DH) */,                                          \
                              const T *m /* (S+1, NH, B, DH) */,                                              \
                              const T *h /* (S+1, NH, B, DH) */,                                              \
                              T *dc /* (NH, B, DH) */,                                                        \
                              T *dn /* (NH, B, DH) */,                                                        \
                              T *dh_rec /* (NH, B, DH) */,                                                    \
                              T *dgx /* (S, NH, B, 4*DH) */);                                                 \
                                                                                                               \
    /* sLSTM, one step in the layout of the step API (generation's hot path); raw is scratch. */               \
    void slstm_step_##SUF(int NH, int B, int DH, int exp_forget,                                               \
                          const T *gates /* (B, NH, 4, DH) */,                                                \
                          const T *R /* (NH, DH, 4*DH) */,                                                    \
                          const unsigned char *mask /* (B) or NULL */,                                         \
                          const T *c0 /* (B, NH, DH) */,                                                      \
                          const T *n0 /* (B, NH, DH) */,                                                      \
                          const T *m0 /* (B, NH, DH) */,                                                      \
                          const T *h0 /* (B, NH, DH) */,                                                      \
                          T *c1 /* (B, NH, DH) */,                                                            \
                          T *n1 /* (B, NH, DH) */,                                                            \
                          T *m1 /* (B, NH, DH) */,                                                            \
                          T *h1 /* (B, NH, DH) */,                                                            \
                          T *raw /* (B, NH, 4*DH) */);                                                        \
                                                                                                               \
    /* mLSTM, one inference step (BH = batch x heads); keys scaled by DQK^-1/2 inside. */                      \
    void mlstm_step_##SUF(int BH, int DQK, int DV, int exp_forget, double eps,                                 \
                          const T *q /* (BH, DQK) */,                                                         \
                          const T *k /* (BH, DQK) */,                                                         \
                          const T *v /* (BH, DV) */,                                                          \
                          const T *i /* (BH) */,                                                              \
                          const T *f /* (BH) */,                                                              \
                          const T *C0 /* (BH, DQK, DV) */,                                                    \
                          const T *n0 /* (BH, DQK) */,                                                        \
                          const T *m0 /* (BH) */,                                                             \
                          T *C1 /* (BH, DQK, DV) */,                                                          \
                          T *n1 /* (BH, DQK) */,                                                              \
                          T *m1 /* (BH) */,                                                                   \
                          T *h /* (BH, DV) */);

XLSTMKIT_DECLARE(float, f32)
XLSTMKIT_DECLARE(double, f64)

#endif
