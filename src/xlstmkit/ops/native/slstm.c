/* The sLSTM recurrence as plain C loops: the part of the cell that cannot be batched over time (docs/native.md).
 *
 * xlstmkit compiles this file on first use with the system C compiler (native/loader.py) and calls it through
 * ctypes; nothing here is needed at install time, and without a compiler the same math runs as PyTorch ops
 * (ops/slstm). The functions are declared, with their array shapes, in xlstmkit.h; the float and double versions
 * are the same template (slstm_cell.h, slstm_loops.h) instantiated twice.
 */
#include "xlstmkit.h"
#include "common.h"

#define T float
#define SUF f32
#include "gates.h"
#include "slstm_cell.h"
#include "slstm_loops.h"
#undef T
#undef SUF

#define T double
#define SUF f64
#include "gates.h"
#include "slstm_cell.h"
#include "slstm_loops.h"
#undef T
#undef SUF

int xlstmkit_native_abi(void) { return XLSTMKIT_NATIVE_ABI; }
