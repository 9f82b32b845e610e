// qwen_cuda.h: the Qwen forward on a GPU (bf16 storage, fp32 accumulation).
//
// The same model as qwen.c, with the parameters and activations on the device:
// weights converted once to bf16 at upload, every Linear layer a cuBLAS GEMM
// (chapter 01's matmul_forward_cuda), and hand-written kernels for the rest:
// a fused RMSNorm (with Qwen3's per-head q/k norms), RoPE that writes k
// straight into the KV cache, causal GQA attention against the cache, SwiGLU
// and the residual adds. Norm statistics, softmax and every accumulation are
// fp32. It serves inference (prefill and token-by-token decode); the training
// chapter adds the backward.
//
// Every function here also exists in cuda_stub.c, which a build without nvcc
// (or the ASan build) links instead, so the C code can call these
// unconditionally and get a clear message when there is no GPU.
//
// Shape letters: T tokens of a call, Tcap cache positions, V vocabulary.
#ifndef NM_QWEN_CUDA_H
#define NM_QWEN_CUDA_H

#include <stdbool.h>

#include "04_qwen/qwen.h"

typedef struct QwenCuda QwenCuda;

// Uploads the model (as bf16) and allocates activations for calls of up to
// Tmax tokens and a KV cache of Tcap positions (batch 1).
QwenCuda *qwen_cuda_create(const Qwen *m, int Tmax, int Tcap);
void qwen_cuda_free(QwenCuda *g);
// Forgets the KV cache.
void qwen_cuda_reset(QwenCuda *g);
// Runs tokens (T) at the next T positions and returns host logits: (T, V) for
// every position with all_logits, else (V) for the last one. The pointer stays
// valid until the next call.
const float *qwen_cuda_forward(QwenCuda *g, const int *tokens, int T, bool all_logits);

#endif
