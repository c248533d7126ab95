/* The mLSTM's one-token inference step in C (docs/native.md), for token-by-token generation; declared in
 * xlstmkit.h, one template (mlstm_step.h) instantiated for float and double. */
#include "xlstmkit.h"
#include "common.h"

#define T float
#define SUF f32
#include "gates.h"
#include "mlstm_step.h"
#undef T
#undef SUF

#define T double
#define SUF f64
#include "gates.h"
#include "mlstm_step.h"
#undef T
#undef SUF
