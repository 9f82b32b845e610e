// train_cuda.h: the CUDA twins of the training chapter's ops (train_cuda.cu;
// cuda_stub.c in a build without nvcc).
//
// Every pointer is device memory except where a comment says host. Storage
// is F32 or BF16, given per operand (a gradient flowing into the f32 residual
// stream, a bf16 head's gradient, fp32 master weights); the arithmetic is
// fp32, the long sums double, the order of every sum fixed (no float atomics),
// so two runs give the same bits. Each function does what its C oracle does
// (the comment names it), adding into its outputs as the oracle does.
//
// Letters: N rows, C width, B batch, T tokens, NH query heads, NKV kv heads,
// HD head dim, V vocabulary.
#ifndef NM_TRAIN_CUDA_H
#define NM_TRAIN_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "01_tensor/dtype.h"
#include "05_training/loss.h"

// rmsnorm_backward_cpu: dx (N, C) += ..., dw (C) f32 += ... (either may be NULL);
// dout (N, C), x (N, C), w (C), rstd (N) f32.
void rmsnorm_backward_cuda(void *dx, DType dxdt, float *dw, const void *dout, DType odt, const void *x, DType xdt,
                           const void *w, DType wdt, const float *rstd, int N, int C);

// The backward of a Linear layer out (M, N) = inp (M, K) @ weight (N, K)^T + b
// with fp32 weight gradients: dinp (M, K) in dt, added into when add, else
// written; dweight (N, K) and dbias (N) f32, added into (any may be NULL).
// dout, inp, weight in dt.
void linear_backward_cuda(void *dinp, bool add, float *dweight, float *dbias, const void *dout, const void *inp,
                          const void *weight, int M, int K, int N, DType dt);

// rope_backward_cpu: dx (B, T, H, HD) += R(-angle) dout; tables (T, HD/2) f32.
void rope_backward_cuda(void *dx, DType dxdt, const void *dout, DType odt, const float *cos_t, const float *sin_t,
                        int B, int T, int H, int HD);

// embedding_backward_cpu: dE (V, C) += dh (N, C) rows at ids (host, N;
// negative ids skipped), each row of dE summed in position order.
void embedding_backward_cuda(void *dE, DType edt, const void *dh, DType hdt, const int32_t *ids, int N, int C, int V);

// attention_backward_cpu, recomputing the probabilities: causal, Tq = Tk = T,
// seg and reach (B, T) int32 device arrays or NULL. q (B, T, NH, HD), k, v
// (B, T, NKV, HD) in adt; dout, dq (B, T, NH, HD), dk, dv (B, T, NKV, HD) in gdt.
void attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, DType gdt, const void *q, const void *k,
                             const void *v, DType adt, const int32_t *seg, const int32_t *reach, int B, int T, int NH,
                             int NKV, int HD, float scale);

// fused_ce_forward_backward (loss.h): x (N, C) and W (V, C) in xdt; targets
// and weights are host arrays (the rows are planned on the host); dx (N, C)
// in dxdt and dW (V, C) in dwdt are added into (either may be NULL).
LossStats fused_ce_forward_backward_cuda(const void *x, DType xdt, const void *W, const int32_t *targets,
                                         const float *weights, int N, int C, int V, int chunk, float scale,
                                         float z_coef, void *dx, DType dxdt, void *dW, DType dwdt);

// adamw_step's inner loop over one tensor of n numbers: p, m, v f32 (the
// master weights and moments), grad in gdt, and p_compute (n) in cdt, the
// copy the forward computes with (NULL for none), rewritten from p.
void adamw_update_cuda(float *p, void *p_compute, DType cdt, const void *grad, DType gdt, float *m, float *v,
                       size_t n, float decay, float beta1, float beta2, float eps, float step_size, float bc2_sqrt);

// sum of grad[i]^2 over n numbers, in double, in a fixed order (adamw_grad_norm's part).
double grad_sumsq_cuda(const void *grad, DType gdt, size_t n);
// grad (n) *= f (adamw_clip's part).
void grad_scale_cuda(void *grad, DType gdt, size_t n, float f);

#endif
