// cuda_stub.c: the CUDA entry points of a build without nvcc (or an ASan build).
//
// Model code calls matmul_forward() and friends without asking how the binary
// was built; when a CUDA op is reached in a binary that has none, this file
// makes the failure a clear sentence rather than a link error.
#include "01_tensor/matmul.h"

bool cuda_available(void) { return false; }

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

void matmul_forward_cuda(void *out, const void *inp, const void *weight, const void *bias,
                         int M, int K, int N, DType dt) {
    NO_CUDA();
}

void matmul_backward_cuda(void *dinp, void *dweight, void *dbias, const void *dout, const void *inp,
                          const void *weight, int M, int K, int N, DType dt) {
    NO_CUDA();
}
