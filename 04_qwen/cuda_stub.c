// cuda_stub.c: chapter 04's CUDA twins for a build without nvcc (or the ASan build).
//
// The Tensor-level ops of ops.c call the twin of the tensors' device without
// asking how the binary was built; here each twin stops with a sentence
// saying why, instead of a link error or a crash. (A tensor reaches the GPU
// only through qwen_to_device, which asks cuda_available() first.)
#include "04_qwen/ops.h"

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

void rmsnorm_forward_cuda(void *out, float *rstd, const void *x, DType xdt, const void *w, int N, int C, float eps,
                          DType dt) {
    NO_CUDA();
}
void rope_forward_cuda(void *x, const float *cos_t, const float *sin_t, int B, int T, int H, int HD, DType dt) {
    NO_CUDA();
}
void embedding_forward_cuda(float *h, const void *E, DType dt, const int32_t *ids, int N, int C) { NO_CUDA(); }
