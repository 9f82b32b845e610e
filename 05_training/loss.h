// loss.h: cross-entropy fused with the LM head, chunked over tokens.
//
// The last step of the model is  logits = x W^T  with W the (V, C) LM head
// (for Qwen, tied: the embedding matrix) and V = 151,936. For a batch of 16
// sequences of 4096 tokens that matrix would be 16*4096*151936 floats = 40 GB,
// the largest tensor of the whole training step by far, and we only ever need
// from it one number per position (the loss) and its gradient. So we never
// build it: we take the positions that are supervised (labels != ignore; the
// others contribute nothing), a chunk of `chunk` of them at a time, and for
// each chunk
//
//     logits  (n, V) = xs (n, C) @ W^T              one GEMM
//     lse     (n)    = log sum_v exp(logits)        max-subtracted, in double
//     loss          += lse - logits[target]         cross-entropy of each row
//     dlogits (n, V) = scale * (softmax - onehot)   overwrites logits in place
//     dxs     (n, C) = dlogits @ W                  into dx at those rows
//     dW      (V, C) += dlogits^T @ xs
//
// and the (chunk, V) buffer is reused by the next chunk. The forward and the
// backward of the loss happen in the same pass: the softmax we just computed
// *is* the gradient, so keeping it for a later backward would only cost memory.
//
// Optional z-loss (PaLM): z_coef * lse^2 per row pushes the log-partition
// towards 0 (keeps logits from drifting in bf16); its gradient is
// 2 z_coef lse * softmax.
//
// Letters: N rows (positions), C width, V vocabulary, n rows of one chunk.
#ifndef NM_LOSS_H
#define NM_LOSS_H

#include <stddef.h>
#include <stdint.h>

#define LOSS_IGNORE (-100)   // PyTorch's ignore_index; also what our labels hold

typedef struct {
    double ce_sum;   // sum over supervised rows of w * -log p(target)
    double z_sum;    // sum over supervised rows of w * lse^2 (always computed, logged)
    double w_sum;    // sum over supervised rows of w (= n without weights)
    int n;           // supervised rows
} LossStats;

// x (N, C) final hidden states, W (V, C), targets (N): the id each row must
// predict, or LOSS_IGNORE; weights (N): each row's weight w, or NULL for 1.
// Gradients of  scale * sum_rows w (ce + z_coef lse^2)  are ADDED to dx (N, C)
// (may be NULL) and dW (V, C) (may be NULL).
// ws: a (chunk, V + C) float workspace (loss_workspace_floats); chunk >= 1.
LossStats fused_ce_forward_backward(const float *x, const float *W, const int32_t *targets, const float *weights,
                                    int N, int C, int V, int chunk, float scale, float z_coef, float *dx, float *dW,
                                    float *ws);

// The chunk planner both devices share: from row *n0 on, the next (at most
// chunk) supervised rows of targets (N), their indices into rows (chunk) in
// order; *n0 moves past them. Returns how many (0: none left). A target
// outside [0, V) that is not LOSS_IGNORE stops the run with a message.
int loss_next_chunk(const int32_t *targets, int N, int V, int chunk, int *n0, int *rows);

// The CUDA twin is fused_ce_forward_backward_cuda (train_cuda.h): the same
// planner on the host, the GEMMs and the softmax rows on the GPU.

static inline size_t loss_workspace_floats(int chunk, int V, int C) {
    return (size_t)chunk * ((size_t)V + 2 * (size_t)C);
}

#endif
