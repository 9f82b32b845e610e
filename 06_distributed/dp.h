// dp.h: data parallelism and ZeRO-1 over a communicator, bit-exact on the CPU.
//
// Every rank holds the whole model. A step's global batch is grad_accum
// micro-batches of batch_size rows, the same micro-batches in the same order
// whatever the number of ranks; rank r takes the contiguous run of them
//     [r K / N, (r + 1) K / N)        K = grad_accum, N ranks
// (a rank may get none when K < N), runs forward and backward on each, and
// the ranks then sum the K gradients.
//
// The same bits on 1, 2 or 3 ranks. Floating-point addition is not
// associative: (a + b) + c and a + (b + c) differ in the last bit, and an
// all-reduce adds in whatever order its algorithm (ring, tree, the network)
// finds convenient, a different one for every N. So the unit of work is the
// micro-batch, whose gradient is computed alone, into zeroed buffers, by the
// same code on any rank, and the K gradients are summed in one fixed order,
// micro-batch 0 first (comm_ordered_sum): exactly the additions a single
// process makes. The loss is the same: each micro-batch's sum, gathered, added
// in order. Reduce = ordered is this; reduce = ring is MPI's all-reduce of
// each rank's own sum, the usual fast path, whose result differs from one
// process by rounding only (a few ulp per number for K terms; the test bounds it).
// The price of the order is memory: a rank keeps each of its micro-batches'
// gradients (P numbers each) until the chain reaches it, where the ring adds
// them up as they come, into one.
//
// The flat view. The trainable tensors of the connector and the LLM, in
// table order, are numbered end to end as one vector of P numbers; gradients,
// parameters and AdamW's moments are all laid out that way here.
//
// ZeRO-1 (Rajbhandari et al.): the optimizer state is split, not the model.
// The P numbers are cut into blocks of DP_BLOCK, and rank r owns the run of
// blocks [r NB / N, (r + 1) NB / N): an uneven P, or one that N does not
// divide, just makes the last shards shorter. A step then runs
//     reduce-scatter the gradient  -> each rank has the sum of its shard
//     the global norm              -> each rank's per-block sums of squares,
//                                     all-gathered, added in block order
//     AdamW on the shard           -> m and v exist for the shard only
//     all-gather the parameters    -> every rank has the whole new model
// Each rank keeps 2 P / N numbers of AdamW state instead of 2 P. Plain data
// parallelism is the same step with one shard of everything on every rank.
// The gradient norm is computed over the same blocks in both, so the clip
// factor, and with it every bit of the update, is the same in both and for any N.
#ifndef NM_DP_H
#define NM_DP_H

#include <stdbool.h>
#include <stdint.h>

#include "05_training/adamw.h"
#include "05_training/checkpoint.h"
#include "06_distributed/comm.h"

#define DP_BLOCK 4096   // numbers per block of the shard and norm layout

typedef struct {
    float *param;   // (n,) in the model's table
    float *grad;    // (n,) in the model's gradient table
    int64_t off, n; // where it sits in the flat vector
    float lr;       // its group's peak learning rate
    bool decay;     // weight decay applies (2-D and up)
} DpSeg;

typedef struct {
    Comm *c;
    bool zero;                  // ZeRO-1 (else plain data parallelism)
    bool ordered;               // the fixed-order sum (else MPI's all-reduce)
    DpSeg *seg;                 // (nseg,)
    int nseg;
    int64_t P;                  // trainable numbers
    int64_t nblocks;            // ceil(P / DP_BLOCK)
    int64_t *shard_lo;          // (world + 1,) rank r's shard is [shard_lo[r], shard_lo[r + 1])
    int64_t *counts;            // (world,) shard lengths
    int64_t lo, hi;             // the numbers this rank updates: its shard (ZeRO) or [0, P)
    float *m, *v;               // (hi - lo,) AdamW's moments
    float *grad;                // (P,) the summed gradient (ZeRO: its shard at [lo, hi) counts)
    float *flat;                // (P,) parameters packed for the all-gather (ZeRO)
    float **local;              // (n_local,) each (P,): this rank's micro-batch gradients (ordered)
    int n_local;                // 0 for the ring, which sums into grad as they come
    double *blk;                // (nblocks,) sums of squares per block
    AdamW hp;                   // hyperparameters and the step count (no groups)
} Dp;

// Micro-batches of a step that rank r runs: [*first, *first + *count).
void dp_micro_range(int K, int world, int rank, int *first, int *count);
// Partition of P numbers into `world` shards on block boundaries: lo (world + 1,).
void dp_partition(int64_t P, int world, int64_t *lo);

// Builds the flat view over the trainable groups of o (frozen ones excluded)
// and allocates the state for n_local micro-batches. o gives the
// hyperparameters; its own moments are not used.
void dp_init(Dp *d, Comm *c, const AdamW *o, bool zero, bool ordered, int n_local);
void dp_free(Dp *d);

// After micro-batch i's backward: keeps the model's gradients in slot i
// (ordered), or adds them to this rank's sum (ring).
void dp_keep_grad(Dp *d, int i);
// The whole optimizer step: sum the n_local slots over ranks, norm, clip to
// max_norm (<= 0: none), AdamW with lr_factor, parameters gathered. Returns the norm.
double dp_step(Dp *d, double max_norm, float lr_factor);

// Checkpoints (checkpoint.h's layout, with the optimizer state in shards):
//   model.safetensors, config.json, connector.safetensors   rank 0
//   optimizer.rank_R.safetensors   every rank R: "m" and "v" of its shard of the
//                                  ZeRO partition for this world size
//   state.json                     step, cursor, seed, adam_step, world (rank 0)
//   train.conf, COMPLETE           rank 0, COMPLETE after a barrier that every
//                                  rank reaches only once its shard is on disk
// A plain data-parallel run writes the same shards (every rank holds all of
// them and writes its own), so a checkpoint resumes in either mode on any
// number of ranks: each rank reads the numbers it needs from whichever
// shards hold them.
int dp_checkpoint_save(Dp *d, const char *out, const Vlm *v, const TrainState *st, const TrainConfig *cfg,
                       char *err, size_t errlen);
void dp_checkpoint_load(Dp *d, const char *dir, Vlm *v, TrainState *st);

#endif
