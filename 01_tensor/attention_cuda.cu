// attention_cuda.cu: the CUDA twin of attention_forward_cpu (attention.h), for the ViT and for Qwen.
//
// One kernel serves every case the C op serves: bidirectional (the ViT) or
// causal (Qwen), grouped-query heads, queries that start at q_pos0 against a
// cache of Tcap positions, and the segment and reach rules of packed rows and
// of images seen both ways. It is flash-style: thread i of a block owns query
// row TILE*blockIdx.x + i; the keys and values of its kv head stream through
// shared memory in tiles of TILE positions; the softmax is computed online (a
// running max and sum, rescaled as the max grows), so the (Tq, Tk) score
// matrix never exists and memory is linear in the length. Storage is bf16 or
// f32, arithmetic fp32.
//
// What it does not do: tensor cores, keep the probabilities (a backward on the
// GPU recomputes them), or skip the key blocks a segment hides. It is checked
// against the C op by tests/verify_gpu_ch01.c, and through the models by
// verify_gpu_ch02.c and verify_gpu_ch04.c.
//
// Letters as in attention.h: B batch, Tq queries, Tk keys, Tcap cache
// positions, NH query heads, NKV kv heads, HD head dim.
#include "01_tensor/cuda_common.h"

extern "C" {
#include "01_tensor/attention.h"
}

#include <math.h>

typedef __nv_bfloat16 bf16;

// MAXHD bounds the head dim at compile time so that q and the accumulator
// live in registers: <64, 64> for heads up to 64 (CLIP), <128, 32> up to 128
// (a smaller tile keeps shared memory under 48 KB).
template <int MAXHD, int TILE, typename T>
static __global__ void attention_kernel(T *out, const T *q, const T *k, const T *v, const int32_t *seg,
                                        const int32_t *reach, int Tq, int Tk, int Tcap, int NH, int NKV, int HD,
                                        int q_pos0, int causal, float scale) {
    __shared__ float ks[TILE][MAXHD + 1];   // +1: no bank conflicts on column reads
    __shared__ float vs[TILE][MAXHD + 1];
    __shared__ int32_t kseg[TILE];
    __shared__ int nk_block;
    const int b = blockIdx.z, h = blockIdx.y, i = blockIdx.x * TILE + threadIdx.x;
    const int g = h / (NH / NKV);                      // the kv head this query head reads
    const size_t qrow = (size_t)NH * HD, krow = (size_t)NKV * HD;
    const T *base_k = k + (size_t)b * Tcap * krow + (size_t)g * HD;
    const T *base_v = v + (size_t)b * Tcap * krow + (size_t)g * HD;
    const bool active = i < Tq;
    const int p = q_pos0 + i;                          // the query's absolute position
    // the keys this query may see: [0, limit), and with segments only some of them
    int limit = Tk;
    if (active && causal) {
        int r = reach ? reach[(size_t)b * Tcap + p] : p + 1;
        limit = r < Tk ? r : Tk;
    }
    const int32_t sq = active && seg ? seg[(size_t)b * Tcap + p] : 0;
    const int32_t sq_prefix = seg_prefix(sq);
    if (threadIdx.x == 0) nk_block = 0;
    __syncthreads();
    if (active) atomicMax(&nk_block, limit);
    __syncthreads();
    const int nk = nk_block;                           // keys any query of the block sees

    float qr[MAXHD], acc[MAXHD];
#pragma unroll
    for (int d = 0; d < MAXHD; d++) {
        qr[d] = active && d < HD ? load_f32(q[((size_t)b * Tq + i) * qrow + (size_t)h * HD + d]) * scale : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;                     // running max and softmax denominator
    for (int j0 = 0; j0 < nk; j0 += TILE) {
        int nj = nk - j0 < TILE ? nk - j0 : TILE;
        __syncthreads();
        for (int e = threadIdx.x; e < TILE * MAXHD; e += blockDim.x) {
            int jj = e / MAXHD, d = e % MAXHD;
            bool in = jj < nj && d < HD;               // zero padding keeps the unrolled loops exact
            ks[jj][d] = in ? load_f32(base_k[(size_t)(j0 + jj) * krow + d]) : 0.0f;
            vs[jj][d] = in ? load_f32(base_v[(size_t)(j0 + jj) * krow + d]) : 0.0f;
        }
        for (int jj = threadIdx.x; jj < TILE; jj += blockDim.x)
            kseg[jj] = seg && jj < nj ? seg[(size_t)b * Tcap + j0 + jj] : 0;
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < nj && j0 + jj < limit; jj++) {
            if (seg && kseg[jj] != sq && kseg[jj] != sq_prefix) continue;   // another segment's key
            float s = 0.0f;
#pragma unroll
            for (int d = 0; d < MAXHD; d++) s += qr[d] * ks[jj][d];
            float m_new = fmaxf(m, s);
            float corr = __expf(m - m_new);            // rescales what was summed under the old max
            float pj = __expf(s - m_new);
            l = l * corr + pj;
#pragma unroll
            for (int d = 0; d < MAXHD; d++) acc[d] = acc[d] * corr + pj * vs[jj][d];
            m = m_new;
        }
    }
    if (active) {
        float inv = l > 0.0f ? 1.0f / l : 0.0f;        // a query always sees itself: l > 0
        T *o = out + ((size_t)b * Tq + i) * qrow + (size_t)h * HD;
#pragma unroll
        for (int d = 0; d < MAXHD; d++)
            if (d < HD) store_f32(&o[d], acc[d] * inv);
    }
}

template <typename T>
static void launch(T *out, const T *q, const T *k, const T *v, const int32_t *seg, const int32_t *reach, int B,
                   int Tq, int Tk, int Tcap, int NH, int NKV, int HD, int q_pos0, bool causal, float scale) {
    if (HD <= 64) {
        dim3 grid((Tq + 63) / 64, NH, B);
        attention_kernel<64, 64, T><<<grid, 64>>>(out, q, k, v, seg, reach, Tq, Tk, Tcap, NH, NKV, HD, q_pos0,
                                                   causal, scale);
    } else {
        dim3 grid((Tq + 31) / 32, NH, B);
        attention_kernel<128, 32, T><<<grid, 32>>>(out, q, k, v, seg, reach, Tq, Tk, Tcap, NH, NKV, HD, q_pos0,
                                                    causal, scale);
    }
    CUDA_CHECK_LAUNCH();
}

extern "C" void attention_forward_cuda(void *out, const void *q, const void *k, const void *v, const int32_t *seg,
                                       const int32_t *reach, int B, int Tq, int Tk, int Tcap, int NH, int NKV,
                                       int HD, int q_pos0, bool causal, float scale, DType dt) {
    NM_CHECK(HD >= 1 && HD <= 128, "attention_forward_cuda: head dim %d (1..128 on the GPU)", HD);
    NM_CHECK(NKV > 0 && NH % NKV == 0 && Tk <= Tcap, "attention_forward_cuda: NH=%d NKV=%d Tk=%d Tcap=%d", NH,
             NKV, Tk, Tcap);
    if (B == 0 || Tq == 0) return;
    if (dt == DT_BF16)
        launch((bf16 *)out, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, seg, reach, B, Tq, Tk, Tcap, NH, NKV,
               HD, q_pos0, causal, scale);
    else if (dt == DT_F32)
        launch((float *)out, (const float *)q, (const float *)k, (const float *)v, seg, reach, B, Tq, Tk, Tcap, NH,
               NKV, HD, q_pos0, causal, scale);
    else
        NM_DIE("attention_forward_cuda: dtype %s (BF16 or F32)", dtype_name(dt));
}
