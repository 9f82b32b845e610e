// ops_cuda.cu: the CUDA twins of chapter 02's ops (ops.h): LayerNorm, the activation, the residual add,
// im2col and the token assembly.
//
// Kernels and their launchers only: the layer loop that calls them is vit.c's
// one forward, through the Tensor-level ops of ops.c. Storage is bf16 (or
// f32) and the residual stream f32 (it carries the sum of all 24 layers);
// inside every kernel the arithmetic is fp32. Each is checked against its C
// twin by tests/verify_gpu_ch02.c.
//
// Shape letters as in ops.h: B images, S side, P patch, G grid, NP = G*G,
// T = NP + 1, C width, N rows.
#include "01_tensor/cuda_common.h"

extern "C" {
#include "02_vit/ops.h"
}

typedef __nv_bfloat16 bf16;
static const unsigned THREADS = 256;

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

// One block per row: out = LayerNorm(x) * w + b, the biased variance. out may equal x.
template <typename Tx, typename Tout, typename Tw>
static __global__ void layernorm_kernel(Tout *out, const Tx *x, const Tw *w, const Tw *b, int C, float eps) {
    __shared__ float shared[32];
    const Tx *xr = x + blockIdx.x * (size_t)C;
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += load_f32(xr[c]);
    float mean = block_sum(s, shared) / C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float d = load_f32(xr[c]) - mean; ss += d * d; }
    float rstd = rsqrtf(block_sum(ss, shared) / C + eps);
    Tout *o = out + blockIdx.x * (size_t)C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        store_f32(&o[c], (load_f32(xr[c]) - mean) * rstd * load_f32(w[c]) + load_f32(b[c]));
}

template <typename Tx, typename Tout, typename Tw>
static void layernorm_launch(void *out, const void *x, const void *w, const void *b, long N, int C, float eps) {
    layernorm_kernel<Tx, Tout, Tw><<<(unsigned)N, 256>>>((Tout *)out, (const Tx *)x, (const Tw *)w, (const Tw *)b, C,
                                                          eps);
    CUDA_CHECK_LAUNCH();
}

extern "C" void layernorm_forward_cuda(void *out, DType dt, const void *x, DType xdt, const void *w, const void *b,
                                       DType wdt, long N, int C, float eps) {
    if (N == 0) return;
    NM_CHECK(wdt == DT_BF16 || wdt == DT_F32, "layernorm_forward_cuda: weights %s", dtype_name(wdt));
#define LN(TX, TO)                                                                                \
    (wdt == DT_BF16 ? layernorm_launch<TX, TO, bf16>(out, x, w, b, N, C, eps)                     \
                    : layernorm_launch<TX, TO, float>(out, x, w, b, N, C, eps))
    if (xdt == DT_F32 && dt == DT_F32) LN(float, float);
    else if (xdt == DT_F32 && dt == DT_BF16) LN(float, bf16);
    else if (xdt == DT_BF16 && dt == DT_BF16) LN(bf16, bf16);
    else NM_DIE("layernorm_forward_cuda: %s in, %s out", dtype_name(xdt), dtype_name(dt));
#undef LN
}

// x (n) = act(x), in place.
template <typename T>
static __global__ void act_kernel(T *x, size_t n, int quick) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = load_f32(x[i]);
        v = quick ? v / (1.0f + __expf(-1.702f * v)) : 0.5f * v * (1.0f + erff(v * 0.70710678f));
        store_f32(&x[i], v);
    }
}

extern "C" void act_forward_cuda(void *x, size_t n, VitAct act, DType dt) {
    if (n == 0) return;
    int quick = act == VIT_ACT_QUICK_GELU;
    if (dt == DT_BF16) act_kernel<<<grid_for(n, THREADS), THREADS>>>((bf16 *)x, n, quick);
    else if (dt == DT_F32) act_kernel<<<grid_for(n, THREADS), THREADS>>>((float *)x, n, quick);
    else NM_DIE("act_forward_cuda: dtype %s", dtype_name(dt));
    CUDA_CHECK_LAUNCH();
}

// out (n) f32 = a (n) f32 + b (n)
template <typename Tb>
static __global__ void residual_kernel(float *out, const float *a, const Tb *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + load_f32(b[i]);
}

extern "C" void residual_forward_cuda(float *out, const float *a, const void *b, DType bdt, size_t n) {
    if (n == 0) return;
    if (bdt == DT_BF16) residual_kernel<<<grid_for(n, THREADS), THREADS>>>(out, a, (const bf16 *)b, n);
    else if (bdt == DT_F32) residual_kernel<<<grid_for(n, THREADS), THREADS>>>(out, a, (const float *)b, n);
    else NM_DIE("residual_forward_cuda: dtype %s", dtype_name(bdt));
    CUDA_CHECK_LAUNCH();
}

// pix (B, 3, S, S) f32 -> patches (B*NP, 3*P*P), each patch flattened in
// the conv weight's (channel, row, column) order.
template <typename T>
static __global__ void im2col_kernel(T *patches, const float *pix, int B, int S, int P, int G) {
    const int K = 3 * P * P, NP = G * G;
    size_t n = (size_t)B * NP * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int kk = (int)(i % K);
        size_t bp = i / K;
        int p = (int)(bp % NP), b = (int)(bp / NP);
        int ch = kk / (P * P), ky = (kk / P) % P, kx = kk % P;
        int y = (p / G) * P + ky, xx = (p % G) * P + kx;
        store_f32(&patches[i], pix[(((size_t)b * 3 + ch) * S + y) * S + xx]);
    }
}

extern "C" void im2col_forward_cuda(void *patches, DType dt, const float *pix, int B, int S, int P) {
    const int G = S / P;
    size_t n = (size_t)B * G * G * 3 * P * P;
    if (n == 0) return;
    if (dt == DT_BF16) im2col_kernel<<<grid_for(n, THREADS), THREADS>>>((bf16 *)patches, pix, B, S, P, G);
    else if (dt == DT_F32) im2col_kernel<<<grid_for(n, THREADS), THREADS>>>((float *)patches, pix, B, S, P, G);
    else NM_DIE("im2col_forward_cuda: dtype %s", dtype_name(dt));
    CUDA_CHECK_LAUNCH();
}

// x (B, T, C) f32 = [cls ; emb (B, NP, C)] + pos (T, C)
template <typename T>
static __global__ void tokens_kernel(float *x, const T *emb, const T *cls, const T *pos, int B, int Tn, int C) {
    size_t n = (size_t)B * Tn * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        int t = (int)((i / C) % Tn);
        int b = (int)(i / ((size_t)Tn * C));
        float e = t == 0 ? load_f32(cls[c]) : load_f32(emb[((size_t)b * (Tn - 1) + t - 1) * C + c]);
        x[i] = e + load_f32(pos[(size_t)t * C + c]);
    }
}

extern "C" void tokens_forward_cuda(float *x, const void *emb, const void *cls, const void *pos, DType dt, int B,
                                    int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    if (dt == DT_BF16)
        tokens_kernel<<<grid_for(n, THREADS), THREADS>>>(x, (const bf16 *)emb, (const bf16 *)cls, (const bf16 *)pos,
                                                         B, T, C);
    else if (dt == DT_F32)
        tokens_kernel<<<grid_for(n, THREADS), THREADS>>>(x, (const float *)emb, (const float *)cls,
                                                         (const float *)pos, B, T, C);
    else NM_DIE("tokens_forward_cuda: dtype %s", dtype_name(dt));
    CUDA_CHECK_LAUNCH();
}
