// attention.h: scaled dot-product attention, the one op both transformers share.
//
// The ViT (chapter 02) attends with every patch seeing every patch; Qwen
// (chapter 04) attends causally, with fewer key/value heads than query heads
// (grouped-query attention, GQA) and, when generating, with new queries
// against a cache of old keys. One op covers all three:
//
//   for every batch b, query head h, query position i:
//       g      = h / (NH / NKV)                 the kv head this query head reads
//       s_j    = scale * q[b,i,h,:] . k[b,j,g,:]  for the visible keys j
//       p_j    = softmax_j(s_j)                  (max-subtracted, in fp32)
//       out[b,i,h,:] = sum_j p_j v[b,j,g,:]
//
// Visible keys: all Tk of them, or with `causal` those at absolute position
// <= q_pos0 + i, where q_pos0 is the absolute position of the first query
// (0 in a full forward; the cache length when decoding token by token).
//
// Segments (seg, or NULL for none): a row may hold several sequences that
// must not see each other, packed one after another. seg (B, Tcap) gives each
// absolute position a segment number, and a key is visible to a query only
// if, besides the rule above, the key's segment is the query's or is 0. So 0
// marks a shared prefix every later segment reads (chapter 05 packs all the
// questions about one image behind one copy of the image: each question sees
// the image and itself, as it will when asked alone); whole independent
// sequences packed in a row use segments 1, 2, ... A query's own position is
// always visible, so no row of probabilities is empty.
//
// Groups. A row may also hold several such sequences *each with its own
// shared prefix* (chapter 05's batch packing: several scenes, each an image
// and its questions, one after another in one row). The upper bits of a
// segment number name its group, the low SEG_GROUP_BITS its part: part 0 is
// the group's prefix. The rule in full: a key is visible to a query if its
// segment is the query's, or is the query's group's prefix, seg_prefix(query
// segment). Group 0's prefix is segment 0, so a row of one group reads
// exactly as described above.
//
// Reach (reach, or NULL for none): with `causal`, the query at absolute
// position p sees keys 0 .. reach[p]-1 instead of 0 .. p. reach (B, Tcap)
// holds p + 1 for an ordinary token and more for a token that may look
// ahead: a VLM can let the visual tokens of one image see each other in both
// directions (every patch then knows the whole picture, as in the ViT) while
// the text stays causal (05_training's `image_attention`). A reach never
// passes the keys there are (Tk) and is at least p + 1.
//
// Layouts are the ones the projections produce, so no transpose is needed:
// q and out are (B, Tq, NH, HD) and k, v are (B, Tcap, NKV, HD) of which the
// first Tk positions are used (Tcap > Tk for a KV cache allocated up front).
//
// Letters: B batch, Tq query positions, Tk key positions, Tcap allocated key
// positions, NH query heads, NKV key/value heads, HD head dim.
#ifndef NM_ATTENTION_H
#define NM_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "01_tensor/tensor.h"

#define SEG_GROUP_BITS 16   // a segment number: group << SEG_GROUP_BITS | part (part 0: the prefix)
// The prefix segment of s's group: s with its part cleared. (Also compiled
// for the GPU, whose attention kernel applies the same rule.)
#ifdef __CUDACC__
__host__ __device__
#endif
static inline int32_t seg_prefix(int32_t s) { return (int32_t)((uint32_t)s & ~((1u << SEG_GROUP_BITS) - 1u)); }

// out (B,Tq,NH,HD); probs (B,NH,Tq,Tk) or NULL: the softmax weights, kept when
// a backward pass will need them; q (B,Tq,NH,HD); k,v (B,Tcap,NKV,HD);
// seg (B,Tcap) or NULL; reach (B,Tcap) or NULL.
void attention_forward_cpu(float *out, float *probs, const float *q, const float *k, const float *v,
                           const int32_t *seg, const int32_t *reach, int B, int Tq, int Tk, int Tcap, int NH,
                           int NKV, int HD, int q_pos0, bool causal, float scale);

// The CUDA twin (attention_cuda.cu): the same rule on device pointers, with
// q, k, v, out in dt (BF16 or F32) and seg, reach (B, Tcap) int32 device arrays
// or NULL. It keeps no probabilities (the GPU backward recomputes them).
void attention_forward_cuda(void *out, const void *q, const void *k, const void *v, const int32_t *seg,
                            const int32_t *reach, int B, int Tq, int Tk, int Tcap, int NH, int NKV, int HD,
                            int q_pos0, bool causal, float scale, DType dt);

// The op the models call: shapes from the tensors, the device from q.
// q, out (B, Tq, NH, HD); k, v (B, Tcap, NKV, HD); probs (B, NH, Tq, Tk) or an
// empty Tensor; seg, reach (B, Tcap) or NULL, on q's device.
void attention_forward(Tensor out, Tensor probs, Tensor q, Tensor k, Tensor v, const int32_t *seg,
                       const int32_t *reach, int Tk, int q_pos0, bool causal, float scale);

// The keys a block of queries can skip. A block of qb queries at positions
// p0 .. p0+qb-1 of one row, reading keys 0 .. nk-1, needs no key whose
// segment is neither one of the block's own nor their group's prefix: with
// questions packed behind a shared image (chapter 05), the earlier questions'
// keys; with scenes packed in a row, the earlier scenes' keys too. The block
// then reads two windows of keys, [0, a) and [c, nk), and skips [a, c), the
// first run of such keys (a = c = nk when there is none). Any further
// invisible keys past c are masked as usual. seg_row (Tcap) is the row's.
void attention_key_gap(const int32_t *seg_row, int p0, int qb, int nk, int *a, int *c);

#endif
