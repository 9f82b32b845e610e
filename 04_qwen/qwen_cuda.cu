// qwen_cuda.cu: the Qwen forward (prefill and decode, batch 1) on a GPU, bf16 with fp32 math.
//
// The host code is qwen_forward() of qwen.c line for line; only where the
// numbers live changes. Storage is bf16 (weights, activations, KV cache),
// except the residual stream, which stays fp32: it is summed into 2L times, and
// keeping it wide costs one small buffer. Inside every kernel the arithmetic is
// fp32: sums of squares for RMSNorm, the attention scores and softmax, silu.
// Linear layers are cuBLAS GEMMs through chapter 01's matmul_forward_cuda.
//
// The kernels, each the twin of a C function:
//   embed_kernel        the embedding gather                 (memcpy loop in qwen_forward)
//   rmsnorm_kernel      one block per row                     (rmsnorm_forward)
//   rope_kernel         in place, angles from inv_freq        (rope_tables + rope_forward)
//   attention_kernel    one block per (query, head), GQA,     (attention_forward_cpu)
//                       scores in a global scratch row
//   swiglu_kernel, residual_kernel                            (swiglu_forward, residual_forward)
//
// What it does not do: batches > 1, the backward, flash attention (a later
// chapter's kernel; this one is written to be checked, not to be fastest).
//
// Shape letters: T tokens of a call, Tcap cache positions, C width, I MLP width,
// NH heads, NKV kv heads, HD head dim, QD = NH*HD, KD = NKV*HD, V vocabulary.
#include "01_tensor/cuda_common.h"

extern "C" {
#include "01_tensor/matmul.h"
#include "04_qwen/qwen_cuda.h"
}

#include <float.h>

typedef __nv_bfloat16 bf16;

// ----------------------------------------------------------------------------
// Kernels

// h (T, C) f32 = embed[tokens[t]] (V, C) bf16
__global__ void embed_kernel(float *h, const bf16 *embed, const int *tokens, int T, int C) {
    size_t n = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C, c = i % C;
        h[i] = __bfloat162float(embed[(size_t)tokens[t] * C + c]);
    }
}

// Sum of one float per thread across the block (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();   // part[] may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    v = lane < nw ? part[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    v = lane < nw ? part[lane] : -FLT_MAX;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// out (R, C) = in (R, C) * rsqrt(mean(in^2) + eps) * w (C); one block per row.
// `in` is the f32 residual stream or a bf16 head (in place for q/k norms).
template <typename Tin>
__global__ void rmsnorm_kernel(bf16 *out, const Tin *in, const bf16 *w, int R, int C, float eps) {
    int r = blockIdx.x;
    if (r >= R) return;
    const Tin *x = in + (size_t)r * C;   // (C,)
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = load_f32(x[c]);
        ss += v * v;
    }
    ss = block_sum(ss);
    float rs = rsqrtf(ss / C + eps);
    bf16 *y = out + (size_t)r * C;       // (C,)
    for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = __float2bfloat16_rn(load_f32(w[c]) * (load_f32(x[c]) * rs));
}

// x (T, H, HD) bf16 rotated in place, positions pos0 .. pos0+T-1 (rotate_half layout).
__global__ void rope_kernel(bf16 *x, const float *inv_freq, int T, int H, int HD, int pos0) {
    int half = HD / 2;
    size_t n = (size_t)T * H * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % half);
        size_t row = i / half;                 // (t, h)
        int t = (int)(row / H);
        float a = (float)(pos0 + t) * inv_freq[d];
        float c = cosf(a), s = sinf(a);
        bf16 *xr = x + row * HD;               // (HD,)
        float x1 = __bfloat162float(xr[d]), x2 = __bfloat162float(xr[d + half]);
        xr[d] = __float2bfloat16_rn(x1 * c - x2 * s);
        xr[d + half] = __float2bfloat16_rn(x2 * c + x1 * s);
    }
}

// out (T, NH, HD) = causal softmax(q k^T * scale) v for queries at pos0 + t,
// keys/values (Tcap, NKV, HD) of which the first pos0+t+1 are visible.
// One block per (t, h); scores (T*NH, Tcap) is global scratch.
__global__ void attention_kernel(bf16 *out, float *scores, const bf16 *q, const bf16 *kc, const bf16 *vc, int T,
                                 int NH, int NKV, int HD, int Tcap, int pos0, float scale) {
    int t = blockIdx.x / NH, h = blockIdx.x % NH;
    int g = h / (NH / NKV);                      // the kv head this query head reads
    int nk = pos0 + t + 1;                       // visible keys
    const bf16 *qi = q + ((size_t)t * NH + h) * HD;   // (HD,)
    float *s = scores + (size_t)blockIdx.x * Tcap;    // (Tcap,)
    float mx = -FLT_MAX;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        const bf16 *kj = kc + ((size_t)j * NKV + g) * HD;   // (HD,)
        float dot = 0.0f;
        for (int d = 0; d < HD; d++) dot += __bfloat162float(qi[d]) * __bfloat162float(kj[d]);
        dot *= scale;
        s[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float p = expf(s[j] - mx);
        s[j] = p;
        sum += p;
    }
    sum = block_sum(sum);   // its __syncthreads also makes every s[j] visible to the block
    float inv = 1.0f / sum;
    bf16 *oi = out + ((size_t)t * NH + h) * HD;       // (HD,)
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < nk; j++) acc += s[j] * __bfloat162float(vc[((size_t)j * NKV + g) * HD + d]);
        oi[d] = __float2bfloat16_rn(acc * inv);
    }
}

// act (n) = silu(gate) * up
__global__ void swiglu_kernel(bf16 *act, const bf16 *gate, const bf16 *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = __bfloat162float(gate[i]);
        act[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * __bfloat162float(up[i]));
    }
}

// h (n) f32 += x (n) bf16
__global__ void residual_kernel(float *h, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        h[i] += __bfloat162float(x[i]);
}

// ----------------------------------------------------------------------------
// The model on the device

struct QwenCuda {
    QwenConfig cfg;
    const Qwen *m;           // the host model (for its table layout)
    int Tmax, Tcap, pos;
    bf16 *params;            // every parameter, bf16, same element offsets as the host table
    float *inv_freq;         // (HD/2)
    int *tokens;             // (Tmax)
    float *h;                // (Tmax, C) residual stream, f32
    bf16 *xn;                // (Tmax, C)
    bf16 *q, *k, *v, *att;   // (Tmax, QD), (Tmax, KD), (Tmax, KD), (Tmax, QD)
    bf16 *tmp;               // (Tmax, C)
    bf16 *gate, *up, *act;   // (Tmax, I)
    bf16 *kcache, *vcache;   // (L, Tcap, KD)
    float *scores;           // (Tmax * NH, Tcap)
    bf16 *logits16;          // (Tmax, V)
    float *logits32;         // (Tmax, V) device
    float *logits_host;      // (Tmax, V)
};

// The device copy of a host parameter pointer (NULL stays NULL).
static const bf16 *dev(const QwenCuda *g, const float *host) {
    if (!host) return NULL;
    return g->params + (host - (const float *)g->m->params.buffer);
}

static const unsigned THREADS = 256;

extern "C" QwenCuda *qwen_cuda_create(const Qwen *m, int Tmax, int Tcap) {
    NM_CHECK(cuda_available(), "--device cuda: no usable GPU (%s)", cuda_unavailable_reason());
    NM_CHECK(Tmax >= 1 && Tcap >= Tmax, "qwen_cuda_create: Tmax=%d Tcap=%d", Tmax, Tcap);
    QwenCuda *g = (QwenCuda *)xcalloc(1, sizeof *g);
    const QwenConfig *c = &m->cfg;
    g->cfg = *c;
    g->m = m;
    g->Tmax = Tmax;
    g->Tcap = Tcap;
    // The host table's buffer holds each tensor at a 64-byte aligned offset;
    // converting the whole buffer keeps the same element offsets in bf16.
    g->params = (bf16 *)cuda_upload_as((const float *)m->params.buffer, m->params.nbytes / sizeof(float), DT_BF16);
    g->inv_freq = (float *)cuda_upload_as(m->inv_freq, (size_t)c->HD / 2, DT_F32);
    size_t C = c->C, I = c->I, QD = (size_t)c->NH * c->HD, KD = (size_t)c->NKV * c->HD, V = c->V;
    size_t T = Tmax;
    g->tokens = (int *)cuda_malloc(T * sizeof(int));
    g->h = (float *)cuda_malloc(T * C * sizeof(float));
    g->xn = (bf16 *)cuda_malloc(T * C * sizeof(bf16));
    g->q = (bf16 *)cuda_malloc(T * QD * sizeof(bf16));
    g->k = (bf16 *)cuda_malloc(T * KD * sizeof(bf16));
    g->v = (bf16 *)cuda_malloc(T * KD * sizeof(bf16));
    g->att = (bf16 *)cuda_malloc(T * QD * sizeof(bf16));
    g->tmp = (bf16 *)cuda_malloc(T * C * sizeof(bf16));
    g->gate = (bf16 *)cuda_malloc(T * I * sizeof(bf16));
    g->up = (bf16 *)cuda_malloc(T * I * sizeof(bf16));
    g->act = (bf16 *)cuda_malloc(T * I * sizeof(bf16));
    g->kcache = (bf16 *)cuda_malloc((size_t)c->L * Tcap * KD * sizeof(bf16));
    g->vcache = (bf16 *)cuda_malloc((size_t)c->L * Tcap * KD * sizeof(bf16));
    g->scores = (float *)cuda_malloc(T * c->NH * (size_t)Tcap * sizeof(float));
    g->logits16 = (bf16 *)cuda_malloc(T * V * sizeof(bf16));
    g->logits32 = (float *)cuda_malloc(T * V * sizeof(float));
    g->logits_host = (float *)xmalloc(T * V * sizeof(float));
    return g;
}

extern "C" void qwen_cuda_free(QwenCuda *g) {
    if (!g) return;
    void *bufs[] = {g->params, g->inv_freq, g->tokens, g->h, g->xn, g->q, g->k, g->v, g->att, g->tmp, g->gate,
                    g->up, g->act, g->kcache, g->vcache, g->scores, g->logits16, g->logits32};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) cuda_free(bufs[i]);
    free(g->logits_host);
    free(g);
}

extern "C" void qwen_cuda_reset(QwenCuda *g) { g->pos = 0; }

extern "C" const float *qwen_cuda_forward(QwenCuda *g, const int *tokens, int T, bool all_logits) {
    const QwenConfig *c = &g->cfg;
    const Qwen *m = g->m;
    const int C = c->C, I = c->I, NH = c->NH, NKV = c->NKV, HD = c->HD, V = c->V;
    const int QD = NH * HD, KD = NKV * HD, pos0 = g->pos;
    NM_CHECK(T >= 1 && T <= g->Tmax, "qwen_cuda_forward: T=%d, at most %d", T, g->Tmax);
    NM_CHECK(pos0 + T <= g->Tcap, "qwen_cuda_forward: %d + %d positions exceed the cache of %d", pos0, T, g->Tcap);
    for (int i = 0; i < T; i++)
        NM_CHECK(tokens[i] >= 0 && tokens[i] < V, "qwen_cuda_forward: token id %d out of range", tokens[i]);
    cuda_upload(g->tokens, tokens, (size_t)T * sizeof(int));
    const size_t TC = (size_t)T * C;
    const float scale = (float)(1.0 / sqrt((double)HD));
    const unsigned norm_threads = 128;

    embed_kernel<<<grid_for(TC, THREADS), THREADS>>>(g->h, dev(g, m->embed), g->tokens, T, C);
    CUDA_CHECK_LAUNCH();
    for (int l = 0; l < c->L; l++) {
        const QwenLayer *w = &m->layers[l];
        bf16 *kc = g->kcache + (size_t)l * g->Tcap * KD;   // (Tcap, NKV, HD)
        bf16 *vc = g->vcache + (size_t)l * g->Tcap * KD;   // (Tcap, NKV, HD)

        // ---- attention half ----
        rmsnorm_kernel<float><<<T, norm_threads>>>(g->xn, g->h, dev(g, w->ln1), T, C, c->eps);
        CUDA_CHECK_LAUNCH();
        matmul_forward_cuda(g->q, g->xn, dev(g, w->wq), dev(g, w->bq), T, C, QD, DT_BF16);
        matmul_forward_cuda(g->k, g->xn, dev(g, w->wk), dev(g, w->bk), T, C, KD, DT_BF16);
        matmul_forward_cuda(g->v, g->xn, dev(g, w->wv), dev(g, w->bv), T, C, KD, DT_BF16);
        if (c->qk_norm) {
            rmsnorm_kernel<bf16><<<T * NH, norm_threads>>>(g->q, g->q, dev(g, w->q_norm), T * NH, HD, c->eps);
            CUDA_CHECK_LAUNCH();
            rmsnorm_kernel<bf16><<<T * NKV, norm_threads>>>(g->k, g->k, dev(g, w->k_norm), T * NKV, HD, c->eps);
            CUDA_CHECK_LAUNCH();
        }
        rope_kernel<<<grid_for((size_t)T * NH * HD / 2, THREADS), THREADS>>>(g->q, g->inv_freq, T, NH, HD, pos0);
        CUDA_CHECK_LAUNCH();
        rope_kernel<<<grid_for((size_t)T * NKV * HD / 2, THREADS), THREADS>>>(g->k, g->inv_freq, T, NKV, HD, pos0);
        CUDA_CHECK_LAUNCH();
        // batch 1: the T new rows of k and v are one contiguous block of the cache
        cuda_copy(kc + (size_t)pos0 * KD, g->k, (size_t)T * KD * sizeof(bf16));
        cuda_copy(vc + (size_t)pos0 * KD, g->v, (size_t)T * KD * sizeof(bf16));
        attention_kernel<<<T * NH, 128>>>(g->att, g->scores, g->q, kc, vc, T, NH, NKV, HD, g->Tcap, pos0, scale);
        CUDA_CHECK_LAUNCH();
        matmul_forward_cuda(g->tmp, g->att, dev(g, w->wo), dev(g, w->bo), T, QD, C, DT_BF16);
        residual_kernel<<<grid_for(TC, THREADS), THREADS>>>(g->h, g->tmp, TC);
        CUDA_CHECK_LAUNCH();

        // ---- MLP half ----
        rmsnorm_kernel<float><<<T, norm_threads>>>(g->xn, g->h, dev(g, w->ln2), T, C, c->eps);
        CUDA_CHECK_LAUNCH();
        matmul_forward_cuda(g->gate, g->xn, dev(g, w->wg), NULL, T, C, I, DT_BF16);
        matmul_forward_cuda(g->up, g->xn, dev(g, w->wu), NULL, T, C, I, DT_BF16);
        swiglu_kernel<<<grid_for((size_t)T * I, THREADS), THREADS>>>(g->act, g->gate, g->up, (size_t)T * I);
        CUDA_CHECK_LAUNCH();
        matmul_forward_cuda(g->tmp, g->act, dev(g, w->wd), NULL, T, I, C, DT_BF16);
        residual_kernel<<<grid_for(TC, THREADS), THREADS>>>(g->h, g->tmp, TC);
        CUDA_CHECK_LAUNCH();
    }
    // final norm and LM head, for every row or only the last one
    int first = all_logits ? 0 : T - 1, rows = T - first;
    rmsnorm_kernel<float><<<rows, norm_threads>>>(g->xn, g->h + (size_t)first * C, dev(g, m->norm), rows, C, c->eps);
    CUDA_CHECK_LAUNCH();
    matmul_forward_cuda(g->logits16, g->xn, dev(g, m->lm_head), NULL, rows, C, V, DT_BF16);
    cuda_bf16_to_f32(g->logits32, g->logits16, (size_t)rows * V);
    cuda_download(g->logits_host, g->logits32, (size_t)rows * V * sizeof(float));
    g->pos = pos0 + T;
    return g->logits_host;
}
