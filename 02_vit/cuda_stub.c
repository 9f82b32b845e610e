// cuda_stub.c: chapter 02's CUDA twins in a build without nvcc (or an ASan build).
//
// The Tensor-level ops of ops.c call the twin of the tensors' device; a tensor
// reaches the GPU only through vit_to_device, which asks cuda_available()
// first. In a binary without CUDA a call that gets here anyway ends with a
// sentence instead of a link error.
#include "02_vit/ops.h"

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

void layernorm_forward_cuda(void *out, DType dt, const void *x, DType xdt, const void *w, const void *b, DType wdt,
                            long N, int C, float eps) {
    NO_CUDA();
}
void act_forward_cuda(void *x, size_t n, VitAct act, DType dt) { NO_CUDA(); }
void residual_forward_cuda(float *out, const float *a, const void *b, DType bdt, size_t n) { NO_CUDA(); }
void im2col_forward_cuda(void *patches, DType dt, const float *pix, int B, int S, int P) { NO_CUDA(); }
void tokens_forward_cuda(float *x, const void *emb, const void *cls, const void *pos, DType dt, int B, int T,
                         int C) {
    NO_CUDA();
}
