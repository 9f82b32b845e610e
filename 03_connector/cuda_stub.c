// cuda_stub.c: chapter 03's CUDA entry points in a build without CUDA.
//
// A build without nvcc (or an ASan build) links this file instead of
// ops_cuda.cu, so that code calling a `_cuda` op still links and, if it is
// ever reached, stops with a sentence instead of a crash.
#include "01_tensor/common.h"
#include "03_connector/ops.h"

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

void gelu_forward_cuda(void *out, const void *inp, size_t N, GeluKind kind, DType dt) { NO_CUDA(); }
void gelu_backward_cuda(void *dinp, const void *dout, const void *inp, size_t N, GeluKind kind, DType dt) { NO_CUDA(); }
void swiglu_forward_cuda(void *out, const void *gate, const void *up, size_t N, DType dt) { NO_CUDA(); }
void swiglu_backward_cuda(void *dgate, void *dup, const void *dout, const void *gate, const void *up, size_t N,
                          DType dt) { NO_CUDA(); }
void softmax_forward_cuda(float *probs, const void *logits, int R, int C, DType dt) { NO_CUDA(); }
void softmax_backward_cuda(void *dlogits, const void *dprobs, const float *probs, int R, int C, DType dt) { NO_CUDA(); }
void pool_windows_forward_cuda(void *win, void *qin, const void *feat, int B, int GH, int GW, int C, DType dt) {
    NO_CUDA();
}
void pool_windows_backward_cuda(void *dfeat, const void *dwin, const void *dqin, int B, int GH, int GW, int C,
                                DType dt) { NO_CUDA(); }
void pool_attention_forward_cuda(void *out, float *probs, const void *q, const void *k, const void *v, int M,
                                 int NH, int HD, DType dt) { NO_CUDA(); }
void pool_attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, const float *probs,
                                  const void *q, const void *k, const void *v, int M, int NH, int HD, DType dt) {
    NO_CUDA();
}
void *ops_cuda_malloc(size_t bytes) { NO_CUDA(); }
void ops_cuda_free(void *p) { NO_CUDA(); }
void ops_cuda_upload(void *dst, const float *src, size_t n, DType dt) { NO_CUDA(); }
void ops_cuda_download(float *dst, const void *src, size_t n, DType dt) { NO_CUDA(); }
