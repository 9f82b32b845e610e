// verify_gpu_ch02.c: the ViT's one forward on a GPU (bf16, ops_cuda.cu) against it on the CPU (fp32).
//
//   build/release/tests/verify_gpu_ch02
//
// Two models with seeded random weights: the nano preset (head dim 32) and a
// 2-layer model of ViT-L/14-336's shapes (577 tokens, head dim 64), batch 2,
// the same weights on the CPU and, after vit_to_device, on the GPU, on smooth
// synthetic images. Every hidden state, the pooled output and the Molmo-style feature
// are compared at the bf16 tolerance (bf16 storage, fp32 accumulation vs the
// fp32 oracle). Then a timing line for ViT-L/14-336 shapes (24 layers) at
// batch 1 and 32 (informational; tests never assert on time).
// Without a GPU it prints one FAIL line saying so (it is only run by
// `make verify-gpu`, on a machine that has one).
#include <math.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/matmul.h"
#include "02_vit/vit.h"

static void fill_pixels(float *pix, int B, int S) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    pix[(((size_t)b * 3 + c) * S + y) * S + x] =
                        1.5f * sinf(0.05f * x * (c + 1) + 0.03f * y + b) * cosf(0.02f * (x - y));
}

static void compare(const char *label, VitConfig c, int B) {
    Vit m;
    vit_init_random(&m, &c, 42);
    const int S = c.image_size, T = vit_tokens(&c), C = c.hidden, L = c.layers;
    float *pix = xmalloc(sizeof(float) * (size_t)B * 3 * S * S);      // (B, 3, S, S)
    fill_pixels(pix, B, S);
    size_t nh = (size_t)(L + 1) * B * T * C;
    float *h_cpu = xmalloc(sizeof(float) * nh), *h_gpu = xmalloc(sizeof(float) * nh);   // (L+1, B, T, C)
    float *p_cpu = xmalloc(sizeof(float) * (size_t)B * C), *p_gpu = xmalloc(sizeof(float) * (size_t)B * C);
    vit_forward(&m, pix, B, h_cpu, NULL, NULL, p_cpu);
    Vit g;                  // the same weights, its forward on the GPU
    vit_init_random(&g, &c, 42);
    vit_to_device(&g, DEVICE_CUDA);
    vit_forward(&g, pix, B, h_gpu, NULL, NULL, p_gpu);
    char name[128];
    for (int l = 0; l <= L; l++) {
        snprintf(name, sizeof name, "%s: hidden_states[%d] cuda vs C", label, l);
        size_t n = (size_t)B * T * C;
        check_f32(name, h_gpu + l * n, h_cpu + l * n, n, TOL_BF16);
    }
    snprintf(name, sizeof name, "%s: pooled cuda vs C", label);
    check_f32(name, p_gpu, p_cpu, (size_t)B * C, TOL_BF16);
    // a feature through the early-exit path
    VitFeature f;
    char err[128];
    NM_CHECK(vit_feature_parse(&f, "hidden:1", &c, err, sizeof err) == 0, "%s", err);
    float *feat = xmalloc(sizeof(float) * (size_t)B * T * C);
    vit_forward(&g, pix, B, NULL, &f, feat, NULL);
    snprintf(name, sizeof name, "%s: feature hidden:1 (early exit) cuda vs C", label);
    check_f32(name, feat, h_cpu + (size_t)B * T * C, (size_t)B * T * C, TOL_BF16);
    vit_free(&g);
    free(pix); free(h_cpu); free(h_gpu); free(p_cpu); free(p_gpu); free(feat);
    vit_free(&m);
}

static void timing(int B) {
    VitConfig c = vit_config_large336();
    Vit m;
    vit_init_random(&m, &c, 1);
    const int S = c.image_size;
    float *pix = xmalloc(sizeof(float) * (size_t)B * 3 * S * S);
    fill_pixels(pix, B, S);
    VitFeature f;
    char err[128];
    NM_CHECK(vit_feature_parse(&f, "penultimate", &c, err, sizeof err) == 0, "%s", err);
    float *feat = xmalloc(sizeof(float) * (size_t)B * vit_feature_tokens(&f, &c) * vit_feature_dim(&f, &c));
    float *pooled = xmalloc(sizeof(float) * (size_t)B * c.hidden);
    vit_to_device(&m, DEVICE_CUDA);
    vit_forward(&m, pix, B, NULL, NULL, NULL, pooled);   // warm up
    double t0 = now_seconds();
    int reps = 3;
    for (int r = 0; r < reps; r++) vit_forward(&m, pix, B, NULL, NULL, NULL, pooled);
    double dt = (now_seconds() - t0) / reps;
    printf("# ViT-L/14-336 bf16 CUDA forward (24 layers, incl. host copies), batch %d: %.2f ms, %.1f images/s\n", B,
           dt * 1e3, B / dt);
    free(pix); free(feat); free(pooled);
    vit_free(&m);
}

int main(void) {
    if (!cuda_available()) {
        check_true("verify_gpu_ch02", false, "no CUDA device in this binary or machine");
        return check_summary("verify_gpu_ch02");
    }
    compare("nano", vit_config_nano(), 2);
    VitConfig l2 = vit_config_large336();
    l2.layers = 2;
    compare("L/14-336 shapes, 2 layers", l2, 2);
    timing(1);
    timing(32);
    return check_summary("verify_gpu_ch02");
}
