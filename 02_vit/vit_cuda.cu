// vit_cuda.cu: the frozen CLIP ViT forward on the GPU.
//
// The same forward as vit.c, step for step, with bf16 storage and fp32
// arithmetic: the weights are converted to bf16 once (one buffer, the table's
// layout), every GEMM goes to cuBLAS through chapter 01's matmul_forward_cuda
// (bf16 in and out, fp32 accumulation), and the rest is four small kernels:
//
//   - im2col + the patch GEMM, then `embed`: class token, patches, positions;
//   - `add_layernorm`: x += y, then ln = LayerNorm(x), in one pass over the row
//     (the residual add of one sublayer fused with the norm that opens the next);
//   - `bias_act`: fc1's bias and quick_gelu in one pass over (B, T, I);
//   - `attention`: fused scaled dot-product attention, flash style: each thread
//     owns one query row, keys and values stream through shared memory in tiles
//     of 64 tokens, the softmax is computed online (running max and sum), so the
//     (T, T) score matrix never exists. Written for head dim 64 (CLIP); other
//     head dims up to 128 use the same code with a runtime loop bound.
//
// The residual stream x stays in fp32 (it is only (B, T, C) and it carries the
// sum of all 24 layers); every other activation is bf16.
//
// What it does not do: keep activations (frozen: no backward), TF32, fp8,
// CUDA graphs, multiple streams. It is checked against the C forward by
// tests/verify_gpu_ch02.c. Shape letters as in vit.h.
#include "01_tensor/cuda_common.h"

extern "C" {
#include "01_tensor/matmul.h"
#include "02_vit/vit.h"
}

typedef __nv_bfloat16 bf16;

struct VitCuda {
    VitConfig cfg;
    int max_batch;
    const Vit *host;        // for the host pointers' offsets
    bf16 *params;           // the whole table in bf16, same element offsets as the f32 table
    float *pix;             // (B, 3, S, S)
    bf16 *patches;          // (B, NP, 3 P P)
    bf16 *emb;              // (B, NP, C)
    float *x;               // (B, T, C) residual stream, fp32
    bf16 *ln, *q, *k, *v, *att, *tmp;   // (B, T, C)
    bf16 *h;                // (B, T, I)
    float *pooled;          // (B, C)
    float *host_x;          // (B, T, C) pinned-free host copy for emitting hidden states
};

// The device copy of a host parameter pointer: same element offset.
static const bf16 *dev(const VitCuda *g, const float *host_ptr) {
    return g->params + (host_ptr - (const float *)g->host->params.buffer);
}

// ----------------------------------------------------------------------------
// Kernels

// pix (B, 3, S, S) f32 -> patches (B*NP, 3*P*P) bf16, each patch flattened in
// the conv weight's (channel, row, column) order.
static __global__ void im2col_kernel(bf16 *patches, const float *pix, int B, int S, int P, int G) {
    const int K = 3 * P * P, NP = G * G;
    size_t n = (size_t)B * NP * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int kk = (int)(i % K);
        size_t bp = i / K;
        int p = (int)(bp % NP), b = (int)(bp / NP);
        int ch = kk / (P * P), ky = (kk / P) % P, kx = kk % P;
        int y = (p / G) * P + ky, xx = (p % G) * P + kx;
        patches[i] = __float2bfloat16_rn(pix[(((size_t)b * 3 + ch) * S + y) * S + xx]);
    }
}

// x (B, T, C) = [class ; patch embeddings] + positions
static __global__ void embed_kernel(float *x, const bf16 *emb, const bf16 *cls, const bf16 *pos, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        int t = (int)((i / C) % T);
        int b = (int)(i / ((size_t)T * C));
        float e = t == 0 ? __bfloat162float(cls[c]) : __bfloat162float(emb[((size_t)b * (T - 1) + t - 1) * C + c]);
        x[i] = e + __bfloat162float(pos[(size_t)t * C + c]);
    }
}

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, <= 1024).
static __device__ float block_sum(float v, float *shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads();                 // shared may still be read by a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nw ? shared[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One block per row: if y, x += y first; then out = LayerNorm(x) * w + b.
// x rows are `xstride` floats apart (T*C to pick the class tokens), out rows C.
template <typename TOut>
static __global__ void add_layernorm_kernel(TOut *out, float *x, const bf16 *y, const bf16 *w, const bf16 *b,
                                            int C, size_t xstride, float eps) {
    __shared__ float shared[32];
    float *xr = x + blockIdx.x * xstride;
    const bf16 *yr = y ? y + blockIdx.x * (size_t)C : NULL;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = xr[c];
        if (yr) { v += __bfloat162float(yr[c]); xr[c] = v; }
        s += v;
    }
    float mean = block_sum(s, shared) / C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float d = xr[c] - mean; ss += d * d; }
    float rstd = rsqrtf(block_sum(ss, shared) / C + eps);
    TOut *o = out + blockIdx.x * (size_t)C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        store_f32(&o[c], (xr[c] - mean) * rstd * __bfloat162float(w[c]) + __bfloat162float(b[c]));
}

// x (B, T, C) f32 += y (B, T, C) bf16
static __global__ void residual_kernel(float *x, const bf16 *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] += __bfloat162float(y[i]);
}

// h (N, I) = act(h + bias)
static __global__ void bias_act_kernel(bf16 *h, const bf16 *bias, size_t N, int I, int quick) {
    size_t n = N * I;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = __bfloat162float(h[i]) + __bfloat162float(bias[i % I]);
        v = quick ? v / (1.0f + __expf(-1.702f * v)) : 0.5f * v * (1.0f + erff(v * 0.70710678f));
        h[i] = __float2bfloat16_rn(v);
    }
}

#define ATT_MAX_HD 128

// Fused attention: out (B, T, NH, HD) from q, k, v (B, T, NH, HD), no mask.
// Grid (ceil(T / TILE), NH, B), TILE threads; thread i of a block owns query
// row TILE*blockIdx.x + i. MAXHD bounds the head dim at compile time so that
// q and the accumulator live in registers: <64, 64> is CLIP's case; <128, 32>
// covers any head dim up to 128 (a smaller tile keeps shared memory < 48 KB).
template <int MAXHD, int TILE>
static __global__ void attention_kernel(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, int T, int NH,
                                        int HD, float scale) {
    __shared__ float ks[TILE][MAXHD + 1];     // +1: no bank conflicts on column reads
    __shared__ float vs[TILE][MAXHD + 1];
    const int b = blockIdx.z, h = blockIdx.y, i = blockIdx.x * TILE + threadIdx.x;
    const size_t row = (size_t)NH * HD;           // elements between consecutive tokens
    const bf16 *base_k = k + (size_t)b * T * row + (size_t)h * HD;
    const bf16 *base_v = v + (size_t)b * T * row + (size_t)h * HD;
    float qr[MAXHD], acc[MAXHD];
    const bool active = i < T;
#pragma unroll
    for (int d = 0; d < MAXHD; d++) {
        qr[d] = active && d < HD ? __bfloat162float(q[((size_t)b * T + i) * row + (size_t)h * HD + d]) * scale : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;                // running max and softmax denominator
    for (int j0 = 0; j0 < T; j0 += TILE) {
        int nj = T - j0 < TILE ? T - j0 : TILE;
        __syncthreads();
        for (int e = threadIdx.x; e < TILE * MAXHD; e += blockDim.x) {
            int jj = e / MAXHD, d = e % MAXHD;
            bool in = jj < nj && d < HD;      // zero padding keeps the unrolled loops exact
            ks[jj][d] = in ? __bfloat162float(base_k[(size_t)(j0 + jj) * row + d]) : 0.0f;
            vs[jj][d] = in ? __bfloat162float(base_v[(size_t)(j0 + jj) * row + d]) : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < nj; jj++) {
            float s = 0.0f;
#pragma unroll
            for (int d = 0; d < MAXHD; d++) s += qr[d] * ks[jj][d];
            float m_new = fmaxf(m, s);
            float corr = __expf(m - m_new);       // rescales what was summed under the old max
            float p = __expf(s - m_new);
            l = l * corr + p;
#pragma unroll
            for (int d = 0; d < MAXHD; d++) acc[d] = acc[d] * corr + p * vs[jj][d];
            m = m_new;
        }
    }
    if (active) {
        float inv = 1.0f / l;
        bf16 *o = out + ((size_t)b * T + i) * row + (size_t)h * HD;
#pragma unroll
        for (int d = 0; d < MAXHD; d++)
            if (d < HD) o[d] = __float2bfloat16_rn(acc[d] * inv);
    }
}

static void attention(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, int B, int T, int NH, int HD, float scale) {
    if (HD <= 64) {
        dim3 grid((T + 63) / 64, NH, B);
        attention_kernel<64, 64><<<grid, 64>>>(out, q, k, v, T, NH, HD, scale);
    } else {
        dim3 grid((T + 31) / 32, NH, B);
        attention_kernel<128, 32><<<grid, 32>>>(out, q, k, v, T, NH, HD, scale);
    }
    CUDA_CHECK_LAUNCH();
}

// ----------------------------------------------------------------------------

extern "C" VitCuda *vit_cuda_create(const Vit *m, int max_batch) {
    NM_CHECK(cuda_available(), "vit_cuda_create: no CUDA device");
    const VitConfig *c = &m->cfg;
    NM_CHECK(c->hidden / c->heads <= ATT_MAX_HD, "vit_cuda: head dim %d > %d", c->hidden / c->heads, ATT_MAX_HD);
    VitCuda *g = (VitCuda *)xcalloc(1, sizeof(VitCuda));
    g->cfg = *c;
    g->max_batch = max_batch;
    g->host = m;
    g->params = (bf16 *)cuda_upload_as((const float *)m->params.buffer, m->params.nbytes / sizeof(float), DT_BF16);
    const size_t B = (size_t)max_batch, S = c->image_size, P = c->patch_size, G = vit_grid(c), NP = G * G;
    const size_t T = vit_tokens(c), C = c->hidden, I = c->intermediate;
    g->pix = (float *)cuda_malloc(B * 3 * S * S * sizeof(float));
    g->patches = (bf16 *)cuda_malloc(B * NP * 3 * P * P * sizeof(bf16));
    g->emb = (bf16 *)cuda_malloc(B * NP * C * sizeof(bf16));
    g->x = (float *)cuda_malloc(B * T * C * sizeof(float));
    bf16 **bufs[6] = {&g->ln, &g->q, &g->k, &g->v, &g->att, &g->tmp};
    for (int i = 0; i < 6; i++) *bufs[i] = (bf16 *)cuda_malloc(B * T * C * sizeof(bf16));
    g->h = (bf16 *)cuda_malloc(B * T * I * sizeof(bf16));
    g->pooled = (float *)cuda_malloc(B * C * sizeof(float));
    g->host_x = (float *)xmalloc(B * T * C * sizeof(float));
    return g;
}

extern "C" void vit_cuda_free(VitCuda *g) {
    if (!g) return;
    void *bufs[] = {g->params, g->pix, g->patches, g->emb, g->x, g->ln, g->q, g->k, g->v, g->att, g->tmp, g->h,
                    g->pooled};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) cuda_free(bufs[i]);
    free(g->host_x);
    free(g);
}

// Downloads x and hands hidden state `idx` to whoever asked (as vit.c's emit).
static void emit(VitCuda *g, int idx, int B, float *hidden, const VitFeature *feat, float *features) {
    const VitConfig *c = &g->cfg;
    const int T = vit_tokens(c), C = c->hidden;
    bool want = hidden != NULL;
    if (feat && features) for (int j = 0; j < feat->n; j++) want |= feat->index[j] == idx;
    if (!want) return;
    const size_t n = (size_t)B * T * C;
    cuda_download(g->host_x, g->x, n * sizeof(float));
    if (hidden) memcpy(hidden + (size_t)idx * n, g->host_x, n * sizeof(float));
    if (feat && features) {
        const int Tf = vit_feature_tokens(feat, c), Df = vit_feature_dim(feat, c), skip = feat->drop_cls ? 1 : 0;
        for (int j = 0; j < feat->n; j++) {
            if (feat->index[j] != idx) continue;
            for (int b = 0; b < B; b++)
                for (int t = 0; t < Tf; t++)
                    memcpy(features + ((size_t)b * Tf + t) * Df + (size_t)j * C,
                           g->host_x + ((size_t)b * T + t + skip) * C, sizeof(float) * C);
        }
    }
}

extern "C" void vit_cuda_forward(VitCuda *g, const float *pix, int B, float *hidden, const VitFeature *feat,
                                 float *features, float *pooled) {
    const VitConfig *c = &g->cfg;
    const Vit *m = g->host;
    NM_CHECK(B >= 1 && B <= g->max_batch, "vit_cuda_forward: batch %d outside 1..%d", B, g->max_batch);
    const int S = c->image_size, P = c->patch_size, G = vit_grid(c), NP = G * G, T = vit_tokens(c);
    const int C = c->hidden, I = c->intermediate, NH = c->heads, HD = C / NH, L = c->layers;
    const int BT = B * T;
    int last = (hidden || pooled) ? L : 0;
    if (feat && features) for (int j = 0; j < feat->n; j++) if (feat->index[j] > last) last = feat->index[j];
    const unsigned thr = 256;
    const unsigned ln_threads = C >= 1024 ? 1024 : (unsigned)((C + 31) / 32 * 32);

    cuda_upload(g->pix, pix, (size_t)B * 3 * S * S * sizeof(float));
    size_t npatch = (size_t)B * NP * 3 * P * P;
    im2col_kernel<<<grid_for(npatch, thr), thr>>>(g->patches, g->pix, B, S, P, G);
    CUDA_CHECK_LAUNCH();
    matmul_forward_cuda(g->emb, g->patches, dev(g, m->patch_w), NULL, B * NP, 3 * P * P, C, DT_BF16);
    embed_kernel<<<grid_for((size_t)BT * C, thr), thr>>>(g->x, g->emb, dev(g, m->class_emb), dev(g, m->pos_emb), B, T, C);
    CUDA_CHECK_LAUNCH();
    add_layernorm_kernel<float><<<BT, ln_threads>>>(g->x, g->x, NULL, dev(g, m->pre_w), dev(g, m->pre_b), C, (size_t)C,
                                                    c->eps);
    CUDA_CHECK_LAUNCH();
    emit(g, 0, B, hidden, feat, features);

    const float scale = 1.0f / sqrtf((float)HD);
    for (int l = 0; l < last; l++) {
        const VitLayer *y = &m->layer[l];
        // ln = LN1(x) (the residual add of the previous MLP was done already)
        add_layernorm_kernel<bf16><<<BT, ln_threads>>>(g->ln, g->x, NULL, dev(g, y->ln1_w), dev(g, y->ln1_b), C,
                                                       (size_t)C, c->eps);
        CUDA_CHECK_LAUNCH();
        matmul_forward_cuda(g->q, g->ln, dev(g, y->q_w), dev(g, y->q_b), BT, C, C, DT_BF16);
        matmul_forward_cuda(g->k, g->ln, dev(g, y->k_w), dev(g, y->k_b), BT, C, C, DT_BF16);
        matmul_forward_cuda(g->v, g->ln, dev(g, y->v_w), dev(g, y->v_b), BT, C, C, DT_BF16);
        attention(g->att, g->q, g->k, g->v, B, T, NH, HD, scale);
        matmul_forward_cuda(g->tmp, g->att, dev(g, y->o_w), dev(g, y->o_b), BT, C, C, DT_BF16);
        // x += attention output; ln = LN2(x), one kernel
        add_layernorm_kernel<bf16><<<BT, ln_threads>>>(g->ln, g->x, g->tmp, dev(g, y->ln2_w), dev(g, y->ln2_b), C,
                                                       (size_t)C, c->eps);
        CUDA_CHECK_LAUNCH();
        matmul_forward_cuda(g->h, g->ln, dev(g, y->fc1_w), NULL, BT, C, I, DT_BF16);
        bias_act_kernel<<<grid_for((size_t)BT * I, thr), thr>>>(g->h, dev(g, y->fc1_b), (size_t)BT, I,
                                                                  c->act == VIT_ACT_QUICK_GELU);
        CUDA_CHECK_LAUNCH();
        matmul_forward_cuda(g->tmp, g->h, dev(g, y->fc2_w), dev(g, y->fc2_b), BT, I, C, DT_BF16);
        residual_kernel<<<grid_for((size_t)BT * C, thr), thr>>>(g->x, g->tmp, (size_t)BT * C);
        CUDA_CHECK_LAUNCH();
        emit(g, l + 1, B, hidden, feat, features);
    }
    if (pooled) {
        // post_layernorm of the class tokens: rows T*C apart
        add_layernorm_kernel<float><<<B, ln_threads>>>(g->pooled, g->x, NULL, dev(g, m->post_w), dev(g, m->post_b), C,
                                                       (size_t)T * C, c->eps);
        CUDA_CHECK_LAUNCH();
        cuda_download(pooled, g->pooled, (size_t)B * C * sizeof(float));
    }
    cuda_synchronize();
}
