// verify_gpu_ch01.c: chapter 01's CUDA code checked against the C oracle.
//
// The CPU matmul (matmul.c) is verified against PyTorch by verify_ch01; this
// program verifies the GPU matmul (matmul_cuda.cu) against the CPU one, on the
// same random numbers, so that the chain of trust is PyTorch -> C -> CUDA.
// It needs a GPU and runs in `make verify-gpu` (tests/gpu.sh).
//
// What is checked:
//   - bf16 <-> f32 conversion on the device gives the same bits as dtype.h;
//   - forward with and without bias, and backward, in f32 and in bf16, at
//     sizes from 1x1x1 to 4096x1024x1024, odd ones included (cuBLAS takes other
//     code paths when rows are not a multiple of 8 elements);
//   - attention (attention_cuda.cu) through the Tensor-level op on both
//     devices: bidirectional, decoding against a cache with grouped heads,
//     and packed rows with segments and a reach, in f32 and bf16 storage;
//   - backward accumulates: into nonzero gradients, and twice over, with some
//     gradients skipped (NULL) in some calls;
//   - pointers that are only 64-byte aligned (as tensor tables hand them out);
//   - a repeated forward gives the same bits.
// and how fast the bf16 and f32 GEMMs run is printed, not checked (`#` lines).
//
// Tolerances (check.h). Shapes are written M x K x N, as matmul.h orders them.
// Inputs are N(0,1), weights N(0,1/K) as a Linear layer is initialized, so
// outputs are of order 1. In f32 the GPU and the CPU add the same products in
// another order: the forward is TOL_F32, the gradients TOL_GRAD (dweight sums
// up to 257 unscaled products, of size up to 16). In bf16 the oracle runs in
// f32 on the very bf16 values the GPU stores (inputs rounded to bf16 first),
// so the difference is the GPU's final rounding to bf16 (8 significant bits):
// TOL_BF16. How close to the edge: a CPU stand-in for the GPU side that adds
// the products in reverse order reached at most 0.5 of TOL_F32 (the forward at
// 4096x1024x1024, where K=1024 and 4M outputs), 0.16 of TOL_GRAD and 0.2 of
// TOL_BF16 (the worst element's error over what its tolerance allows).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "01_tensor/attention.h"
#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/dtype.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#ifdef NM_CUDA
#include "01_tensor/cuda_util.h"
#endif

#ifndef NM_CUDA

int main(void) {
    printf("FAIL cuda this binary was built without CUDA (no nvcc found, or an ASan build)\n");
    return 1;
}

#else

static Rng rng;

static float *host_normal(size_t n, float std) {
    float *x = xmalloc(n * sizeof(float));
    rng_fill_normal(&rng, x, n, 0.0f, std);
    return x;
}

static float *host_copy(const float *x, size_t n) {
    float *y = xmalloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// Makes every value one that bf16 can hold, so that the f32 oracle sees
// exactly the numbers the GPU stores.
static void round_to_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}

// A device copy of host[n] stored as dt, starting `offset` bytes into its
// allocation (0, or 64 to mimic a tensor-table entry).
typedef struct {
    void *base;  // what cuda_malloc returned
    void *ptr;   // the data: base + offset
} DevBuf;

static DevBuf dev_put(const float *host, size_t n, DType dt, size_t offset) {
    DevBuf b;
    void *tmp = cuda_upload_as(host, n, dt);
    if (offset == 0) {
        b.base = b.ptr = tmp;
        return b;
    }
    b.base = cuda_malloc(n * dtype_size(dt) + offset);
    b.ptr = (char *)b.base + offset;
    cuda_copy(b.ptr, tmp, n * dtype_size(dt));
    cuda_synchronize();
    cuda_free(tmp);
    return b;
}

static float *dev_get(DevBuf b, size_t n, DType dt) {
    float *x = xmalloc(n * sizeof(float));
    cuda_download_f32(x, b.ptr, n, dt);
    return x;
}

// ---------------------------------------------------------------------------
// bf16 conversion on the device, bit for bit against dtype.h

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_conversion(void) {
    // Hand-picked values first: ties (exactly half-way between two bf16
    // numbers) that must round to the even neighbour, the largest floats
    // (which round to infinity), infinities, subnormals. NaNs last: their
    // payloads may differ (the hardware makes one canonical NaN), so they
    // are checked only for staying NaN.
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x3f800000u, 0xbf800000u,  // +-0, +-1
        0x3f808000u,                                          // 1 + 2^-8: tie, rounds down to 1 (even)
        0x3f818000u,                                          // tie, rounds up to the even 0x3f82
        0x3f808001u, 0x3f807fffu,                             // just above / below a tie
        0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u,                // largest floats: round to +-inf
        0x7f7f7fffu,                                          // ...but this one to the largest bf16
        0x7f800000u, 0xff800000u,                             // +-inf
        0x00000001u, 0x00008000u, 0x00018000u, 0x007fffffu,   // subnormals (ties included)
        0x80400000u, 0x00800000u,                             // subnormal, smallest normal
    };
    static const uint32_t nans[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fffffffu};
    const size_t n_special = sizeof special / sizeof special[0], n_nan = sizeof nans / sizeof nans[0];
    const size_t n_random = 100000, n_finite = n_special + n_random, n = n_finite + n_nan;

    float *x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n_special; i++) x[i] = bits_f32(special[i]);
    for (size_t i = 0; i < n_random; i++) {
        // random values over many binades: sign * 2^e * (1 + uniform), e in [-40, 40]
        float mant = 1.0f + rng_uniform(&rng);
        int e = (int)rng_below(&rng, 81) - 40;
        x[n_special + i] = (rng_u32(&rng) & 1 ? -1.0f : 1.0f) * ldexpf(mant, e);
    }
    for (size_t i = 0; i < n_nan; i++) x[n_finite + i] = bits_f32(nans[i]);

    uint16_t *want = xmalloc(n * sizeof(uint16_t)), *got = xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) want[i] = f32_to_bf16(x[i]);

    float *d_f32 = cuda_malloc(n * sizeof(float));
    void *d_bf16 = cuda_malloc(n * sizeof(uint16_t));
    cuda_upload(d_f32, x, n * sizeof(float));
    cuda_f32_to_bf16(d_bf16, d_f32, n);
    cuda_download(got, d_bf16, n * sizeof(uint16_t));
    check_bytes("cuda_f32_to_bf16 = f32_to_bf16 (non-NaN)", got, want, n_finite * sizeof(uint16_t));
    bool nan_ok = true;
    for (size_t i = n_finite; i < n; i++) nan_ok &= (got[i] & 0x7f80u) == 0x7f80u && (got[i] & 0x7fu) != 0;
    check_true("cuda_f32_to_bf16 keeps NaN a NaN", nan_ok, "%zu NaN inputs", n_nan);

    // and back: widening is exact, so it must give exactly bf16_to_f32 of the same bits
    float *back = xmalloc(n * sizeof(float));
    uint32_t *back_bits = xmalloc(n * sizeof(uint32_t)), *want_bits = xmalloc(n * sizeof(uint32_t));
    cuda_bf16_to_f32(d_f32, d_bf16, n);
    cuda_download(back, d_f32, n * sizeof(float));
    for (size_t i = 0; i < n_finite; i++) {
        back_bits[i] = f32_bits(back[i]);
        want_bits[i] = f32_bits(bf16_to_f32(want[i]));
    }
    check_bytes("cuda_bf16_to_f32 = bf16_to_f32 (non-NaN)", back_bits, want_bits, n_finite * sizeof(uint32_t));

    cuda_free(d_f32);
    cuda_free(d_bf16);
    free(x), free(want), free(got), free(back), free(back_bits), free(want_bits);
}

// ---------------------------------------------------------------------------
// matmul forward and backward against the oracle

typedef struct {
    int M, K, N;
    bool backward;   // also check the backward (the oracle's cost grows with M*K*N)
    size_t offset;   // byte offset of every device pointer from its allocation
} Case;

static const Case CASES[] = {
    {1, 1, 1, true, 0},          // the smallest
    {7, 127, 13, true, 0},       // every size odd
    {127, 1000, 7, true, 0},     // tall and thin
    {2, 4096, 3, true, 0},       // a long sum into a tiny output (cuBLAS may split K)
    {33, 200, 65, true, 64},     // pointers 64-byte aligned (as in a tensor table), not 256
    {257, 1024, 1024, true, 0},  // a Linear layer of a small model, odd M
    {4096, 1024, 1024, false, 0} // a real batch: forward only, the oracle takes a while
};

static char name_buf[128];
static const char *cname(const Case *c, DType dt, const char *what) {
    snprintf(name_buf, sizeof name_buf, "matmul %s %dx%dx%d %s", dt == DT_BF16 ? "bf16" : "f32", c->M, c->K, c->N,
             what);
    return name_buf;
}

// The three gradients of a matmul backward on the device against the C oracle's.
static void check_grads(const Case *c, DType dt, const char *suffix, const DevBuf d[3], const float *const want[3],
                        const size_t n[3], TolClass tol) {
    static const char *const names[3] = {"dinp", "dweight", "dbias"};
    for (int k = 0; k < 3; k++) {
        char what[32];
        snprintf(what, sizeof what, "%s%s", names[k], suffix);
        float *got = dev_get(d[k], n[k], dt);
        check_f32(cname(c, dt, what), got, want[k], n[k], tol);
        free(got);
    }
}

static void test_matmul(const Case *c, DType dt) {
    const int M = c->M, K = c->K, N = c->N;
    const size_t nI = (size_t)M * K, nW = (size_t)N * K, nO = (size_t)M * N;
    const bool bf16 = dt == DT_BF16;
    const TolClass tol_out = bf16 ? TOL_BF16 : TOL_F32, tol_grad = bf16 ? TOL_BF16 : TOL_GRAD;

    // inp (M,K), weight (N,K), bias (N), dout (M,N), and nonzero starting
    // gradients g_inp (M,K), g_weight (N,K), g_bias (N) to accumulate into.
    float *inp = host_normal(nI, 1.0f), *weight = host_normal(nW, 1.0f / sqrtf((float)K));
    float *bias = host_normal(N, 1.0f), *dout = host_normal(nO, 1.0f);
    float *g_inp = host_normal(nI, 1.0f), *g_weight = host_normal(nW, 1.0f), *g_bias = host_normal(N, 1.0f);
    if (bf16) {
        float *all[] = {inp, weight, bias, dout, g_inp, g_weight, g_bias};
        size_t len[] = {nI, nW, (size_t)N, nO, nI, nW, (size_t)N};
        for (int i = 0; i < 7; i++) round_to_bf16(all[i], len[i]);
    }
    DevBuf d_inp = dev_put(inp, nI, dt, c->offset), d_weight = dev_put(weight, nW, dt, c->offset);
    DevBuf d_bias = dev_put(bias, N, dt, c->offset);
    DevBuf d_out = {cuda_malloc(nO * dtype_size(dt) + c->offset), NULL};
    d_out.ptr = (char *)d_out.base + c->offset;

    // forward, with bias
    float *want = xmalloc(nO * sizeof(float));
    matmul_forward_cpu(want, inp, weight, bias, M, K, N);
    matmul_forward_cuda(d_out.ptr, d_inp.ptr, d_weight.ptr, d_bias.ptr, M, K, N, dt);
    float *got = dev_get(d_out, nO, dt);
    check_f32(cname(c, dt, "out"), got, want, nO, tol_out);
    free(got);

    if (!c->backward) {
        // Same call again: the same bits (cuBLAS is deterministic for a fixed
        // GPU, library and shape; our kernels sum in a fixed order).
        size_t nb = nO * dtype_size(dt);
        void *first = xmalloc(nb), *second = xmalloc(nb);
        cuda_download(first, d_out.ptr, nb);
        matmul_forward_cuda(d_out.ptr, d_inp.ptr, d_weight.ptr, d_bias.ptr, M, K, N, dt);
        cuda_download(second, d_out.ptr, nb);
        check_bytes(cname(c, dt, "out repeated"), second, first, nb);
        free(first), free(second);
    } else {
        // forward without bias, into the buffer that still holds the last
        // result: beta = 0 must ignore it
        matmul_forward_cpu(want, inp, weight, NULL, M, K, N);
        matmul_forward_cuda(d_out.ptr, d_inp.ptr, d_weight.ptr, NULL, M, K, N, dt);
        got = dev_get(d_out, nO, dt);
        check_f32(cname(c, dt, "out no bias"), got, want, nO, tol_out);
        free(got);

        // backward, accumulating into nonzero gradients
        DevBuf d_dout = dev_put(dout, nO, dt, c->offset);
        DevBuf d_gi = dev_put(g_inp, nI, dt, c->offset), d_gw = dev_put(g_weight, nW, dt, c->offset);
        DevBuf d_gb = dev_put(g_bias, N, dt, c->offset);
        float *w_gi = host_copy(g_inp, nI), *w_gw = host_copy(g_weight, nW), *w_gb = host_copy(g_bias, N);
        matmul_backward_cpu(w_gi, w_gw, w_gb, dout, inp, weight, M, K, N);
        matmul_backward_cuda(d_gi.ptr, d_gw.ptr, d_gb.ptr, d_dout.ptr, d_inp.ptr, d_weight.ptr, M, K, N, dt);
        check_grads(c, dt, "", (DevBuf[3]){d_gi, d_gw, d_gb}, (const float *[3]){w_gi, w_gw, w_gb},
                    (size_t[3]){nI, nW, N}, tol_grad);

        // From zero, each gradient requested in two of three calls (NULL in
        // the third): each must come out as twice one backward.
        cuda_zero(d_gi.ptr, nI * dtype_size(dt));
        cuda_zero(d_gw.ptr, nW * dtype_size(dt));
        cuda_zero(d_gb.ptr, N * dtype_size(dt));
        memset(w_gi, 0, nI * sizeof(float));
        memset(w_gw, 0, nW * sizeof(float));
        memset(w_gb, 0, N * sizeof(float));
        matmul_backward_cpu(w_gi, NULL, w_gb, dout, inp, weight, M, K, N);
        matmul_backward_cpu(w_gi, w_gw, w_gb, dout, inp, weight, M, K, N);
        matmul_backward_cpu(NULL, w_gw, NULL, dout, inp, weight, M, K, N);
        matmul_backward_cuda(d_gi.ptr, NULL, d_gb.ptr, d_dout.ptr, d_inp.ptr, d_weight.ptr, M, K, N, dt);
        matmul_backward_cuda(d_gi.ptr, d_gw.ptr, d_gb.ptr, d_dout.ptr, d_inp.ptr, d_weight.ptr, M, K, N, dt);
        matmul_backward_cuda(NULL, d_gw.ptr, NULL, d_dout.ptr, d_inp.ptr, d_weight.ptr, M, K, N, dt);
        check_grads(c, dt, " twice", (DevBuf[3]){d_gi, d_gw, d_gb}, (const float *[3]){w_gi, w_gw, w_gb},
                    (size_t[3]){nI, nW, N}, tol_grad);

        cuda_free(d_dout.base), cuda_free(d_gi.base), cuda_free(d_gw.base), cuda_free(d_gb.base);
        free(w_gi), free(w_gw), free(w_gb);
    }

    cuda_free(d_inp.base), cuda_free(d_weight.base), cuda_free(d_bias.base), cuda_free(d_out.base);
    free(inp), free(weight), free(bias), free(dout), free(g_inp), free(g_weight), free(g_bias), free(want);
}

// ---------------------------------------------------------------------------
// Speed (informational)

// n random numbers on the device as dt. Random rather than zeros: a GPU
// multiplying zeros draws less power and clocks higher, which flatters it.
// ---- attention: the one op both models call, on both devices ---------------
// attention_forward with host tensors (the C oracle) and with device tensors
// (attention_cuda.cu), on inputs rounded to bf16 so both see the same numbers:
// the ViT's case (bidirectional, every head its own kv head), decoding against
// a cache (causal, grouped heads, queries from q_pos0), and packed training
// rows (causal, segments in row 0, an image seen both ways in row 1).
typedef struct {
    const char *name;
    int B, Tq, Tk, Tcap, NH, NKV, HD, q_pos0;
    bool causal, masks;
} AttnCase;

static void test_attention(const AttnCase *c, DType dt) {
    const size_t nq = (size_t)c->B * c->Tq * c->NH * c->HD, nk = (size_t)c->B * c->Tcap * c->NKV * c->HD;
    float *q = host_normal(nq, 1.0f), *k = host_normal(nk, 1.0f), *v = host_normal(nk, 1.0f);
    round_to_bf16(q, nq), round_to_bf16(k, nk), round_to_bf16(v, nk);
    int32_t *seg = NULL, *reach = NULL;   // (B, Tcap)
    if (c->masks) {
        seg = xcalloc((size_t)c->B * c->Tcap, sizeof(int32_t));
        reach = xmalloc((size_t)c->B * c->Tcap * sizeof(int32_t));
        for (int t = 0; t < c->Tcap; t++) {
            seg[t] = t < 8 ? 0 : 1 + (t - 8) / 10;              // row 0: a prefix, then blocks of 10
            reach[t] = t + 1;
            reach[c->Tcap + t] = t >= 4 && t < 20 ? 20 : t + 1;   // row 1: tokens 4..19 an image
        }
    }
    int64_t sq[4] = {c->B, c->Tq, c->NH, c->HD}, sk[4] = {c->B, c->Tcap, c->NKV, c->HD};
    float *want = xmalloc(nq * sizeof(float));
    attention_forward(tensor_view(want, DT_F32, DEVICE_CPU, 4, sq), (Tensor){0}, tensor_view(q, DT_F32, DEVICE_CPU, 4, sq),
                      tensor_view(k, DT_F32, DEVICE_CPU, 4, sk), tensor_view(v, DT_F32, DEVICE_CPU, 4, sk), seg, reach,
                      c->Tk, c->q_pos0, c->causal, 1.0f / sqrtf((float)c->HD));
    void *dq = cuda_upload_as(q, nq, dt), *dk = cuda_upload_as(k, nk, dt), *dv = cuda_upload_as(v, nk, dt);
    void *dout = cuda_upload_as(want, nq, dt);   // overwritten
    int32_t *dseg = NULL, *dreach = NULL;
    if (c->masks) {
        size_t nb = (size_t)c->B * c->Tcap * sizeof(int32_t);
        dseg = cuda_malloc(nb), dreach = cuda_malloc(nb);
        cuda_upload(dseg, seg, nb);
        cuda_upload(dreach, reach, nb);
    }
    attention_forward(tensor_view(dout, dt, DEVICE_CUDA, 4, sq), (Tensor){0}, tensor_view(dq, dt, DEVICE_CUDA, 4, sq),
                      tensor_view(dk, dt, DEVICE_CUDA, 4, sk), tensor_view(dv, dt, DEVICE_CUDA, 4, sk), dseg, dreach,
                      c->Tk, c->q_pos0, c->causal, 1.0f / sqrtf((float)c->HD));
    float *got = xmalloc(nq * sizeof(float));
    cuda_download_f32(got, dout, nq, dt);
    snprintf(name_buf, sizeof name_buf, "attention/%s/%s", c->name, dtype_name(dt));
    // f32 storage still differs from the oracle in the order of the online
    // softmax and in __expf: an fp32 reduction of another order
    check_f32(name_buf, got, want, nq, dt == DT_BF16 ? TOL_BF16 : TOL_F32_DEEP);
    cuda_free(dq), cuda_free(dk), cuda_free(dv), cuda_free(dout), cuda_free(dseg), cuda_free(dreach);
    free(q), free(k), free(v), free(want), free(got), free(seg), free(reach);
}

static const AttnCase ATTN_CASES[] = {
    {"vit_bidirectional", 2, 70, 70, 70, 4, 4, 64, 0, false, false},
    {"decode_gqa_cache", 2, 5, 37, 48, 6, 2, 128, 32, true, false},
    {"packed_seg_reach", 2, 40, 40, 40, 4, 2, 32, 0, true, true},
};

static void *dev_random(size_t n, DType dt) {
    const size_t chunk = (size_t)1 << 20;
    float *block = host_normal(chunk, 1.0f);
    float *f = cuda_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i += chunk) cuda_upload(f + i, block, (n - i < chunk ? n - i : chunk) * sizeof(float));
    free(block);
    if (dt == DT_F32) return f;
    void *b = cuda_malloc(n * sizeof(uint16_t));
    cuda_f32_to_bf16(b, f, n);
    cuda_synchronize();
    cuda_free(f);
    return b;
}

static void bench(int M, int K, int N, DType dt, bool with_bias, bool backward, int iters) {
    const size_t nI = (size_t)M * K, nW = (size_t)N * K, nO = (size_t)M * N;
    void *inp = dev_random(nI, dt), *weight = dev_random(nW, dt), *bias = dev_random(N, dt);
    void *out = dev_random(nO, dt);
    void *dinp = backward ? dev_random(nI, dt) : NULL, *dweight = backward ? dev_random(nW, dt) : NULL;
    void *dbias = backward ? dev_random(N, dt) : NULL;
    // 3 warm-up calls (cuBLAS picks and loads its kernel on the first), then `iters` timed ones
    CudaTimer t = {NULL, NULL};
    for (int it = 0; it < 3 + iters; it++) {
        if (it == 3) t = cuda_timer_start();
        if (backward)
            matmul_backward_cuda(dinp, dweight, dbias, out, inp, weight, M, K, N, dt);
        else
            matmul_forward_cuda(out, inp, weight, with_bias ? bias : NULL, M, K, N, dt);
    }
    double ms = cuda_timer_stop(&t) / iters;
    double flops = (backward ? 4.0 : 2.0) * M * N * K;  // backward: two GEMMs the size of the forward
    printf("# speed: matmul_%s_cuda %-4s %dx%dx%d%s: %8.3f ms, %6.1f TFLOP/s\n", backward ? "backward" : "forward",
           dt == DT_BF16 ? "bf16" : "f32", M, K, N,
           backward ? " (dinp, dweight, dbias)" : with_bias ? " with bias" : "", ms, flops / (ms * 1e-3) / 1e12);
    cuda_free(inp), cuda_free(weight), cuda_free(bias), cuda_free(out);
    cuda_free(dinp), cuda_free(dweight), cuda_free(dbias);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);  // line by line, so a hang or crash still shows how far it got
    if (!cuda_available()) {
        printf("FAIL cuda no CUDA device found: %s\n", cuda_unavailable_reason());
        return 1;
    }
    char buf[512];
    printf("# device: %s\n", cuda_device_summary(buf, sizeof buf));
    rng_seed(&rng, 20251128, 1);

    test_conversion();
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        double t0 = now_seconds();
        test_matmul(&CASES[i], DT_F32);
        test_matmul(&CASES[i], DT_BF16);
        printf("# %dx%dx%d took %.2f s (mostly the CPU oracle)\n", CASES[i].M, CASES[i].K, CASES[i].N,
               now_seconds() - t0);
    }

    for (size_t i = 0; i < sizeof ATTN_CASES / sizeof ATTN_CASES[0]; i++) {
        test_attention(&ATTN_CASES[i], DT_F32);
        test_attention(&ATTN_CASES[i], DT_BF16);
    }

    bench(4096, 1024, 1024, DT_BF16, false, false, 50);
    bench(4096, 1024, 1024, DT_BF16, true, false, 50);
    bench(4096, 1024, 1024, DT_BF16, false, true, 50);
    bench(4096, 1024, 1024, DT_F32, false, false, 10);
    bench(8192, 8192, 8192, DT_BF16, false, false, 10);

    return check_summary("verify_gpu_ch01");
}

#endif
