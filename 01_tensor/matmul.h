// matmul.h: the one op that does almost all the arithmetic of a transformer.
//
// More than 95% of the floating-point work of both the ViT and Qwen is matrix
// multiplication: every Linear layer is one, and so are attention's QK^T and
// PV. So the project's first op is the matmul, forward and backward.
//
// The building block is a general SGEMM on row-major matrices:
//
//     C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C
//
// where op(X) is X or X^T. A Linear layer in PyTorch stores its weight as
// (out_features, in_features) = (N, K), so its forward is
//
//     out (M,N) = inp (M,K) @ weight^T (K,N) + bias (N)          [matmul_forward]
//
// and, differentiating that line by line (see matmul_backward),
//
//     dinp    (M,K) += dout (M,N) @ weight (N,K)
//     dweight (N,K) += dout^T (N,M) @ inp (M,K)
//     dbias   (N)   += sum over rows of dout
//
// Gradients *accumulate* (+=): the caller zeroes them once per optimizer step,
// which makes gradient accumulation over micro-batches free.
//
// Each function exists twice: a plain C version (`_cpu`, fp32, the oracle) and
// a CUDA version (`_cuda`, in matmul_cuda.cu). The Tensor-level entry points at
// the bottom look at the tensors' device and dispatch; model code calls only those.
#ifndef NM_MATMUL_H
#define NM_MATMUL_H

#include <stdbool.h>

#include "01_tensor/tensor.h"

// ---- CPU kernels (fp32, row-major, OpenMP) --------------------------------
// C = alpha * op(A) @ op(B) + beta * C. lda/ldb/ldc are row strides in elements.
// With transA, A is stored (K,M); with transB, B is stored (N,K).
void sgemm_cpu(bool transA, bool transB, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc);

// out (M,N) = inp (M,K) @ weight (N,K)^T + bias (N); bias may be NULL.
void matmul_forward_cpu(float *out, const float *inp, const float *weight,
                        const float *bias, int M, int K, int N);
// Accumulating backward; any of dinp/dweight/dbias may be NULL (not needed).
void matmul_backward_cpu(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int K, int N);

// ---- CUDA kernels (matmul_cuda.cu; bf16 or f32 storage, fp32 accumulation) --
// Pointers are device pointers; dt is DT_BF16 or DT_F32 for all operands.
void matmul_forward_cuda(void *out, const void *inp, const void *weight,
                         const void *bias, int M, int K, int N, DType dt);
void matmul_backward_cuda(void *dinp, void *dweight, void *dbias, const void *dout,
                          const void *inp, const void *weight, int M, int K, int N, DType dt);
// True when this binary was built with CUDA and a device is present.
bool cuda_available(void);

// ---- Tensor-level ops: check shapes, pick the device --------------------------
// inp (..., K), weight (N, K), bias (N) or an empty Tensor {0}, out (..., N).
// This is every Linear layer of the models. On the CPU, a call with at most
// four rows (token-by-token decoding) is a set of dot products split over the
// outputs instead of the blocked GEMM, which parallelises over rows and would
// leave all but one core idle; the GEMM for more rows.
void matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias);
// dinp like inp, dweight like weight, dbias like bias; pass a Tensor with
// data == NULL to skip one.
void matmul_backward(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout,
                     Tensor inp, Tensor weight);

#endif
