// golden_input.c: a small annotated file for the weaver's golden test.
//
// It exercises what the weaver promises, so that `tests/test_book.sh` can
// compare its page with `tests/book/golden_expected.html` byte for byte:
// *emphasis*, **strong**, `inline code`, a [link](https://example.org/a?b=1&c=2),
// and text that must be escaped: <script>alert("x")</script> & 'quotes'.
//
// Letters used for shapes: B batch, T tokens,
// C channels.
//   - a list item that wraps onto
//     a second line;
//   - a second item, with a nested list:
//       1. one
//       2. two
//
//   ./run            aligned columns, as in a usage summary
//   ./run inspect    kept as laid out
#include <stdio.h>
#include "01_tensor/tensor.h"

#define GOLDEN_N 4   // a macro @ref can point at

// ----------------------------------------------------------------------------
// Directives

// A link to a function below, @ref(tests/book/golden_input.c:golden_sum), to a
// line, @ref(tests/book/golden_input.c:21), to the file itself,
// @ref(tests/book/golden_input.c), to a macro,
// @ref(tests/book/golden_input.c:GOLDEN_N), and with a label:
// @ref(tests/book/golden_input.c:Pair|the pair type). Inside code spans a
// directive is text: `@ref(nothing:here)`.
//
// A command's output, escaped:
//
// @run(printf 'a < b && c > d\n')
//
// A results file's section, with its date and machine:
//
// @embed(tests/book/golden_results.md#sgemm)
typedef struct {
    float a, b;   // (2,)
} Pair;

/* A block comment in column 0 is prose too.
 * Its leading stars are not part of the text.
 *
 * ```c
 * int x = 0x1f;   // a fenced C block is highlighted
 * ```
 */
float golden_sum(const float *x, int n) {   // x (N,)
    float s = 0.0f;
    // an indented comment stays with its code: @ is just a character here
    for (int i = 0; i < n; i++) s += x[i] * 1e-3f;
    const char *msg = "tab\t\"quoted\" <b>";
    (void)msg;
    return s;   /* trailing */
}

// ---- CUDA -------------------------------------------------------------------

// | kernel | threads |
// | --- | ---: |
// | `golden_scale` | 256 |
__global__ void golden_scale(float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= 2.0f;
}
