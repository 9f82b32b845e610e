// ops.h: the connector's small ops, each a forward/backward pair.
//
// This is the chapter where the project starts to *learn*, so it is the
// chapter that teaches backpropagation. The idea fits in one line: if a
// forward line computes y = f(x), its backward line receives dL/dy (written
// `dy`, "the gradient of the loss with respect to y") and adds
// dL/dx = dy * f'(x) into `dx`. A model is a list of such lines; running the
// list backwards, each line undoing one forward line, is backpropagation.
//
// Every op below therefore comes as a pair, side by side:
//     xxx_forward (outputs from inputs)
//     xxx_backward(input grads += f(output grads, what forward kept))
// and every backward *accumulates* (+=) into the gradients it writes. That is
// not a detail: a tensor read by two forward lines (the pooling windows feed
// both the keys and the values) receives one contribution from each of their
// backward lines, and "+=" makes the sum happen by itself. It also makes
// gradient accumulation over micro-batches free. The caller zeroes gradients.
//
// The Linear layer is not here: it is chapter 01's matmul_forward_cpu /
// matmul_backward_cpu (out = inp @ W^T + b). What is here:
//   gelu      both of PyTorch's forms: the exact one with erf (nn.GELU(),
//             LLaVA's projector) and the tanh approximation (approximate='tanh')
//   swiglu    silu(gate) * up, the gated unit of Molmo's projector and Qwen's MLP
//   softmax   row-wise, max-subtracted
//   pool      Molmo's 2x2 attention pooling, in two pieces: gathering the
//             windows (and their mean, the query), and the 4-key attention
//
// What this file does not do: the CUDA versions (ops_cuda.cu, checked against
// these by tests/verify_gpu_ch03.c), or anything with parameters of its own.
//
// Letters: N elements or rows, C channels, B batch, GH x GW the patch grid,
// P pooled windows per image (ceil(GH/2) * ceil(GW/2)), M = B*P windows in all,
// NH heads, HD head dim, A = NH*HD the attention width.
#ifndef NM_OPS_H
#define NM_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "01_tensor/dtype.h"
#include "01_tensor/tensor.h"

typedef enum {
    GELU_ERF = 0,   // 0.5 x (1 + erf(x / sqrt 2)): torch gelu(approximate='none'), nn.GELU()
    GELU_TANH = 1,  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): approximate='tanh'
} GeluKind;

const char *gelu_name(GeluKind k);

// ---- GELU -------------------------------------------------------------------
// out (N) = gelu(inp (N))
void gelu_forward_cpu(float *out, const float *inp, size_t N, GeluKind kind);
// dinp (N) += dout (N) * gelu'(inp)
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t N, GeluKind kind);

// ---- SwiGLU -----------------------------------------------------------------
// out (N) = silu(gate (N)) * up (N), silu(g) = g * sigmoid(g)
void swiglu_forward_cpu(float *out, const float *gate, const float *up, size_t N);
// dgate (N) += dout * up * silu'(gate);  dup (N) += dout * silu(gate)
void swiglu_backward_cpu(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t N);
// The op a model calls on Tensors of either device (Qwen's MLP, 04_qwen/qwen.c):
// out, gate, up of one size, dtype and device; it runs swiglu_forward_cpu or
// swiglu_forward_cuda.
void swiglu_forward(Tensor out, Tensor gate, Tensor up);
// Its backward on Tensors of either device: swiglu_backward_cpu or
// swiglu_backward_cuda, adding into dgate and dup (either may be empty).
void swiglu_backward(Tensor dgate, Tensor dup, Tensor dout, Tensor gate, Tensor up);

// ---- softmax ----------------------------------------------------------------
// probs (R, C) = softmax over each row of logits (R, C). probs may equal logits.
void softmax_forward(float *probs, const float *logits, int R, int C);
// dlogits (R, C) += p * (dprobs - sum_j p_j dprobs_j), row by row
void softmax_backward(float *dlogits, const float *dprobs, const float *probs, int R, int C);

// ---- Molmo 2x2 pooling: the windows -----------------------------------------
// Number of 2x2 windows along a grid side of n patches (an odd side is padded
// by one zero row/column, as Molmo does).
static inline int pool_side(int n) { return (n + 1) / 2; }

// feat (B, GH*GW, C) -> win (B*P, 4, C): window (py, px) of image b holds the
// patches (2py+dy, 2px+dx) for dy, dx in {0,1}, in the order dy*2+dx; a patch
// outside an odd grid is a vector of zeros. qin (B*P, C) = mean of the 4
// (zeros included, divided by 4: that is what Molmo computes).
void pool_windows_forward(float *win, float *qin, const float *feat, int B, int GH, int GW, int C);
// dfeat (B, GH*GW, C) += dwin scattered back + dqin / 4 to each real patch
void pool_windows_backward(float *dfeat, const float *dwin, const float *dqin, int B, int GH, int GW, int C);

// ---- Molmo 2x2 pooling: one query against its window's 4 keys ----------------
// q (M, A), k and v (M, 4, A), A = NH*HD. For window m and head h:
//     s_j = q_h . k_jh / sqrt(HD),  p = softmax(s),  out_h = sum_j p_j v_jh
// probs (M, NH, 4) is kept for the backward. (This is 01_tensor's attention
// with Tq = 1 and Tk = 4; having it here keeps the pair side by side.)
void pool_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                            int M, int NH, int HD);
// dq (M, A), dk, dv (M, 4, A) += the gradients; any may be NULL.
void pool_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                             const float *q, const float *k, const float *v, int M, int NH, int HD);

// ---- CUDA twins (ops_cuda.cu; cuda_stub.c without nvcc) -----------------------
// Device pointers; storage dtype dt is DT_BF16 or DT_F32 for every operand,
// arithmetic in fp32. Same semantics (and the same +=) as the C versions.
void gelu_forward_cuda(void *out, const void *inp, size_t N, GeluKind kind, DType dt);
void gelu_backward_cuda(void *dinp, const void *dout, const void *inp, size_t N, GeluKind kind, DType dt);
void swiglu_forward_cuda(void *out, const void *gate, const void *up, size_t N, DType dt);
void swiglu_backward_cuda(void *dgate, void *dup, const void *dout, const void *gate, const void *up, size_t N,
                          DType dt);
// probs stay fp32 on the GPU too (the DESIGN's precision rule for softmax).
void softmax_forward_cuda(float *probs, const void *logits, int R, int C, DType dt);
void softmax_backward_cuda(void *dlogits, const void *dprobs, const float *probs, int R, int C, DType dt);
void pool_windows_forward_cuda(void *win, void *qin, const void *feat, int B, int GH, int GW, int C, DType dt);
void pool_windows_backward_cuda(void *dfeat, const void *dwin, const void *dqin, int B, int GH, int GW, int C,
                                DType dt);
void pool_attention_forward_cuda(void *out, float *probs, const void *q, const void *k, const void *v, int M,
                                 int NH, int HD, DType dt);
void pool_attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, const float *probs,
                                  const void *q, const void *k, const void *v, int M, int NH, int HD, DType dt);
// Small helpers for the GPU checks: device buffers and fp32 <-> dt transfers.
void *ops_cuda_malloc(size_t bytes);
void ops_cuda_free(void *p);
void ops_cuda_upload(void *dst, const float *src, size_t n, DType dt);     // host f32 -> device dt
void ops_cuda_download(float *dst, const void *src, size_t n, DType dt);   // device dt -> host f32

#endif
