// ops_cuda.cu: the CUDA twins of chapter 04's ops (ops.h): RMSNorm, RoPE, the embedding.
//
// Kernels and their launchers only: the layer loop that calls them is qwen.c's
// one forward, through the Tensor-level ops of ops.c. Storage is bf16 (or
// f32), except the residual stream, which stays f32: it is summed into 2L
// times, and keeping it wide costs one small buffer. Inside every kernel the
// arithmetic is fp32: sums of squares for RMSNorm, the rotation.
// Each is checked against its C twin by tests/verify_gpu_ch04.c.
//
// Shape letters: N rows, C width, B batch, T tokens, H heads, HD head dim.
#include "01_tensor/cuda_common.h"

extern "C" {
#include "04_qwen/ops.h"
}

typedef __nv_bfloat16 bf16;
static const unsigned THREADS = 256;

// Sum of one float per thread across the block (blockDim.x a multiple of 32, <= 1024).
static __device__ float block_sum(float v) {
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

// out (N, C) = x * rsqrt(mean(x^2) + eps) * w, one block per row; rstd (N) or
// NULL. x is the f32 residual stream or a bf16 head (in place for q/k norms:
// each thread reads an element before it writes it).
template <typename Tin, typename Tout>
static __global__ void rmsnorm_kernel(Tout *out, float *rstd, const Tin *in, const Tout *w, int N, int C,
                                      float eps) {
    int r = blockIdx.x;
    if (r >= N) return;
    const Tin *x = in + (size_t)r * C;   // (C,)
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = load_f32(x[c]);
        ss += v * v;
    }
    ss = block_sum(ss);
    float rs = 1.0f / sqrtf(ss / C + eps);
    if (rstd && threadIdx.x == 0) rstd[r] = rs;
    Tout *y = out + (size_t)r * C;       // (C,)
    for (int c = threadIdx.x; c < C; c += blockDim.x) store_f32(&y[c], load_f32(w[c]) * (load_f32(x[c]) * rs));
}

template <typename Tin, typename Tout>
static void rmsnorm_launch(void *out, float *rstd, const void *x, const void *w, int N, int C, float eps) {
    rmsnorm_kernel<Tin, Tout><<<N, 128>>>((Tout *)out, rstd, (const Tin *)x, (const Tout *)w, N, C, eps);
    CUDA_CHECK_LAUNCH();
}

extern "C" void rmsnorm_forward_cuda(void *out, float *rstd, const void *x, DType xdt, const void *w, int N, int C,
                                     float eps, DType dt) {
    if (N == 0) return;
    if (xdt == DT_F32 && dt == DT_BF16) rmsnorm_launch<float, bf16>(out, rstd, x, w, N, C, eps);
    else if (xdt == DT_BF16 && dt == DT_BF16) rmsnorm_launch<bf16, bf16>(out, rstd, x, w, N, C, eps);
    else if (xdt == DT_F32 && dt == DT_F32) rmsnorm_launch<float, float>(out, rstd, x, w, N, C, eps);
    else NM_DIE("rmsnorm_forward_cuda: %s in, %s out", dtype_name(xdt), dtype_name(dt));
}

// x (B, T, H, HD) rotated in place by the tables (T, HD/2): rotate_half layout.
template <typename Tx>
static __global__ void rope_kernel(Tx *x, const float *cos_t, const float *sin_t, int B, int T, int H, int HD) {
    int half = HD / 2;
    size_t n = (size_t)B * T * H * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % half);
        size_t row = i / half;                 // (b, t, h)
        int t = (int)((row / H) % T);
        float c = cos_t[(size_t)t * half + d], s = sin_t[(size_t)t * half + d];
        Tx *xr = x + row * HD;                 // (HD,)
        float x1 = load_f32(xr[d]), x2 = load_f32(xr[d + half]);
        store_f32(&xr[d], x1 * c + (-x2) * s);
        store_f32(&xr[d + half], x2 * c + x1 * s);
    }
}

extern "C" void rope_forward_cuda(void *x, const float *cos_t, const float *sin_t, int B, int T, int H, int HD,
                                  DType dt) {
    size_t n = (size_t)B * T * H * (HD / 2);
    if (n == 0) return;
    if (dt == DT_BF16) rope_kernel<<<grid_for(n, THREADS), THREADS>>>((bf16 *)x, cos_t, sin_t, B, T, H, HD);
    else if (dt == DT_F32) rope_kernel<<<grid_for(n, THREADS), THREADS>>>((float *)x, cos_t, sin_t, B, T, H, HD);
    else NM_DIE("rope_forward_cuda: dtype %s", dtype_name(dt));
    CUDA_CHECK_LAUNCH();
}

// h (N, C) f32 = E[ids] for ids >= 0; other rows are left alone.
template <typename Te>
static __global__ void embedding_kernel(float *h, const Te *E, const int32_t *ids, int N, int C) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int32_t id = ids[i / C];
        if (id >= 0) h[i] = load_f32(E[(size_t)id * C + i % C]);
    }
}

extern "C" void embedding_forward_cuda(float *h, const void *E, DType dt, const int32_t *ids, int N, int C) {
    if (N == 0) return;
    int32_t *ids_dev = (int32_t *)cuda_malloc((size_t)N * sizeof(int32_t));   // the ids are the host's
    cuda_upload(ids_dev, ids, (size_t)N * sizeof(int32_t));
    size_t n = (size_t)N * C;
    if (dt == DT_BF16) embedding_kernel<<<grid_for(n, THREADS), THREADS>>>(h, (const bf16 *)E, ids_dev, N, C);
    else if (dt == DT_F32) embedding_kernel<<<grid_for(n, THREADS), THREADS>>>(h, (const float *)E, ids_dev, N, C);
    else NM_DIE("embedding_forward_cuda: dtype %s", dtype_name(dt));
    CUDA_CHECK_LAUNCH();
    cuda_free(ids_dev);   // cudaFree waits for the kernel
}
