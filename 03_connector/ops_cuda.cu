// ops_cuda.cu: the connector's ops on the GPU (bf16 or f32 storage, fp32 arithmetic).
//
// One CUDA twin per C op of ops.c, same arguments, same semantics, same "+="
// in every backward; tests/verify_gpu_ch03.c runs both on the same inputs and
// compares (TOL_BF16 for bf16 storage). The kernels are the plain ones: one
// thread per element for the elementwise ops, one thread per (window, head)
// for the 4-key pooling attention (4 keys make a warp-wide reduction pointless),
// one warp per row for softmax. Loads widen to fp32, stores round once.
//
// What it does not do: fusion (the pooling's projections are cuBLAS GEMMs via
// 01_tensor's matmul_*_cuda), or streams other than the default one.
//
// Letters as in ops.h.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "03_connector/ops.h"
}

#define CUDA_CHECK(call)                                                                   \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "error: %s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

// ---- storage types: load widens to fp32, store rounds to nearest even ------------
__device__ __forceinline__ float ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16(v); }

static int blocks_for(size_t n, int threads) { return (int)((n + threads - 1) / threads); }

// ---- GELU (the cancellation-free forms of ops.c) ----------------------------------
__device__ __forceinline__ float gelu_s(float x, int tanh_form) {   // gelu(x) = x * s
    if (tanh_form) {
        float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return 1.0f / (1.0f + expf(-2.0f * u));
    }
    return 0.5f * erfcf(-x * 0.7071067811865476f);
}

template <typename T>
__global__ void gelu_fwd_k(T *out, const T *inp, size_t N, int tanh_form) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float x = ld(inp, i);
    st(out, i, x * gelu_s(x, tanh_form));
}

template <typename T>
__global__ void gelu_bwd_k(T *dinp, const T *dout, const T *inp, size_t N, int tanh_form) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float x = ld(inp, i), s = gelu_s(x, tanh_form), local;
    if (tanh_form) {
        float dudx = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
        local = s + x * 2.0f * s * (1.0f - s) * dudx;
    } else {
        local = s + x * 0.3989422804014327f * expf(-0.5f * x * x);
    }
    st(dinp, i, ld(dinp, i) + ld(dout, i) * local);
}

// ---- SwiGLU -------------------------------------------------------------------------
template <typename T>
__global__ void swiglu_fwd_k(T *out, const T *gate, const T *up, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float g = ld(gate, i);
    st(out, i, g / (1.0f + expf(-g)) * ld(up, i));
}

template <typename T>
__global__ void swiglu_bwd_k(T *dgate, T *dup, const T *dout, const T *gate, const T *up, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float g = ld(gate, i), s = 1.0f / (1.0f + expf(-g)), d = ld(dout, i);
    if (dgate) st(dgate, i, ld(dgate, i) + d * ld(up, i) * (s + g * s * (1.0f - s)));
    if (dup) st(dup, i, ld(dup, i) + d * g * s);
}

// ---- softmax: one warp per row ---------------------------------------------------------
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__global__ void softmax_fwd_k(float *probs, const T *logits, int R, int C) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= R) return;
    const size_t base = (size_t)r * C;
    float mx = -INFINITY;
    for (int i = lane; i < C; i += 32) mx = fmaxf(mx, ld(logits, base + i));
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int i = lane; i < C; i += 32) sum += expf(ld(logits, base + i) - mx);
    float inv = 1.0f / warp_sum(sum);
    for (int i = lane; i < C; i += 32) probs[base + i] = expf(ld(logits, base + i) - mx) * inv;
}

template <typename T>
__global__ void softmax_bwd_k(T *dlogits, const T *dprobs, const float *probs, int R, int C) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= R) return;
    const size_t base = (size_t)r * C;
    float dot = 0.0f;
    for (int i = lane; i < C; i += 32) dot += probs[base + i] * ld(dprobs, base + i);
    dot = warp_sum(dot);
    for (int i = lane; i < C; i += 32)
        st(dlogits, base + i, ld(dlogits, base + i) + probs[base + i] * (ld(dprobs, base + i) - dot));
}

// ---- pooling windows: one thread per (window, channel) ------------------------------------
template <typename T>
__global__ void windows_fwd_k(T *win, T *qin, const T *feat, int B, int GH, int GW, int C) {
    const int PH = (GH + 1) / 2, PW = (GW + 1) / 2, P = PH * PW;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * P * C) return;
    const int c = (int)(idx % C);
    const int m = (int)(idx / C), b = m / P, py = (m % P) / PW, px = m % PW;
    float q = 0.0f;
    for (int j = 0; j < 4; j++) {
        const int y = 2 * py + j / 2, x = 2 * px + j % 2;
        float v = (y < GH && x < GW) ? ld(feat, ((size_t)b * GH * GW + (size_t)y * GW + x) * C + c) : 0.0f;
        st(win, ((size_t)m * 4 + j) * C + c, v);
        q += v;
    }
    st(qin, (size_t)m * C + c, 0.25f * q);
}

template <typename T>
__global__ void windows_bwd_k(T *dfeat, const T *dwin, const T *dqin, int B, int GH, int GW, int C) {
    const int PH = (GH + 1) / 2, PW = (GW + 1) / 2, P = PH * PW;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * P * C) return;
    const int c = (int)(idx % C);
    const int m = (int)(idx / C), b = m / P, py = (m % P) / PW, px = m % PW;
    const float dq = dqin ? 0.25f * ld(dqin, (size_t)m * C + c) : 0.0f;
    for (int j = 0; j < 4; j++) {
        const int y = 2 * py + j / 2, x = 2 * px + j % 2;
        if (y >= GH || x >= GW) continue;
        const size_t f = ((size_t)b * GH * GW + (size_t)y * GW + x) * C + c;
        float g = dq + (dwin ? ld(dwin, ((size_t)m * 4 + j) * C + c) : 0.0f);
        st(dfeat, f, ld(dfeat, f) + g);   // each patch is in exactly one window: no race
    }
}

// ---- the 4-key attention: one thread per (window, head) ----------------------------------
template <typename T>
__global__ void pool_attn_fwd_k(T *out, float *probs, const T *q, const T *k, const T *v, int M, int NH, int HD) {
    int mh = blockIdx.x * blockDim.x + threadIdx.x;
    if (mh >= M * NH) return;
    const int m = mh / NH, h = mh % NH, A = NH * HD;
    const float scale = rsqrtf((float)HD);
    float p[4], mx = -INFINITY, sum = 0.0f;
    for (int j = 0; j < 4; j++) {
        float s = 0.0f;
        for (int d = 0; d < HD; d++) s += ld(q, (size_t)m * A + h * HD + d) * ld(k, ((size_t)m * 4 + j) * A + h * HD + d);
        p[j] = s * scale;
        mx = fmaxf(mx, p[j]);
    }
    for (int j = 0; j < 4; j++) sum += (p[j] = expf(p[j] - mx));
    for (int j = 0; j < 4; j++) probs[(size_t)mh * 4 + j] = (p[j] /= sum);
    for (int d = 0; d < HD; d++) {
        float o = 0.0f;
        for (int j = 0; j < 4; j++) o += p[j] * ld(v, ((size_t)m * 4 + j) * A + h * HD + d);
        st(out, (size_t)m * A + h * HD + d, o);
    }
}

template <typename T>
__global__ void pool_attn_bwd_k(T *dq, T *dk, T *dv, const T *dout, const float *probs, const T *q, const T *k,
                                const T *v, int M, int NH, int HD) {
    int mh = blockIdx.x * blockDim.x + threadIdx.x;
    if (mh >= M * NH) return;
    const int m = mh / NH, h = mh % NH, A = NH * HD;
    const float scale = rsqrtf((float)HD);
    const float *p = probs + (size_t)mh * 4;
    float dp[4], dot = 0.0f;
    for (int j = 0; j < 4; j++) {
        float acc = 0.0f;
        for (int d = 0; d < HD; d++) {
            const size_t vi = ((size_t)m * 4 + j) * A + h * HD + d;
            const float g = ld(dout, (size_t)m * A + h * HD + d);
            acc += g * ld(v, vi);
            if (dv) st(dv, vi, ld(dv, vi) + p[j] * g);
        }
        dp[j] = acc;
        dot += p[j] * acc;
    }
    for (int j = 0; j < 4; j++) {
        const float g = p[j] * (dp[j] - dot) * scale;
        for (int d = 0; d < HD; d++) {
            const size_t qi = (size_t)m * A + h * HD + d, ki = ((size_t)m * 4 + j) * A + h * HD + d;
            if (dq) st(dq, qi, ld(dq, qi) + g * ld(k, ki));
            if (dk) st(dk, ki, ld(dk, ki) + g * ld(q, qi));
        }
    }
}

// ---- C entry points ---------------------------------------------------------------------
#define DISPATCH(dt, CALL_F32, CALL_BF16)                                                   \
    do {                                                                                    \
        if ((dt) == DT_F32) { CALL_F32; }                                                   \
        else if ((dt) == DT_BF16) { CALL_BF16; }                                            \
        else { fprintf(stderr, "error: %s: dtype must be F32 or BF16\n", __func__); exit(1); } \
        CUDA_CHECK(cudaGetLastError());                                                     \
    } while (0)

typedef __nv_bfloat16 bf16;
#define F(p) ((float *)(p))
#define CF(p) ((const float *)(p))
#define H(p) ((bf16 *)(p))
#define CH(p) ((const bf16 *)(p))

extern "C" {

void gelu_forward_cuda(void *out, const void *inp, size_t N, GeluKind kind, DType dt) {
    int nb = blocks_for(N, 256), t = kind == GELU_TANH;
    if (N == 0) return;
    DISPATCH(dt, (gelu_fwd_k<<<nb, 256>>>(F(out), CF(inp), N, t)), (gelu_fwd_k<<<nb, 256>>>(H(out), CH(inp), N, t)));
}

void gelu_backward_cuda(void *dinp, const void *dout, const void *inp, size_t N, GeluKind kind, DType dt) {
    int nb = blocks_for(N, 256), t = kind == GELU_TANH;
    if (N == 0) return;
    DISPATCH(dt, (gelu_bwd_k<<<nb, 256>>>(F(dinp), CF(dout), CF(inp), N, t)),
             (gelu_bwd_k<<<nb, 256>>>(H(dinp), CH(dout), CH(inp), N, t)));
}

void swiglu_forward_cuda(void *out, const void *gate, const void *up, size_t N, DType dt) {
    int nb = blocks_for(N, 256);
    if (N == 0) return;
    DISPATCH(dt, (swiglu_fwd_k<<<nb, 256>>>(F(out), CF(gate), CF(up), N)),
             (swiglu_fwd_k<<<nb, 256>>>(H(out), CH(gate), CH(up), N)));
}

void swiglu_backward_cuda(void *dgate, void *dup, const void *dout, const void *gate, const void *up, size_t N,
                          DType dt) {
    int nb = blocks_for(N, 256);
    if (N == 0) return;
    DISPATCH(dt, (swiglu_bwd_k<<<nb, 256>>>(F(dgate), F(dup), CF(dout), CF(gate), CF(up), N)),
             (swiglu_bwd_k<<<nb, 256>>>(H(dgate), H(dup), CH(dout), CH(gate), CH(up), N)));
}

void softmax_forward_cuda(float *probs, const void *logits, int R, int C, DType dt) {
    int nb = blocks_for((size_t)R, 8);   // 8 warps (rows) per block
    if (R == 0) return;
    DISPATCH(dt, (softmax_fwd_k<<<nb, 256>>>(probs, CF(logits), R, C)),
             (softmax_fwd_k<<<nb, 256>>>(probs, CH(logits), R, C)));
}

void softmax_backward_cuda(void *dlogits, const void *dprobs, const float *probs, int R, int C, DType dt) {
    int nb = blocks_for((size_t)R, 8);
    if (R == 0) return;
    DISPATCH(dt, (softmax_bwd_k<<<nb, 256>>>(F(dlogits), CF(dprobs), probs, R, C)),
             (softmax_bwd_k<<<nb, 256>>>(H(dlogits), CH(dprobs), probs, R, C)));
}

void pool_windows_forward_cuda(void *win, void *qin, const void *feat, int B, int GH, int GW, int C, DType dt) {
    size_t n = (size_t)B * pool_side(GH) * pool_side(GW) * C;
    int nb = blocks_for(n, 256);
    if (n == 0) return;
    DISPATCH(dt, (windows_fwd_k<<<nb, 256>>>(F(win), F(qin), CF(feat), B, GH, GW, C)),
             (windows_fwd_k<<<nb, 256>>>(H(win), H(qin), CH(feat), B, GH, GW, C)));
}

void pool_windows_backward_cuda(void *dfeat, const void *dwin, const void *dqin, int B, int GH, int GW, int C,
                                DType dt) {
    size_t n = (size_t)B * pool_side(GH) * pool_side(GW) * C;
    int nb = blocks_for(n, 256);
    if (n == 0) return;
    DISPATCH(dt, (windows_bwd_k<<<nb, 256>>>(F(dfeat), CF(dwin), CF(dqin), B, GH, GW, C)),
             (windows_bwd_k<<<nb, 256>>>(H(dfeat), CH(dwin), CH(dqin), B, GH, GW, C)));
}

void pool_attention_forward_cuda(void *out, float *probs, const void *q, const void *k, const void *v, int M,
                                 int NH, int HD, DType dt) {
    int nb = blocks_for((size_t)M * NH, 128);
    if (M * NH == 0) return;
    DISPATCH(dt, (pool_attn_fwd_k<<<nb, 128>>>(F(out), probs, CF(q), CF(k), CF(v), M, NH, HD)),
             (pool_attn_fwd_k<<<nb, 128>>>(H(out), probs, CH(q), CH(k), CH(v), M, NH, HD)));
}

void pool_attention_backward_cuda(void *dq, void *dk, void *dv, const void *dout, const float *probs, const void *q,
                                  const void *k, const void *v, int M, int NH, int HD, DType dt) {
    int nb = blocks_for((size_t)M * NH, 128);
    if (M * NH == 0) return;
    DISPATCH(dt,
             (pool_attn_bwd_k<<<nb, 128>>>(F(dq), F(dk), F(dv), CF(dout), probs, CF(q), CF(k), CF(v), M, NH, HD)),
             (pool_attn_bwd_k<<<nb, 128>>>(H(dq), H(dk), H(dv), CH(dout), probs, CH(q), CH(k), CH(v), M, NH, HD)));
}

void *ops_cuda_malloc(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemset(p, 0, bytes ? bytes : 1));
    return p;
}

void ops_cuda_free(void *p) { CUDA_CHECK(cudaFree(p)); }

void ops_cuda_upload(void *dst, const float *src, size_t n, DType dt) {
    if (dt == DT_F32) {
        CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice));
        return;
    }
    uint16_t *h = (uint16_t *)malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) h[i] = f32_to_bf16(src[i]);
    CUDA_CHECK(cudaMemcpy(dst, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
}

void ops_cuda_download(float *dst, const void *src, size_t n, DType dt) {
    CUDA_CHECK(cudaDeviceSynchronize());
    if (dt == DT_F32) {
        CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost));
        return;
    }
    uint16_t *h = (uint16_t *)malloc(n * 2 + 2);
    CUDA_CHECK(cudaMemcpy(h, src, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(h[i]);
    free(h);
}

}   // extern "C"
