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
 *     `const unsigned char *name` (a mask: a contiguous torch.bool tensor), `const uint8_t *name` (raw bytes: a
 *     torch.uint8 tensor, e.g. weights stored as bfloat16 or int8 viewed as bytes), or `int64_t` / `int32_t`
 *     arrays (torch.int64 / torch.int32);
 *   - each array argument is followed by a comment holding its shape, in terms of the int arguments (products and
 *     sums of them and of integer literals), and `or NULL` where the argument is optional.
 *
 * Arrays are contiguous and row-major. A Python tensor with more leading dimensions than declared is accepted when
 * the product of its leading dimensions is the first declared dimension (e.g. (B, NH, DQK) for (BH, DQK)).
 */
#ifndef XLSTMKIT_H
#define XLSTMKIT_H

#include <stdint.h>

/* the interface version; the loader refuses a library that reports another (bump it on any change below) */
#define XLSTMKIT_NATIVE_ABI 6

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
                          T *h /* (BH, DV) */);                                                               \
                                                                                                               \
    /* The decoders (decode.c, docs/inference.md). Weights arrive as bytes in one of three formats, chosen by the \
     * byte width WB of an element: T itself (WB = sizeof(T)), bfloat16 (WB = 2) or int8 with one T scale per   \
     * output row (WB = 1); activations and states are always T. status[0] is 0 after a good call, else a code  \
     * (docs/inference.md) and nothing was written. */                                                          \
                                                                                                               \
    /* y (B, O) = x (B, I) @ W^T (* scale) (+ bias) for W (O, I) row-major: nn.Linear's layout. */             \
    void linear_##SUF(int B, int O, int I, int WB, int nthreads,                                               \
                      const T *x /* (B, I) */,                                                                \
                      const uint8_t *w /* (O*I*WB) */,                                                        \
                      const T *scale /* (O) or NULL */,                                                       \
                      const T *bias /* (O) or NULL */,                                                        \
                      T *y /* (B, O) */,                                                                      \
                      int32_t *status /* (1) */);                                                             \
                                                                                                               \
    /* One token through a whole xLSTMLM (embedding, every block, post norm, head) for B rows. plan and blob are \
     * written by models/native_decode.py (the plan is checked against NW, NS and NSCR before anything runs).   \
     * state1 may be state0 (in place). */                                                                     \
    void lm_decode_##SUF(int B, int NP, int NW, int NS, int V, int NSCR, int nthreads,                        \
                         const int64_t *plan /* (NP) */,                                                      \
                         const uint8_t *blob /* (NW) */,                                                      \
                         const int64_t *tokens /* (B) */,                                                     \
                         const T *state0 /* (NS) */,                                                          \
                         T *state1 /* (NS) */,                                                                \
                         T *logits /* (B, V) */,                                                              \
                         T *scratch /* (NSCR) */,                                                             \
                         int32_t *status /* (2) */);                                                          \
                                                                                                               \
    /* One xLSTMLarge block for one token of B rows: x is read and overwritten with the block's output; the     \
     * state (C1, n1, m1) may be (C0, n0, m0) (in place). gate_cap <= 0: no soft cap. */                        \
    void large_block_##SUF(int B, int E, int NH, int DQK, int DV, int F, int WB, int nthreads,                 \
                           double norm_eps, double eps, double gate_cap,                                       \
                           const T *norm1_w /* (E) */, const T *norm1_b /* (E) or NULL */,                     \
                           const uint8_t *wq /* (NH*DQK*E*WB) */, const T *sq /* (NH*DQK) or NULL */,          \
                           const T *bq /* (NH*DQK) or NULL */,                                                 \
                           const uint8_t *wk /* (NH*DQK*E*WB) */, const T *sk /* (NH*DQK) or NULL */,          \
                           const T *bk /* (NH*DQK) or NULL */,                                                 \
                           const uint8_t *wv /* (NH*DV*E*WB) */, const T *sv /* (NH*DV) or NULL */,            \
                           const T *bv /* (NH*DV) or NULL */,                                                  \
                           const uint8_t *wo /* (NH*DV*E*WB) */, const T *so /* (NH*DV) or NULL */,            \
                           const T *bo /* (NH*DV) or NULL */,                                                  \
                           const T *wif /* (2*NH, E) */, const T *bif /* (2*NH) */,                            \
                           const T *hn_w /* (NH*DV) */, const T *hn_b /* (NH*DV) or NULL */,                   \
                           const uint8_t *wout /* (E*NH*DV*WB) */, const T *sout /* (E) or NULL */,            \
                           const T *bout /* (E) or NULL */,                                                    \
                           const T *norm2_w /* (E) */, const T *norm2_b /* (E) or NULL */,                     \
                           const uint8_t *wg /* (F*E*WB) */, const T *sg /* (F) or NULL */,                    \
                           const T *bg /* (F) or NULL */,                                                      \
                           const uint8_t *wu /* (F*E*WB) */, const T *su /* (F) or NULL */,                    \
                           const T *bu /* (F) or NULL */,                                                      \
                           const uint8_t *wdown /* (E*F*WB) */, const T *sdown /* (E) or NULL */,              \
                           const T *bdown /* (E) or NULL */,                                                   \
                           T *x /* (B, E) */,                                                                 \
                           const T *C0 /* (B*NH, DQK, DV) */, const T *n0 /* (B*NH, DQK) */,                   \
                           const T *m0 /* (B*NH) */,                                                          \
                           T *C1 /* (B*NH, DQK, DV) */, T *n1 /* (B*NH, DQK) */, T *m1 /* (B*NH) */,           \
                           T *scratch /* (B, E + 2*NH*DQK + 3*NH*DV + 2*NH + 2*F) */,                        \
                           int32_t *status /* (1) */);                                                        \
                                                                                                               \
    /* The next token of B rows (generation.sample_next's rule, in choose.h): argmax of the logits when         \
     * temperature == 0 or log_e is NULL, else argmax of logits / temperature - log_e over the tokens whose     \
     * scaled logit is at least the top_k-th largest (top_k 0: all); log_e holds log E, E ~ Exp(1). heap is   \
     * scratch. */                                                                                             \
    void choose_tokens_##SUF(int B, int V, int top_k, double temperature,                                     \
                             const T *logits /* (B, V) */,                                                    \
                             const T *log_e /* (B, V) or NULL */,                                             \
                             T *heap /* (top_k + 1) */,                                                       \
                             int64_t *out /* (B) */);                                                         \
                                                                                                               \
    /* the sum of x with nthreads threads (what benchmarks/ time to measure the machine's read bandwidth) */    \
    void stream_sum_##SUF(int N, int nthreads, const T *x /* (N) */, T *out /* (1) */);

XLSTMKIT_DECLARE(float, f32)
XLSTMKIT_DECLARE(double, f64)

#endif
