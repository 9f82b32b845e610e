// attention.c: the C oracle for scaled dot-product attention (forward).
//
// The definition (attention.h) works one query row at a time: scores against
// every visible key, a numerically safe softmax, the weighted sum of values.
// Written that way, with two scalar loops over the head dim, it spends its
// time waiting on one floating-point add after another: a 577-token ViT
// layer took longer in attention than in all its Linear layers together.
//
// So this file computes the same numbers as two matrix products per block of
// queries, which chapter 01's sgemm_cpu runs at close to the CPU's peak:
//
//   for every batch b, query head h (reading kv head g), block of QB queries:
//       S (QB, nk) = scale * Q (QB, HD) @ K_g (nk, HD)^T        scores
//       P (QB, nk) = softmax of each row of S over its visible keys
//       O (QB, HD) = P (QB, nk) @ V_g (nk, HD)                   outputs
//
// where nk is the number of keys the block's last query sees (all Tk without
// `causal`; with a reach, the most any query of the block sees). With
// `causal`, the earlier rows of a block see fewer keys: their extra scores are
// computed (a few wasted flops on the block's diagonal) and then given
// probability exactly zero, so they add nothing to O. With segments
// (attention.h) the scores of keys the segment rule hides are set to -FLT_MAX
// before the softmax, whose exp flushes them to the same exact zero; and the
// first run of keys that *no* query of the block may see is not computed at
// all (attention_key_gap): the block reads two windows of keys around it.
// Q, K and V are read in place, with row strides NH*HD and NKV*HD: no copies,
// no transposes.
//
// The (b, h, block) items are independent, so OpenMP shares them out. The
// scores go straight into `probs` when it is kept (the softmax then turns them
// into probabilities in place), else into a (QB, Tk) scratch block of the
// thread's own; sgemm_cpu, called from inside the parallel region, runs on the
// calling thread alone.
//
// The sums are taken in another order than the row-at-a-time definition, so
// the results differ in the last bits (well inside the fp32 tolerance of
// tests/verify_ch01.c, which checks this file against torch in float64).
// It does not fuse anything with the projections around it, and it recomputes
// nothing: the backward (training chapter) reads the probabilities in `probs`.
//
// Letters: QB queries per block, nk keys a block reads; the rest as attention.h.
#include "01_tensor/attention.h"

#include "01_tensor/sum.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "01_tensor/common.h"
#include "01_tensor/fastmath.h"
#include "01_tensor/matmul.h"

// Queries per block: enough rows that the GEMMs run at full speed, few enough
// that a 577-token image still makes ten blocks per head to share out.
#define QB 64

// One row of scores -> probabilities, in place: s (nk) holds scores in two
// windows of keys, [0, a) and [c, nk) (the gap between them is not computed);
// of these the keys before n_vis are visible. Afterwards s[j] = p_j, and 0 for
// the hidden keys and for the whole gap.
//
// Three passes over each window: the max, exp(s - max) and its sum, the
// scaling by 1/sum. With AVX-512 they are written out 16 keys at a time, the
// ragged end of a window through a lane mask: rows are short (tens to a few
// hundred keys), and the compiler's own vectorisation of these loops spent
// more time on its scalar remainders and reductions than on the keys.
#if defined(__AVX512F__)
static inline __mmask16 lanes_upto(int n) { return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }

static float window_max(const float *s, int j0, int j1, float m) {
    __m512 vm = _mm512_set1_ps(m);
    for (int j = j0; j < j1; j += 16) vm = _mm512_mask_max_ps(vm, lanes_upto(j1 - j), vm, _mm512_loadu_ps(s + j));
    return _mm512_reduce_max_ps(vm);
}

static float window_exp(float *s, int j0, int j1, float maxs) {   // s = exp(s - max); returns the sum
    __m512 vmax = _mm512_set1_ps(maxs), vsum = _mm512_setzero_ps();
    for (int j = j0; j < j1; j += 16) {
        __mmask16 m = lanes_upto(j1 - j);
        __m512 e = nm_exp_neg16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vmax));
        _mm512_mask_storeu_ps(s + j, m, e);
        vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
    }
    return _mm512_reduce_add_ps(vsum);
}

static void window_scale(float *s, int j0, int j1, float inv) {
    __m512 vinv = _mm512_set1_ps(inv);
    for (int j = j0; j < j1; j += 16) {
        __mmask16 m = lanes_upto(j1 - j);
        _mm512_mask_storeu_ps(s + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), vinv));
    }
}
#else
static float window_max(const float *s, int j0, int j1, float m) {
    // (`omp simd` allows the max to be taken 16 lanes at a time; without it
    // the compiler must keep the strict left-to-right order)
    NM_OMP(simd reduction(max : m))
    for (int j = j0; j < j1; j++) m = s[j] > m ? s[j] : m;
    return m;
}

// The sum is added up in the AVX-512 path's order, not the compiler's: 16
// running lanes (key j0 + 16t + l into lane l), then the tree of
// _mm512_reduce_add_ps (sum.h), so the softmax of a build for AVX2, or for no
// vector unit, gives the same bits as the AVX-512 one.
static float window_exp(float *s, int j0, int j1, float maxs) {
    float lane[SUM_LANES] = {0};
    int j = j0;
    for (; j + 16 <= j1; j += 16) {
        NM_OMP(simd)
        for (int l = 0; l < 16; l++) {
            s[j + l] = nm_exp_neg(s[j + l] - maxs);
            lane[l] += s[j + l];
        }
    }
    for (int l = 0; j + l < j1; l++) {   // the ragged end: the first lanes only
        s[j + l] = nm_exp_neg(s[j + l] - maxs);
        lane[l] += s[j + l];
    }
    return lanes_sum_tree(lane);
}

static void window_scale(float *s, int j0, int j1, float inv) {
    NM_OMP(simd)
    for (int j = j0; j < j1; j++) s[j] *= inv;
}
#endif

static void softmax_row(float *s, int a, int c, int n_vis, int nk) {
    const int e1 = a < n_vis ? a : n_vis;                 // window 1: keys 0 .. e1-1
    const int b2 = c, e2 = n_vis > c ? n_vis : c;         // window 2: keys b2 .. e2-1
    // p_j = exp(s_j - max) / sum: subtracting the max changes nothing
    // mathematically and keeps exp() from overflowing
    const float maxs = window_max(s, b2, e2, window_max(s, 0, e1, -FLT_MAX));
    const float sum = window_exp(s, 0, e1, maxs) + window_exp(s, b2, e2, maxs);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    window_scale(s, 0, e1, inv);
    window_scale(s, b2, e2, inv);
    if (b2 > e1) memset(s + e1, 0, (size_t)(b2 - e1) * sizeof(float));
    if (nk > e2) memset(s + e2, 0, (size_t)(nk - e2) * sizeof(float));
}

// Whether a key of segment sk is visible to some query of a block whose own
// segments are own[0 .. n_own-1]: it is one of them or one of their prefixes.
static bool block_sees(int32_t sk, const int32_t *own, int n_own) {
    for (int i = 0; i < n_own; i++)
        if (own[i] == sk || seg_prefix(own[i]) == sk) return true;
    return false;
}

void attention_key_gap(const int32_t *seg_row, int p0, int qb, int nk, int *a, int *c) {
    enum { MAXS = 8 };
    int32_t own[MAXS];   // the block's segments
    int n_own = 0;
    *a = *c = nk;
    for (int r = 0; r < qb; r++) {
        int32_t sr = seg_row[p0 + r];
        bool listed = false;
        for (int i = 0; i < n_own && !listed; i++) listed = own[i] == sr;
        if (listed) continue;
        if (n_own == MAXS) return;   // a block of many short sequences: read all keys
        own[n_own++] = sr;
    }
    int j = 0;
    while (j < nk && block_sees(seg_row[j], own, n_own)) j++;    // the first key no query may see
    *a = j;
    while (j < nk && !block_sees(seg_row[j], own, n_own)) j++;   // and the next one some query sees
    *c = j;
}

void attention_forward_cpu(float *out, float *probs, const float *q, const float *k, const float *v,
                           const int32_t *seg, const int32_t *reach, int B, int Tq, int Tk, int Tcap, int NH,
                           int NKV, int HD, int q_pos0, bool causal, float scale) {
    NM_CHECK(NKV > 0 && NH % NKV == 0, "attention: %d query heads cannot share %d kv heads", NH, NKV);
    NM_CHECK(Tk <= Tcap, "attention: %d keys do not fit a cache of %d", Tk, Tcap);
    const int group = NH / NKV;                     // query heads per kv head
    const int nblk = (Tq + QB - 1) / QB;            // query blocks per head
    const long long items = (long long)B * NH * nblk;
    const int ldq = NH * HD, ldk = NKV * HD;        // row strides of q/out and of k/v

    // A decode step (Tq = 1) has only NH small items: waking threads costs more
    // than it saves, so go parallel only when there is enough to share.
    const long long work = (long long)B * NH * Tq * Tk * HD;
    (void)work;   // read only by the pragma below, which a build without OpenMP drops
    NM_OMP(parallel if (work > 32768))
    {
        // (QB, Tk) this thread's block of scores, when probs does not hold them
        float *S_own = probs ? NULL : xmalloc((size_t)QB * (Tk > 0 ? Tk : 1) * sizeof(float));
        // Causal blocks near the end of a sequence see more keys than the first
        // ones, so the items are handed out one at a time, not in equal shares.
        NM_OMP(for schedule(dynamic, 1))
        for (long long it = 0; it < items; it++) {
            const int blk = (int)(it % nblk);
            const int h = (int)((it / nblk) % NH);          // query head
            const int b = (int)(it / ((long long)nblk * NH));
            const int g = h / group;                        // the kv head it reads
            const int i0 = blk * QB, qb = Tq - i0 < QB ? Tq - i0 : QB;   // queries i0 .. i0+qb-1
            const float *qb0 = q + ((size_t)b * Tq + i0) * ldq + (size_t)h * HD;     // (qb, HD), stride ldq
            float *ob0 = out + ((size_t)b * Tq + i0) * ldq + (size_t)h * HD;         // (qb, HD), stride ldq
            const float *kg = k + (size_t)b * Tcap * ldk + (size_t)g * HD;           // (Tk, HD), stride ldk
            const float *vg = v + (size_t)b * Tcap * ldk + (size_t)g * HD;           // (Tk, HD), stride ldk
            // The scores and then the probabilities of the block, (qb, Tk) with
            // row stride Tk: straight in probs when they are kept.
            float *S = probs ? probs + (((size_t)b * NH + h) * Tq + i0) * (size_t)Tk : S_own;
            // keys 0 .. n_vis(i)-1 are visible to query i; the block reads the
            // keys its last query sees (with a reach, the furthest any of them looks)
            const int32_t *rb = reach ? reach + (size_t)b * Tcap + q_pos0 + i0 : NULL;   // (qb,) the block's reaches
            int nk = causal ? q_pos0 + i0 + qb : Tk;
            if (causal && rb)
                for (int r = 0; r < qb; r++) nk = rb[r] > nk ? rb[r] : nk;
            if (nk > Tk) nk = Tk;
            // of which it skips [a, c): keys of segments none of its queries is in
            int a = nk, c = nk;
            if (seg && nk > 0) attention_key_gap(seg + (size_t)b * Tcap, q_pos0 + i0, qb, nk, &a, &c);

            if (nk > 0) {
                // S = scale * Q K^T   (qb, nk), window by window
                if (a > 0) sgemm_cpu(false, true, qb, a, HD, scale, qb0, ldq, kg, ldk, 0.0f, S, Tk);
                if (nk > c)
                    sgemm_cpu(false, true, qb, nk - c, HD, scale, qb0, ldq, kg + (size_t)c * ldk, ldk, 0.0f, S + c, Tk);
                for (int r = 0; r < qb; r++) {
                    int n_vis = !causal ? Tk : rb ? rb[r] : q_pos0 + i0 + r + 1;
                    if (n_vis > nk) n_vis = nk;
                    float *sr = S + (size_t)r * Tk;   // (nk) this query's scores
                    if (seg) {   // keys of other segments: a score no exp survives (probability 0)
                        const int32_t *sb = seg + (size_t)b * Tcap, si = sb[q_pos0 + i0 + r];
                        const int32_t pi = seg_prefix(si);   // its group's prefix
                        // (a select, not a branch: the compiler does 16 keys per instruction)
                        const int e1 = a < n_vis ? a : n_vis;
                        NM_OMP(simd)
                        for (int j = 0; j < e1; j++) sr[j] = sb[j] == pi || sb[j] == si ? sr[j] : -FLT_MAX;
                        NM_OMP(simd)
                        for (int j = c; j < n_vis; j++) sr[j] = sb[j] == pi || sb[j] == si ? sr[j] : -FLT_MAX;
                    }
                    softmax_row(sr, a, c, n_vis, nk);
                }
                // O = P V   (qb, HD), written straight into out's rows
                if (a > 0) sgemm_cpu(false, false, qb, HD, a, 1.0f, S, Tk, vg, ldk, 0.0f, ob0, ldq);
                if (nk > c)
                    sgemm_cpu(false, false, qb, HD, nk - c, 1.0f, S + c, Tk, vg + (size_t)c * ldk, ldk,
                              a > 0 ? 1.0f : 0.0f, ob0, ldq);
            } else {
                for (int r = 0; r < qb; r++) memset(ob0 + (size_t)r * ldq, 0, (size_t)HD * sizeof(float));
            }
            if (probs)   // the keys past the block's reach: probability 0
                for (int r = 0; r < qb; r++) memset(S + (size_t)r * Tk + nk, 0, (size_t)(Tk - nk) * sizeof(float));
        }
        free(S_own);
    }
}

// ----------------------------------------------------------------------------
// The Tensor-level op

void attention_forward(Tensor out, Tensor probs, Tensor q, Tensor k, Tensor v, const int32_t *seg,
                       const int32_t *reach, int Tk, int q_pos0, bool causal, float scale) {
    NM_CHECK(q.ndim == 4 && k.ndim == 4 && v.ndim == 4 && out.ndim == 4, "attention: q, k, v, out must be 4-d");
    const int B = (int)q.shape[0], Tq = (int)q.shape[1], NH = (int)q.shape[2], HD = (int)q.shape[3];
    const int Tcap = (int)k.shape[1], NKV = (int)k.shape[2];
    NM_CHECK(shape_equal(out, q) && shape_equal(k, v) && k.shape[0] == B && k.shape[3] == HD,
             "attention: shapes of q, k, v, out disagree");
    NM_CHECK(q.device == k.device && q.device == v.device && q.device == out.device &&
             q.dtype == k.dtype && q.dtype == v.dtype && q.dtype == out.dtype,
             "attention: q, k, v, out must share a device and a dtype");
    if (probs.data)
        NM_CHECK(probs.device == q.device && tensor_numel(probs) >= (int64_t)B * NH * Tq * Tk,
                 "attention: probs too small for (%d, %d, %d, %d)", B, NH, Tq, Tk);
    if (q.device == DEVICE_CPU) {
        NM_CHECK(q.dtype == DT_F32, "attention: the CPU path computes in F32");
        attention_forward_cpu(out.data, probs.data, q.data, k.data, v.data, seg, reach, B, Tq, Tk, Tcap, NH, NKV,
                              HD, q_pos0, causal, scale);
    } else {
        NM_CHECK(!probs.data, "attention: the CUDA path keeps no probabilities");
        attention_forward_cuda(out.data, q.data, k.data, v.data, seg, reach, B, Tq, Tk, Tcap, NH, NKV, HD, q_pos0,
                               causal, scale, q.dtype);
    }
}
