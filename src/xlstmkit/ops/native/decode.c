/* The decoders (docs/inference.md): one token through a whole xLSTMLM in one call (lm_decode.h), one xLSTMLarge
 * block per call (large_decode.h), and the matrix-vector products they share (matvec.h, with an AVX-512 kernel for
 * float where the CPU has it). Declared in xlstmkit.h; instantiated for float and double like the other sources.
 *
 * Threads: the large products are split over rows with OpenMP when the library was built with it; the thread count
 * is an argument (the caller passes torch.get_num_threads()), and the OpenMP runtime is the one torch loaded, so the
 * two never run separate pools. */
#include "xlstmkit.h"
#include "common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* below this many multiply-adds a product runs on one thread (starting a parallel region costs a few
 * microseconds; measured in docs/inference.md) */
#define XK_PARALLEL_MIN_WORK (1 << 19)

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define XK_HAVE_AVX512 1
#include "matvec_avx512.h"
#else
#define XK_HAVE_AVX512 0
#endif

#define T float
#define SUF f32
#define XK_T_IS_FLOAT 1
#include "gates.h"
#include "slstm_cell.h"
#include "matvec.h"
#include "decode_cells.h"
#include "lm_decode.h"
#include "large_decode.h"
#include "choose.h"
#undef T
#undef SUF
#undef XK_T_IS_FLOAT

#define T double
#define SUF f64
#define XK_T_IS_FLOAT 0
#include "gates.h"
#include "slstm_cell.h"
#include "matvec.h"
#include "decode_cells.h"
#include "lm_decode.h"
#include "large_decode.h"
#include "choose.h"
#undef T
#undef SUF
#undef XK_T_IS_FLOAT
