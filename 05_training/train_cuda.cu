// train_cuda.cu: the CUDA twins of the training chapter's ops: RMSNorm, RoPE,
// attention and embedding backwards, the fused LM head + cross-entropy, AdamW
// and the global gradient norm.
//
// Each kernel is the C oracle's loop (backward.c, loss.c, adamw.c) written
// for many threads, in the simplest form that is plainly right; speed is a
// later chapter's business. Three rules hold everywhere:
//
//   - fp32 arithmetic (double for the long sums the oracle sums in double),
//     whatever the storage: bf16 or f32 per tensor, read with load_f32 and
//     written with store_f32 (cuda_common.h);
//   - deterministic: no float atomics. A sum has one owner thread, or is a
//     block reduction over a fixed assignment of items to threads, or is
//     written as per-chunk partials added in chunk order afterwards. So two
//     runs give the same bits;
//   - every launch is bounds-checked (sizes checked on the host, a guard on
//     every index in the kernel) and followed by CUDA_CHECK_LAUNCH.
//
// Linear layers and SwiGLU need nothing new: chapter 01's matmul_backward_cuda
// (cuBLAS for dX and dW, the bias gradient as a fixed-order column reduction)
// and chapter 03's swiglu_backward_cuda are their CUDA backwards.
//
// Everything here is checked against its C oracle by tests/verify_gpu_ch05.c.
//
// Letters: N rows, C width, B batch, T tokens, NH query heads, NKV kv heads,
// HD head dim, V vocabulary, n rows of one loss chunk.
#include "01_tensor/cuda_common.h"

extern "C" {
#include "01_tensor/attention.h"
#include "05_training/backward.h"
#include "05_training/loss.h"
#include "05_training/train_cuda.h"
}

#include <math.h>
#include <string.h>

typedef __nv_bfloat16 bf16;
static const unsigned THREADS = 256;

// ----------------------------------------------------------------------------
// Dispatch: a storage dtype becomes a C++ type. with_type(dt, f) calls f with a
// value of the type (only its type matters), so one launcher line serves every
// combination of f32 and bf16 operands.
template <typename F> static void with_type(DType dt, const char *who, F f) {
    if (dt == DT_F32) f(float{});
    else if (dt == DT_BF16) f(bf16{});
    else NM_DIE("%s: dtype %s (F32 or BF16)", who, dtype_name(dt));
}

// A sum across the block of one value per thread, in a fixed tree: the same
// inputs in the same threads give the same bits. blockDim.x is a power of two
// <= 1024; `sh` holds blockDim.x values. Every thread gets the sum.
template <typename S> static __device__ S block_total(S v, S *sh) {
    __syncthreads();   // sh may still be read by the previous call
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    return sh[0];
}

static __device__ float block_max(float v, float *sh) {
    __syncthreads();
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + w]);
        __syncthreads();
    }
    return sh[0];
}

// ============================================================================
// RMSNorm backward (backward.c's derivation):
//   dx[c] += r * (dy[c] w[c] - x[c] r^2 mean_j(dy[j] w[j] x[j]))
//   dw[c] += sum_rows dy[c] x[c] r
// dx: one block per row. dw: per-chunk column partials (RMS_ROWS rows each, in
// row order), then the chunks added in order into dw.

enum { RMS_THREADS = 128, RMS_ROWS = 256 };

template <typename TD, typename TO, typename TX, typename TW>
static __global__ void rmsnorm_bwd_dx_kernel(TD *dx, const TO *dout, const TX *x, const TW *w, const float *rstd,
                                             int N, int C) {
    __shared__ double sh[RMS_THREADS];
    const int n = blockIdx.x;
    if (n >= N) return;
    const TO *dy = dout + (size_t)n * C;   // (C,)
    const TX *xr = x + (size_t)n * C;      // (C,)
    TD *d = dx + (size_t)n * C;            // (C,)
    double gx = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        gx += (double)load_f32(dy[c]) * load_f32(w[c]) * load_f32(xr[c]);
    gx = block_total(gx, sh);
    const float mean_gx = (float)(gx / C), r = rstd[n];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float g = load_f32(dy[c]) * load_f32(w[c]);
        store_f32(&d[c], load_f32(d[c]) + r * (g - load_f32(xr[c]) * r * r * mean_gx));
    }
}

template <typename TO, typename TX>
static __global__ void rmsnorm_bwd_dw_partial(float *part, const TO *dout, const TX *x, const float *rstd, int N,
                                              int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (c >= C) return;
    float s = 0.0f;
    const int n1 = (ch + 1) * RMS_ROWS < N ? (ch + 1) * RMS_ROWS : N;
    for (int n = ch * RMS_ROWS; n < n1; n++)
        s += load_f32(dout[(size_t)n * C + c]) * load_f32(x[(size_t)n * C + c]) * rstd[n];
    part[(size_t)ch * C + c] = s;
}

template <typename TW> static __global__ void column_chunks_add(TW *dst, const float *part, int chunks, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = load_f32(dst[c]);   // the chunks added into dw one by one, as backward.c adds them
    for (int ch = 0; ch < chunks; ch++) acc += part[(size_t)ch * C + c];
    store_f32(&dst[c], acc);
}

extern "C" void rmsnorm_backward_cuda(void *dx, DType dxdt, float *dw, const void *dout, DType odt, const void *x,
                                      DType xdt, const void *w, DType wdt, const float *rstd, int N, int C) {
    NM_CHECK(N >= 0 && C >= 1, "rmsnorm_backward_cuda: N=%d C=%d", N, C);
    if (N == 0) return;
    NM_CHECK(dout && x && w && rstd, "rmsnorm_backward_cuda: a NULL input");
    with_type(dxdt, "rmsnorm_backward_cuda dx", [&](auto td) {
        with_type(odt, "rmsnorm_backward_cuda dout", [&](auto to) {
            with_type(xdt, "rmsnorm_backward_cuda x", [&](auto tx) {
                with_type(wdt, "rmsnorm_backward_cuda w", [&](auto tw) {
                    using TD = decltype(td);
                    using TO = decltype(to);
                    using TX = decltype(tx);
                    using TW = decltype(tw);
                    if (dx) {
                        rmsnorm_bwd_dx_kernel<TD, TO, TX, TW><<<N, RMS_THREADS>>>(
                            (TD *)dx, (const TO *)dout, (const TX *)x, (const TW *)w, rstd, N, C);
                        CUDA_CHECK_LAUNCH();
                    }
                    if (dw) {
                        const int chunks = (N + RMS_ROWS - 1) / RMS_ROWS;
                        NM_CHECK(chunks <= 65535, "rmsnorm_backward_cuda: N=%d rows are too many", N);
                        float *part = (float *)cuda_malloc((size_t)chunks * C * sizeof(float));   // (chunks, C)
                        dim3 grid((C + THREADS - 1) / THREADS, chunks);
                        rmsnorm_bwd_dw_partial<TO, TX><<<grid, THREADS>>>(part, (const TO *)dout, (const TX *)x,
                                                                          rstd, N, C);
                        CUDA_CHECK_LAUNCH();
                        column_chunks_add<float><<<(C + THREADS - 1) / THREADS, THREADS>>>(dw, part, chunks, C);
                        CUDA_CHECK_LAUNCH();
                        cuda_free(part);   // cudaFree waits for the kernels
                    }
                });
            });
        });
    });
}

// ============================================================================
// Linear backward with fp32 weight gradients: out (M, N) = inp (M, K) W^T + b.
//   dinp (M, K) (+)= dout (M, N) @ W (N, K)      in the activations' dtype
//   dW (N, K) += dout^T @ inp                    fp32, accumulated by cuBLAS
//   db (N) += column sums of dout                fixed order: chunk partials, then chunks in order

template <typename TO> static __global__ void colsum_partial(float *part, const TO *dout, int M, int N) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (c >= N) return;
    float s = 0.0f;
    const int m1 = (ch + 1) * RMS_ROWS < M ? (ch + 1) * RMS_ROWS : M;
    for (int m = ch * RMS_ROWS; m < m1; m++) s += load_f32(dout[(size_t)m * N + c]);
    part[(size_t)ch * N + c] = s;
}

static void gemm_ex(bool ta, bool tb, int m, int n, int kk, const void *A, int lda, const void *Bm, int ldb,
                    float beta, void *Cm, int ldc, DType ab, DType cdt);

extern "C" void linear_backward_cuda(void *dinp, bool add, float *dweight, float *dbias, const void *dout,
                                     const void *inp, const void *weight, int M, int K, int N, DType dt) {
    NM_CHECK(M >= 0 && K >= 0 && N >= 0, "linear_backward_cuda: M=%d K=%d N=%d", M, K, N);
    if (M == 0) return;
    if (N == 0) {   // dout is empty: dinp is a sum of nothing
        if (dinp && !add && K > 0) cuda_zero(dinp, (size_t)M * K * dtype_size(dt));
        return;
    }
    NM_CHECK(dout != NULL, "linear_backward_cuda: dout is NULL");
    if (K > 0 && dinp) gemm_ex(false, false, M, K, N, dout, N, weight, K, add ? 1.0f : 0.0f, dinp, K, dt, dt);
    if (K > 0 && dweight) gemm_ex(true, false, N, K, M, dout, N, inp, K, 1.0f, dweight, K, dt, DT_F32);
    if (dbias) {
        const int chunks = (M + RMS_ROWS - 1) / RMS_ROWS;
        NM_CHECK(chunks <= 65535, "linear_backward_cuda: M=%d rows are too many for the bias reduction", M);
        float *part = (float *)cuda_malloc((size_t)chunks * N * sizeof(float));   // (chunks, N)
        with_type(dt, "linear_backward_cuda dout", [&](auto to) {
            using TO = decltype(to);
            colsum_partial<TO><<<dim3((N + THREADS - 1) / THREADS, chunks), THREADS>>>(part, (const TO *)dout, M, N);
            CUDA_CHECK_LAUNCH();
        });
        column_chunks_add<float><<<(N + THREADS - 1) / THREADS, THREADS>>>(dbias, part, chunks, N);
        CUDA_CHECK_LAUNCH();
        cuda_free(part);
    }
}

// ============================================================================
// RoPE backward: the transpose of a rotation is the rotation by -angle.
//   dx[i] += dy[i] cos + dy[i+h] sin;   dx[i+h] += dy[i+h] cos - dy[i] sin

template <typename TD, typename TO>
static __global__ void rope_bwd_kernel(TD *dx, const TO *dout, const float *cos_t, const float *sin_t, int B, int T,
                                       int H, int HD) {
    const int half = HD / 2;
    const size_t n = (size_t)B * T * H * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % half);
        const size_t row = i / half;              // (b, t, h)
        const int t = (int)((row / H) % T);
        const float c = cos_t[(size_t)t * half + d], s = sin_t[(size_t)t * half + d];
        const TO *dy = dout + row * HD;           // (HD,)
        TD *g = dx + row * HD;                    // (HD,)
        const float y1 = load_f32(dy[d]), y2 = load_f32(dy[d + half]);
        store_f32(&g[d], load_f32(g[d]) + (y1 * c + y2 * s));
        store_f32(&g[d + half], load_f32(g[d + half]) + (y2 * c - y1 * s));
    }
}

extern "C" void rope_backward_cuda(void *dx, DType dxdt, const void *dout, DType odt, const float *cos_t,
                                   const float *sin_t, int B, int T, int H, int HD) {
    NM_CHECK(B >= 0 && T >= 0 && H >= 0 && HD >= 2 && HD % 2 == 0, "rope_backward_cuda: B=%d T=%d H=%d HD=%d", B, T,
             H, HD);
    const size_t n = (size_t)B * T * H * (HD / 2);
    if (n == 0) return;
    with_type(dxdt, "rope_backward_cuda dx", [&](auto td) {
        with_type(odt, "rope_backward_cuda dout", [&](auto to) {
            using TD = decltype(td);
            using TO = decltype(to);
            rope_bwd_kernel<TD, TO><<<grid_for(n, THREADS), THREADS>>>((TD *)dx, (const TO *)dout, cos_t, sin_t, B,
                                                                       T, H, HD);
            CUDA_CHECK_LAUNCH();
        });
    });
}

// ============================================================================
// Embedding backward: dE[id[n]] += dh[n], in position order per id.
//
// Several positions may hold the same token, so threads indexed by position
// would race on its row. Instead each row of dE has one owner: the host sorts
// the positions by id (a stable counting sort, so each id's positions stay in
// order), and block u owns the u-th distinct id and adds its positions' rows
// one after another, exactly the order of the C loop.

template <typename TE, typename TH>
static __global__ void embedding_bwd_kernel(TE *dE, const TH *dh, const int32_t *uid, const int32_t *start,
                                            const int32_t *order, int U, int C) {
    const int u = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (u >= U || c >= C) return;
    TE *row = dE + (size_t)uid[u] * C;   // (C,)
    float acc = load_f32(row[c]);
    for (int j = start[u]; j < start[u + 1]; j++) acc += load_f32(dh[(size_t)order[j] * C + c]);
    store_f32(&row[c], acc);
}

extern "C" void embedding_backward_cuda(void *dE, DType edt, const void *dh, DType hdt, const int32_t *ids, int N,
                                        int C, int V) {
    NM_CHECK(N >= 0 && C >= 1 && V >= 1, "embedding_backward_cuda: N=%d C=%d V=%d", N, C, V);
    // the ownership lists, on the host: count per id, then positions grouped by id
    int32_t *count = (int32_t *)xcalloc((size_t)V + 1, sizeof(int32_t));
    int M = 0;
    for (int n = 0; n < N; n++) {
        if (ids[n] < 0) continue;
        NM_CHECK(ids[n] < V, "embedding_backward_cuda: id %d outside the table of %d rows", ids[n], V);
        count[ids[n]]++;
        M++;
    }
    if (M == 0) {
        free(count);
        return;
    }
    int U = 0;
    for (int v = 0; v < V; v++) U += count[v] > 0;
    int32_t *uid = (int32_t *)xmalloc((size_t)U * sizeof(int32_t));          // (U) the distinct ids, ascending
    int32_t *start = (int32_t *)xmalloc(((size_t)U + 1) * sizeof(int32_t));  // (U+1) where each one's list starts
    int32_t *slot = (int32_t *)xmalloc((size_t)V * sizeof(int32_t));         // (V) id -> its u
    for (int v = 0, u = 0, off = 0; v < V; v++) {
        if (!count[v]) continue;
        uid[u] = v;
        start[u] = off;
        slot[v] = u;
        off += count[v];
        u++;
    }
    start[U] = M;
    int32_t *order = (int32_t *)xmalloc((size_t)M * sizeof(int32_t));   // (M) positions, grouped by id, in order
    int32_t *fill = (int32_t *)xmalloc((size_t)U * sizeof(int32_t));
    memcpy(fill, start, (size_t)U * sizeof(int32_t));
    for (int n = 0; n < N; n++)
        if (ids[n] >= 0) order[fill[slot[ids[n]]]++] = n;
    int32_t *dev = (int32_t *)cuda_malloc(((size_t)2 * U + 1 + M) * sizeof(int32_t));
    int32_t *uid_d = dev, *start_d = dev + U, *order_d = dev + 2 * U + 1;
    cuda_upload(uid_d, uid, (size_t)U * sizeof(int32_t));
    cuda_upload(start_d, start, ((size_t)U + 1) * sizeof(int32_t));
    cuda_upload(order_d, order, (size_t)M * sizeof(int32_t));
    NM_CHECK((C + THREADS - 1) / THREADS <= 65535, "embedding_backward_cuda: C=%d too wide", C);
    dim3 grid((unsigned)U, (C + THREADS - 1) / THREADS);
    with_type(edt, "embedding_backward_cuda dE", [&](auto te) {
        with_type(hdt, "embedding_backward_cuda dh", [&](auto th) {
            using TE = decltype(te);
            using TH = decltype(th);
            embedding_bwd_kernel<TE, TH><<<grid, THREADS>>>((TE *)dE, (const TH *)dh, uid_d, start_d, order_d, U, C);
            CUDA_CHECK_LAUNCH();
        });
    });
    cuda_free(dev);
    free(count);
    free(uid);
    free(start);
    free(slot);
    free(order);
    free(fill);
}

// ============================================================================
// Attention backward, causal, grouped-query, with the segment and reach masks
// (the training case of attention.h: Tq = Tk = Tcap = T, q_pos0 = 0).
//
// The forward kept no probabilities, so they are recomputed. With
//   s_ij = scale q_i . k_j,  p_ij = exp(s_ij - lse_i),  dp_ij = dO_i . v_j,
//   D_i = sum_j p_ij dp_ij,  ds_ij = p_ij (dp_ij - D_i):
//   dq_i += scale sum_j ds_ij k_j
//   dk_j += scale sum_{h,i} ds_ij q_i      (over the query heads h of j's kv head)
//   dv_j += sum_{h,i} p_ij dO_i
// Two kernels, each writing only rows it owns. The first has a block per
// (b, h, query i): it computes the row's scores and dp into shared memory,
// its lse and D (kept for the second), and dq_i. The second has a block per
// (b, kv head g, key j): it walks every query of every head of the group that
// sees j, recomputes p_ij and ds_ij from lse_i and D_i, and sums dk_j and dv_j.
// Inside a block each warp takes a fixed share of the keys (or queries), its
// lanes hold the head dims d = lane + 32e, dot products are warp shuffles, and
// the warps' partial sums are added in warp order at the end.

enum { ATT_WARPS = 4, ATT_THREADS = 32 * ATT_WARPS, ATT_MAXE = 8 };   // HD <= 32 * ATT_MAXE = 256

static __device__ float warp_total(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Whether query i (segment sq) sees key j: j inside its reach, and in its segment or its group's prefix.
static __device__ __forceinline__ bool att_visible(int j, int limit, const int32_t *segrow, int32_t sq) {
    if (j >= limit) return false;
    if (!segrow) return true;
    const int32_t sk = segrow[j];
    return sk == sq || sk == seg_prefix(sq);
}

static __device__ __forceinline__ int att_limit(const int32_t *reachrow, int i, int T) {
    const int r = reachrow ? reachrow[i] : i + 1;
    return r < T ? r : T;
}

template <typename TA, typename TG>
static __global__ void attention_bwd_q_kernel(TG *dq, float *lse_out, float *D_out, const TG *dout, const TA *q,
                                              const TA *k, const TA *v, const int32_t *seg, const int32_t *reach,
                                              int T, int NH, int NKV, int HD, float scale) {
    extern __shared__ float sm[];                     // s (T) then dp (T)
    float *s_row = sm, *dp_row = sm + T;
    __shared__ float red[ATT_THREADS];
    __shared__ double redd[ATT_THREADS];
    __shared__ float part[ATT_WARPS][32 * ATT_MAXE];
    const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (i >= T) return;
    const int g = h / (NH / NKV), lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t qrow = (size_t)NH * HD, krow = (size_t)NKV * HD;
    const int32_t *segrow = seg ? seg + (size_t)b * T : NULL, *reachrow = reach ? reach + (size_t)b * T : NULL;
    const int limit = att_limit(reachrow, i, T);
    const int32_t sq = segrow ? segrow[i] : 0;
    const TA *qi = q + ((size_t)b * T + i) * qrow + (size_t)h * HD;     // (HD,)
    const TG *doi = dout + ((size_t)b * T + i) * qrow + (size_t)h * HD; // (HD,)
    float qr[ATT_MAXE], dor[ATT_MAXE];
#pragma unroll
    for (int e = 0; e < ATT_MAXE; e++) {
        const int d = lane + 32 * e;
        qr[e] = d < HD ? load_f32(qi[d]) : 0.0f;
        dor[e] = d < HD ? load_f32(doi[d]) : 0.0f;
    }
    // scores and dp of the visible keys; -inf and 0 for the others
    for (int j = warp; j < limit; j += ATT_WARPS) {
        const bool vis = att_visible(j, limit, segrow, sq);   // the same for every lane of the warp
        float sd = 0.0f, pd = 0.0f;
        if (vis) {
            const TA *kj = k + ((size_t)b * T + j) * krow + (size_t)g * HD;
            const TA *vj = v + ((size_t)b * T + j) * krow + (size_t)g * HD;
#pragma unroll
            for (int e = 0; e < ATT_MAXE; e++) {
                const int d = lane + 32 * e;
                if (d < HD) {
                    sd += qr[e] * load_f32(kj[d]);
                    pd += dor[e] * load_f32(vj[d]);
                }
            }
            sd = warp_total(sd);
            pd = warp_total(pd);
        }
        if (lane == 0) {
            s_row[j] = vis ? sd * scale : -INFINITY;
            dp_row[j] = vis ? pd : 0.0f;
        }
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) mx = fmaxf(mx, s_row[j]);
    mx = block_max(mx, red);                          // finite: a query always sees itself
    double l = 0.0;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) l += exp((double)(s_row[j] - mx));
    l = block_total(l, redd);
    const float lse = (float)((double)mx + log(l));
    double Dd = 0.0;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) Dd += (double)expf(s_row[j] - lse) * dp_row[j];
    const float D = (float)block_total(Dd, redd);
    __syncthreads();
    for (int j = threadIdx.x; j < limit; j += blockDim.x) {
        const float p = expf(s_row[j] - lse);         // 0 for a hidden key
        s_row[j] = p * (dp_row[j] - D);               // ds_ij
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const size_t st = ((size_t)b * NH + h) * T + i;
        lse_out[st] = lse;
        D_out[st] = D;
    }
    // dq_i = scale sum_j ds_ij k_j: warp w sums its keys j = w, w + W, ...
    float acc[ATT_MAXE];
#pragma unroll
    for (int e = 0; e < ATT_MAXE; e++) acc[e] = 0.0f;
    for (int j = warp; j < limit; j += ATT_WARPS) {
        const float ds = s_row[j];
        if (ds == 0.0f) continue;                     // hidden keys (and exact zeros) add nothing
        const TA *kj = k + ((size_t)b * T + j) * krow + (size_t)g * HD;
#pragma unroll
        for (int e = 0; e < ATT_MAXE; e++) {
            const int d = lane + 32 * e;
            if (d < HD) acc[e] += ds * load_f32(kj[d]);
        }
    }
#pragma unroll
    for (int e = 0; e < ATT_MAXE; e++) part[warp][lane + 32 * e] = acc[e];
    __syncthreads();
    TG *dqi = dq + ((size_t)b * T + i) * qrow + (size_t)h * HD;   // (HD,)
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float s = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) s += part[w][d];
        store_f32(&dqi[d], load_f32(dqi[d]) + scale * s);
    }
}

template <typename TA, typename TG>
static __global__ void attention_bwd_kv_kernel(TG *dk, TG *dv, const float *lse_in, const float *D_in, const TG *dout,
                                               const TA *q, const TA *k, const TA *v, const int32_t *seg,
                                               const int32_t *reach, int T, int NH, int NKV, int HD, float scale) {
    __shared__ float pk[ATT_WARPS][32 * ATT_MAXE], pv[ATT_WARPS][32 * ATT_MAXE];
    const int j = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
    if (j >= T) return;
    const int G = NH / NKV, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t qrow = (size_t)NH * HD, krow = (size_t)NKV * HD;
    const int32_t *segrow = seg ? seg + (size_t)b * T : NULL, *reachrow = reach ? reach + (size_t)b * T : NULL;
    const TA *kj = k + ((size_t)b * T + j) * krow + (size_t)g * HD;   // (HD,)
    const TA *vj = v + ((size_t)b * T + j) * krow + (size_t)g * HD;   // (HD,)
    float kr[ATT_MAXE], vr[ATT_MAXE], ak[ATT_MAXE], av[ATT_MAXE];
#pragma unroll
    for (int e = 0; e < ATT_MAXE; e++) {
        const int d = lane + 32 * e;
        kr[e] = d < HD ? load_f32(kj[d]) : 0.0f;
        vr[e] = d < HD ? load_f32(vj[d]) : 0.0f;
        ak[e] = av[e] = 0.0f;
    }
    // warp w takes the queries i = w, w + W, ... of every head of the group, heads outer
    for (int r = 0; r < G; r++) {
        const int h = g * G + r;
        for (int i = warp; i < T; i += ATT_WARPS) {
            const int limit = att_limit(reachrow, i, T);
            if (!att_visible(j, limit, segrow, segrow ? segrow[i] : 0)) continue;
            const TA *qi = q + ((size_t)b * T + i) * qrow + (size_t)h * HD;
            const TG *doi = dout + ((size_t)b * T + i) * qrow + (size_t)h * HD;
            float qv[ATT_MAXE], dov[ATT_MAXE], sd = 0.0f, pd = 0.0f;
#pragma unroll
            for (int e = 0; e < ATT_MAXE; e++) {
                const int d = lane + 32 * e;
                qv[e] = d < HD ? load_f32(qi[d]) : 0.0f;
                dov[e] = d < HD ? load_f32(doi[d]) : 0.0f;
                sd += qv[e] * kr[e];
                pd += dov[e] * vr[e];
            }
            sd = warp_total(sd);
            pd = warp_total(pd);
            const size_t st = ((size_t)b * NH + h) * T + i;
            const float p = expf(sd * scale - lse_in[st]);
            const float ds = p * (pd - D_in[st]);
#pragma unroll
            for (int e = 0; e < ATT_MAXE; e++) {
                ak[e] += ds * qv[e];
                av[e] += p * dov[e];
            }
        }
    }
#pragma unroll
    for (int e = 0; e < ATT_MAXE; e++) {
        pk[warp][lane + 32 * e] = ak[e];
        pv[warp][lane + 32 * e] = av[e];
    }
    __syncthreads();
    TG *dkj = dk + ((size_t)b * T + j) * krow + (size_t)g * HD;   // (HD,)
    TG *dvj = dv + ((size_t)b * T + j) * krow + (size_t)g * HD;   // (HD,)
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float sk = 0.0f, sv = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) {
            sk += pk[w][d];
            sv += pv[w][d];
        }
        store_f32(&dkj[d], load_f32(dkj[d]) + scale * sk);
        store_f32(&dvj[d], load_f32(dvj[d]) + sv);
    }
}

extern "C" void attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, DType gdt, const void *q,
                                        const void *k, const void *v, DType adt, const int32_t *seg,
                                        const int32_t *reach, int B, int T, int NH, int NKV, int HD, float scale) {
    NM_CHECK(B >= 0 && T >= 0 && NKV >= 1 && NH % NKV == 0 && HD >= 1 && HD <= 32 * ATT_MAXE,
             "attention_backward_cuda: B=%d T=%d NH=%d NKV=%d HD=%d (HD <= %d on the GPU)", B, T, NH, NKV, HD,
             32 * ATT_MAXE);
    if (B == 0 || T == 0 || NH == 0) return;
    NM_CHECK(T <= 2147483647 / 2 && NH <= 65535 && B <= 65535, "attention_backward_cuda: grid too large");
    const size_t shmem = (size_t)2 * T * sizeof(float);   // one row of scores and dp
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const size_t fixed = sizeof(float) * ATT_THREADS + sizeof(double) * ATT_THREADS +
                         sizeof(float) * ATT_WARPS * 32 * ATT_MAXE;
    NM_CHECK(shmem + fixed <= (size_t)optin,
             "attention_backward_cuda: T=%d needs %zu bytes of shared memory per block, the GPU allows %d", T,
             shmem + fixed, optin);
    float *stats = (float *)cuda_malloc((size_t)2 * B * NH * T * sizeof(float));   // lse, D: (B, NH, T) each
    float *lse = stats, *D = stats + (size_t)B * NH * T;
    with_type(adt, "attention_backward_cuda q,k,v", [&](auto ta) {
        with_type(gdt, "attention_backward_cuda grads", [&](auto tg) {
            using TA = decltype(ta);
            using TG = decltype(tg);
            CUDA_CHECK(cudaFuncSetAttribute(attention_bwd_q_kernel<TA, TG>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem));
            attention_bwd_q_kernel<TA, TG><<<dim3(T, NH, B), ATT_THREADS, shmem>>>(
                (TG *)dq, lse, D, (const TG *)dout, (const TA *)q, (const TA *)k, (const TA *)v, seg, reach, T, NH,
                NKV, HD, scale);
            CUDA_CHECK_LAUNCH();
            attention_bwd_kv_kernel<TA, TG><<<dim3(T, NKV, B), ATT_THREADS>>>(
                (TG *)dk, (TG *)dv, lse, D, (const TG *)dout, (const TA *)q, (const TA *)k, (const TA *)v, seg, reach,
                T, NH, NKV, HD, scale);
            CUDA_CHECK_LAUNCH();
        });
    });
    cuda_free(stats);
}

// ============================================================================
// The fused LM head + cross-entropy (loss.h), chunked over the supervised rows.
//
// The host picks the rows (loss_next_chunk, the same planner the C loss
// uses); per chunk of n rows:
//   xs (n, C) = x[rows]                       gather
//   logits (n, V) f32 = xs @ W^T              cuBLAS, fp32 accumulation and output
//   per row: max, lse (the sum of exp in double), ce = lse - logit[y],
//            dlogits (n, V) = scale w (p (1 + 2 z lse) - onehot), in W's dtype
//   dxs (n, C) = dlogits @ W;  dx[rows] += dxs
//   dW (V, C) += dlogits^T @ xs
// The (n, V) buffers are reused by every chunk; the (N, V) logits never exist.

// C (m, n) = alpha op(A) op(B) + beta C, row-major, A and B in ab, C in cdt,
// fp32 accumulation. cuBLAS is column-major: a row-major (m, n) matrix is a
// column-major (n, m) one, so C^T = op(B)^T op(A)^T is what we ask for.
static void gemm_ex(bool ta, bool tb, int m, int n, int kk, const void *A, int lda, const void *Bm, int ldb,
                    float beta, void *Cm, int ldc, DType ab, DType cdt) {
    const cudaDataType_t tab = ab == DT_BF16 ? CUDA_R_16BF : CUDA_R_32F, tc = cdt == DT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    NM_CHECK((ab == DT_BF16 || ab == DT_F32) && (cdt == DT_BF16 || cdt == DT_F32), "gemm_ex: dtypes %s, %s",
             dtype_name(ab), dtype_name(cdt));
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, kk,
                              &alpha, Bm, tab, ldb, A, tab, lda, &beta, Cm, tc, ldc, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
}

template <typename TX>
static __global__ void gather_rows_kernel(TX *xs, const TX *x, const int32_t *rows, int n, int C) {
    const size_t total = (size_t)n * C;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x)
        xs[e] = x[(size_t)rows[e / C] * C + e % C];
}

template <typename TD, typename TS>
static __global__ void scatter_add_rows_kernel(TD *dx, const TS *dxs, const int32_t *rows, int n, int C) {
    const size_t total = (size_t)n * C;   // the rows of a chunk are distinct: one owner per element
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        TD *d = &dx[(size_t)rows[e / C] * C + e % C];
        store_f32(d, load_f32(*d) + load_f32(dxs[e]));
    }
}

// One block per row: lse (double), the row's ce and lse out, and with dl the
// gradient of the logits. sw = scale * weight of the row.
template <typename TL>
static __global__ void ce_rows_kernel(TL *dl, double *row_lse, double *row_logit_y, const float *logits,
                                      const int32_t *tgt, const float *sw, int n, int V, float z_coef) {
    __shared__ float red[THREADS];
    __shared__ double redd[THREADS];
    const int r = blockIdx.x;
    if (r >= n) return;
    const float *l = logits + (size_t)r * V;   // (V,)
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, l[v]);
    mx = block_max(mx, red);
    double s = 0.0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += exp((double)(l[v] - mx));
    s = block_total(s, redd);
    const double lse = (double)mx + log(s);
    const int y = tgt[r];
    if (threadIdx.x == 0) {
        row_lse[r] = lse;
        row_logit_y[r] = (double)l[y];
    }
    if (!dl) return;
    const float ls = (float)lse, w = sw[r], zf = 1.0f + 2.0f * z_coef * ls;
    TL *d = dl + (size_t)r * V;   // (V,)
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const float g = w * zf * expf(l[v] - ls);
        store_f32(&d[v], v == y ? g - w : g);
    }
}

extern "C" LossStats fused_ce_forward_backward_cuda(const void *x, DType xdt, const void *W, const int32_t *targets,
                                                    const float *weights, int N, int C, int V, int chunk, float scale,
                                                    float z_coef, void *dx, DType dxdt, void *dW, DType dwdt) {
    LossStats st;
    memset(&st, 0, sizeof st);
    NM_CHECK(chunk >= 1 && N >= 0 && C >= 1 && V >= 1, "fused_ce_forward_backward_cuda: chunk=%d N=%d C=%d V=%d",
             chunk, N, C, V);
    const bool grads = dx || dW;
    const size_t es = dtype_size(xdt);
    // the chunk's buffers: logits f32, dlogits and the gathered rows in x's dtype
    float *logits = (float *)cuda_malloc((size_t)chunk * V * sizeof(float));   // (chunk, V)
    void *dl = grads ? cuda_malloc((size_t)chunk * V * es) : NULL;             // (chunk, V)
    void *xs = cuda_malloc((size_t)chunk * C * es);                            // (chunk, C)
    void *dxs = dx ? cuda_malloc((size_t)chunk * C * es) : NULL;               // (chunk, C)
    int32_t *rows_d = (int32_t *)cuda_malloc((size_t)chunk * 2 * sizeof(int32_t));   // rows, then targets
    float *sw_d = (float *)cuda_malloc((size_t)chunk * sizeof(float));
    double *stat_d = (double *)cuda_malloc((size_t)chunk * 2 * sizeof(double));     // lse, logit[y]
    int *rows = (int *)xmalloc((size_t)chunk * sizeof(int));
    int32_t *rt = (int32_t *)xmalloc((size_t)chunk * 2 * sizeof(int32_t));
    float *sw = (float *)xmalloc((size_t)chunk * sizeof(float));
    double *stat = (double *)xmalloc((size_t)chunk * 2 * sizeof(double));
    int n0 = 0, n;
    while ((n = loss_next_chunk(targets, N, V, chunk, &n0, rows)) > 0) {
        for (int r = 0; r < n; r++) {
            rt[r] = rows[r];
            rt[n + r] = targets[rows[r]];
            sw[r] = weights ? scale * weights[rows[r]] : scale;
        }
        cuda_upload(rows_d, rt, (size_t)2 * n * sizeof(int32_t));
        cuda_upload(sw_d, sw, (size_t)n * sizeof(float));
        with_type(xdt, "fused_ce_forward_backward_cuda x", [&](auto tx) {
            using TX = decltype(tx);
            gather_rows_kernel<TX><<<grid_for((size_t)n * C, THREADS), THREADS>>>((TX *)xs, (const TX *)x, rows_d, n,
                                                                                   C);
            CUDA_CHECK_LAUNCH();
            gemm_ex(false, true, n, V, C, xs, C, W, C, 0.0f, logits, V, xdt, DT_F32);   // (n, V) = xs W^T
            ce_rows_kernel<TX><<<n, THREADS>>>((TX *)dl, stat_d, stat_d + n, logits, rows_d + n, sw_d, n, V, z_coef);
            CUDA_CHECK_LAUNCH();
            if (dx) {
                gemm_ex(false, false, n, C, V, dl, V, W, C, 0.0f, dxs, C, xdt, xdt);     // (n, C) = dl W
                with_type(dxdt, "fused_ce_forward_backward_cuda dx", [&](auto td) {
                    using TD = decltype(td);
                    scatter_add_rows_kernel<TD, TX><<<grid_for((size_t)n * C, THREADS), THREADS>>>(
                        (TD *)dx, (const TX *)dxs, rows_d, n, C);
                    CUDA_CHECK_LAUNCH();
                });
            }
            if (dW) gemm_ex(true, false, V, C, n, dl, V, xs, C, 1.0f, dW, C, xdt, dwdt);   // (V, C) += dl^T xs
        });
        cuda_download(stat, stat_d, (size_t)2 * n * sizeof(double));   // waits for the chunk
        // the loss, in row order, as the C loss sums it
        for (int r = 0; r < n; r++) {
            const double w = weights ? (double)weights[rows[r]] : 1.0, lse = stat[r];
            st.ce_sum += w * (lse - stat[n + r]);
            st.z_sum += w * lse * lse;
            st.w_sum += w;
            st.n++;
        }
    }
    cuda_free(logits);
    cuda_free(dl);
    cuda_free(xs);
    cuda_free(dxs);
    cuda_free(rows_d);
    cuda_free(sw_d);
    cuda_free(stat_d);
    free(rows);
    free(rt);
    free(sw);
    free(stat);
    return st;
}

// ============================================================================
// AdamW (adamw.c) on fp32 master weights, m and v, with the bf16 compute copy
// written in the same pass. The operations are adamw.c's, in its order, each
// rounded on its own (__fmul_rn and friends keep nvcc from fusing a multiply
// and an add, which the C build does not do either), so given the same
// gradients a step gives the C step's bits.

template <typename TG, typename TC>
static __global__ void adamw_kernel(float *p, TC *pc, const TG *gr, float *m, float *v, size_t n, float decay,
                                    float b1, float b2, float eps, float step_size, float bc2_sqrt) {
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x) {
        const float gj = load_f32(gr[j]);
        float pj = __fmul_rn(p[j], decay);
        float mj = __fadd_rn(m[j], __fmul_rn(__fsub_rn(1.0f, b1), __fsub_rn(gj, m[j])));
        float vj = __fadd_rn(__fmul_rn(v[j], b2), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, b2), gj), gj));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vj), bc2_sqrt), eps);
        pj = __fsub_rn(pj, __fmul_rn(step_size, __fdiv_rn(mj, denom)));
        p[j] = pj;
        m[j] = mj;
        v[j] = vj;
        if (pc) store_f32(&pc[j], pj);
    }
}

extern "C" void adamw_update_cuda(float *p, void *p_compute, DType cdt, const void *grad, DType gdt, float *m,
                                  float *v, size_t n, float decay, float beta1, float beta2, float eps,
                                  float step_size, float bc2_sqrt) {
    if (n == 0) return;
    NM_CHECK(p && grad && m && v, "adamw_update_cuda: a NULL tensor");
    with_type(gdt, "adamw_update_cuda grad", [&](auto tg) {
        with_type(cdt, "adamw_update_cuda compute copy", [&](auto tc) {
            using TG = decltype(tg);
            using TC = decltype(tc);
            adamw_kernel<TG, TC><<<grid_for(n, THREADS), THREADS>>>(p, (TC *)p_compute, (const TG *)grad, m, v, n,
                                                                    decay, beta1, beta2, eps, step_size, bc2_sqrt);
            CUDA_CHECK_LAUNCH();
        });
    });
}

// The sum of squares of a gradient, in double and a fixed order: NORM_BLOCKS
// blocks, thread t of block k takes the elements k*THREADS + t + i*stride, the
// block sums in a fixed tree, and the host adds the blocks in order.
enum { NORM_BLOCKS = 256 };

template <typename TG> static __global__ void sumsq_kernel(double *part, const TG *g, size_t n) {
    __shared__ double sh[THREADS];
    double s = 0.0;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x) {
        const double x = load_f32(g[j]);
        s += x * x;
    }
    s = block_total(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" double grad_sumsq_cuda(const void *grad, DType gdt, size_t n) {
    if (n == 0) return 0.0;
    double *part_d = (double *)cuda_malloc(NORM_BLOCKS * sizeof(double));
    with_type(gdt, "grad_sumsq_cuda", [&](auto tg) {
        using TG = decltype(tg);
        sumsq_kernel<TG><<<NORM_BLOCKS, THREADS>>>(part_d, (const TG *)grad, n);
        CUDA_CHECK_LAUNCH();
    });
    double part[NORM_BLOCKS], s = 0.0;
    cuda_download(part, part_d, sizeof part);
    cuda_free(part_d);
    for (int k = 0; k < NORM_BLOCKS; k++) s += part[k];
    return s;
}

template <typename TG> static __global__ void scale_kernel(TG *g, size_t n, float f) {
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x)
        store_f32(&g[j], load_f32(g[j]) * f);
}

extern "C" void grad_scale_cuda(void *grad, DType gdt, size_t n, float f) {
    if (n == 0) return;
    with_type(gdt, "grad_scale_cuda", [&](auto tg) {
        using TG = decltype(tg);
        scale_kernel<TG><<<grid_for(n, THREADS), THREADS>>>((TG *)grad, n, f);
        CUDA_CHECK_LAUNCH();
    });
}
