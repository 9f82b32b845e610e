// cuda_stub.c: chapter 05's CUDA twins (train_cuda.h) in a build without CUDA.
//
// A build without nvcc (or an ASan build) links this file instead of
// train_cuda.cu, so the code that calls a `_cuda` op still links and, if it
// is ever reached, stops with a sentence instead of a crash. (A model reaches
// the GPU only after cuda_available() said yes, which it never does here.)
#include "01_tensor/common.h"
#include "05_training/train_cuda.h"

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

void rmsnorm_backward_cuda(void *dx, DType dxdt, float *dw, const void *dout, DType odt, const void *x, DType xdt,
                           const void *w, DType wdt, const float *rstd, int N, int C) { NO_CUDA(); }
void linear_backward_cuda(void *dinp, bool add, float *dweight, float *dbias, const void *dout, const void *inp,
                          const void *weight, int M, int K, int N, DType dt) { NO_CUDA(); }
void rope_backward_cuda(void *dx, DType dxdt, const void *dout, DType odt, const float *cos_t, const float *sin_t,
                        int B, int T, int H, int HD) { NO_CUDA(); }
void embedding_backward_cuda(void *dE, DType edt, const void *dh, DType hdt, const int32_t *ids, int N, int C,
                             int V) { NO_CUDA(); }
void attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, DType gdt, const void *q, const void *k,
                             const void *v, DType adt, const int32_t *seg, const int32_t *reach, int B, int T, int NH,
                             int NKV, int HD, float scale) { NO_CUDA(); }
LossStats fused_ce_forward_backward_cuda(const void *x, DType xdt, const void *W, const int32_t *targets,
                                         const float *weights, int N, int C, int V, int chunk, float scale,
                                         float z_coef, void *dx, DType dxdt, void *dW, DType dwdt) { NO_CUDA(); }
void adamw_update_cuda(float *p, void *p_compute, DType cdt, const void *grad, DType gdt, float *m, float *v,
                       size_t n, float decay, float beta1, float beta2, float eps, float step_size, float bc2_sqrt) {
    NO_CUDA();
}
double grad_sumsq_cuda(const void *grad, DType gdt, size_t n) { NO_CUDA(); }
void grad_scale_cuda(void *grad, DType gdt, size_t n, float f) { NO_CUDA(); }
