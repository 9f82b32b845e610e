// adamw.h: the optimizer: AdamW with parameter groups, the LR schedule, clipping.
//
// After a backward pass every trainable number p has its gradient g. AdamW
// (Loshchilov & Hutter) keeps two running averages per number, the first and
// second moments of g, and moves p by their ratio, so each parameter gets a
// step size adapted to its own gradient scale:
//
//     p  = p * (1 - lr wd)                          decoupled weight decay
//     m  = b1 m + (1 - b1) g                        first moment
//     v  = b2 v + (1 - b2) g^2                      second moment
//     p -= lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)
//
// in exactly that order and grouping, which is torch.optim.AdamW's, so that
// ten steps here and there agree to fp32 rounding. t counts steps from 1.
//
// Groups. The connector and the LLM learn at different rates (a fresh
// connector is usually given a higher one), and can be frozen one at a time
// (LLaVA's stage 1 trains the connector only). Within a group, 1-D tensors
// (RMSNorm weights, biases) get no weight decay, the usual rule: decaying a
// norm's gain towards 0 only fights the normalisation.
//
// Around the step: the learning rate follows linear warmup then cosine decay
// (lr_schedule), and the gradients are first clipped to a global L2 norm
// (torch.nn.utils.clip_grad_norm_'s rule: scale by max/(norm + 1e-6) when
// that is below 1). Gradient accumulation is the caller's: gradients add up
// over micro-batches (every backward +=) and the step runs once.
//
// State (m, v for every trainable tensor, the step count) is two tables
// derived from the parameter tables, so a checkpoint writes them by name.
#ifndef NM_ADAMW_H
#define NM_ADAMW_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "01_tensor/tensor.h"

#define ADAMW_MAX_GROUPS 4

typedef struct {
    char name[32];       // "connector", "llm"
    Table *params;       // fp32 parameters (borrowed)
    Table *grads;        // same layout as the trainable entries of params (borrowed)
    Table m, v;          // the moments (owned), fp32, zeroed; empty tables when frozen
    float lr;            // this group's peak learning rate
    bool frozen;         // no update, not in the gradient norm, no moments
    Table *compute;      // on a GPU: the bf16 copy of params the forward reads, rewritten by every
                         // step (adamw_set_compute), or NULL
    Table m_dev, v_dev;  // the device moments while adamw_state_to_host has them on the host
} AdamGroup;

typedef struct {
    AdamGroup g[ADAMW_MAX_GROUPS];
    int n;
    float beta1, beta2, eps, weight_decay;
    int64_t step;        // steps taken so far (t of the next step is step + 1)
} AdamW;

void adamw_init(AdamW *o, float beta1, float beta2, float eps, float weight_decay);
// grads must have the trainable entries of params, in the same order; a frozen
// group gets no moments, and its grads may be an empty table (nothing reads it).
void adamw_add_group(AdamW *o, const char *name, Table *params, Table *grads, float lr, bool frozen);
void adamw_free(AdamW *o);

// Devices. A group lives where its params table does: its moments are
// allocated there, and on a GPU the step, the norm and the clipping run there
// (train_cuda.h), in the same order and grouping as on the CPU. params are
// then the fp32 master weights; compute (same entries, any float dtype, on the
// device) is the copy the forward computes with, rewritten from the master by
// each step.
void adamw_set_compute(AdamW *o, int group, Table *compute);
// Checkpoints read and write host tables: to_host brings every device group's
// m and v to the host (g->m, g->v are then host tables), to_device puts them
// back (uploading what a checkpoint_load wrote there). No-ops for host groups.
void adamw_state_to_host(AdamW *o);
void adamw_state_to_device(AdamW *o);
void adamw_zero_grad(AdamW *o);
// Global L2 norm over the gradients of every non-frozen group (in double).
double adamw_grad_norm(const AdamW *o);
// Scales every non-frozen gradient by max_norm / (norm + 1e-6) when that is < 1.
// Returns the norm before clipping. max_norm <= 0: no clipping.
double adamw_clip(AdamW *o, double max_norm);
// One step with every group's lr multiplied by lr_factor (the schedule).
void adamw_step(AdamW *o, float lr_factor);
// The update of n numbers of one tensor, the step's t (from 1) and learning
// rate lr given; decay: whether weight decay applies (tensors of 2 or more
// dimensions). adamw_step runs it on every tensor; a sharded optimizer
// (chapter 06's ZeRO-1) on its slice of each: the numbers are independent.
void adamw_update(const AdamW *o, int64_t t, float lr, bool decay, float *p, const float *g, float *m, float *v,
                  int64_t n);
// Bytes of optimizer state (for --mem): 2 floats per trainable parameter.
int64_t adamw_state_floats(const AdamW *o);

// Linear warmup over `warmup` steps then cosine decay to min_ratio at `total`:
// the multiplier for the step with 0-based index `step`:
//   step < warmup:  (step + 1) / warmup
//   else:           min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * min(1, (step - warmup) / max(1, total - warmup))))
float lr_schedule(int64_t step, int64_t warmup, int64_t total, float min_ratio);

#endif
