// verify_gpu_ch04.c: the CUDA Qwen forward (qwen_cuda.cu) against the C oracle (qwen.c).
//
// verify_ch04 ties the C forward to transformers; this program ties the GPU
// forward to the C one, on tiny random models of both families (Qwen3 with
// q/k norms and GQA 2, Qwen2 with q/k/v biases and GQA 3), so the chain of
// trust is transformers -> C -> CUDA. Weights are rounded to bf16 before the
// C side sees them, so both run on the same numbers; the GPU also keeps its
// activations in bf16, hence TOL_BF16 (check.h). Checked:
//   - the logits of a 13-token prompt, every position;
//   - the KV cache: a 5-token prefill then one token at a time, each step's
//     logits against the C full forward's row;
//   - how many greedy tokens agree with the C greedy run (printed, `#`).
// Needs a GPU (make verify-gpu); without one it prints FAIL and exits 1.
#include <stdio.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#include "04_qwen/generate.h"
#include "04_qwen/qwen.h"
#include "04_qwen/qwen_cuda.h"

// A random model whose every number is a bf16 value, with random norm weights
// and biases (zeros and ones would hide a misplaced one).
static void make_model(Qwen *m, const QwenConfig *c, uint64_t seed) {
    qwen_init_random(m, c, seed);
    Rng r;
    rng_seed(&r, seed, 99);
    for (int i = 0; i < m->params.n; i++) {
        const TableEntry *e = &m->params.entries[i];
        float *w = table_tensor(&m->params, i).data;
        size_t n = (size_t)tensor_numel(table_tensor(&m->params, i));
        if (e->ndim == 1) {
            bool is_norm = strstr(e->name, "norm") != NULL;
            for (size_t j = 0; j < n; j++) w[j] = (is_norm ? 1.0f : 0.0f) + 0.2f * rng_normal(&r);
        } else {
            for (size_t j = 0; j < n; j++) w[j] *= 2.5f;   // N(0, 0.05): logits of order 1
        }
        for (size_t j = 0; j < n; j++) w[j] = bf16_to_f32(f32_to_bf16(w[j]));
    }
}

static void verify(const char *name, const QwenConfig *c) {
    Qwen m;
    make_model(&m, c, 7);
    const int T = 13, V = c->V, P0 = 5;
    int ids[13];
    Rng r;
    rng_seed(&r, 5, 5);
    for (int i = 0; i < T; i++) ids[i] = (int)rng_below(&r, (uint32_t)V);
    char label[128];

    // the C oracle
    QwenState s;
    qwen_state_init(&s, c, 1, T, 64, false, true);
    qwen_forward(&m, &s, ids, 1, T, NULL);
    float *want = s.logits;   // (T, V)

    // the full forward on the GPU
    QwenCuda *g = qwen_cuda_create(&m, T, 64);
    const float *got = qwen_cuda_forward(g, ids, T, true);
    snprintf(label, sizeof label, "gpu/%s/logits", name);
    check_f32(label, got, want, (size_t)T * V, TOL_BF16);

    // KV cache: prefill P0, then one token at a time
    qwen_cuda_reset(g);
    float *inc = xmalloc((size_t)T * V * sizeof(float));   // (T, V)
    got = qwen_cuda_forward(g, ids, P0, true);
    memcpy(inc, got, (size_t)P0 * V * sizeof(float));
    for (int t = P0; t < T; t++) {
        got = qwen_cuda_forward(g, ids + t, 1, false);
        memcpy(inc + (size_t)t * V, got, (size_t)V * sizeof(float));
    }
    snprintf(label, sizeof label, "gpu/%s/kv_cache_decode", name);
    check_f32(label, inc, want, (size_t)T * V, TOL_BF16);

    // greedy agreement (information: bf16 may legitimately flip a near tie)
    const int N = 16;
    int a[16], b[16];
    SamplerConfig sc = {.temperature = 0.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};
    Sampler smp;
    QwenState s1;
    qwen_state_init(&s1, c, 1, T, T + N, false, false);
    Decoder dc = decoder_cpu(&m, &s1), dg = decoder_cuda(&m, g, T, 64);
    sampler_init(&smp, &sc, V);
    int na = generate(&dc, &smp, ids, T, N, NULL, 0, a, NULL, NULL, NULL);
    sampler_free(&smp);
    sampler_init(&smp, &sc, V);
    int nb = generate(&dg, &smp, ids, T, N, NULL, 0, b, NULL, NULL, NULL);
    sampler_free(&smp);
    int same = 0;
    while (same < na && same < nb && a[same] == b[same]) same++;
    printf("# gpu/%s: greedy decoding, the first %d of %d tokens identical to the C run\n", name, same, N);

    free(inc);
    qwen_state_free(&s1);
    qwen_state_free(&s);
    qwen_cuda_free(g);
    qwen_free(&m);
}

int main(void) {
    if (!cuda_available()) {
        printf("FAIL gpu/cuda no usable CUDA device (or a build without CUDA)\n");
        return 1;
    }
    QwenConfig q3 = qwen_nano_config();
    q3.V = 1000; q3.C = 96; q3.I = 200; q3.L = 3; q3.NH = 6; q3.NKV = 3; q3.HD = 32; q3.tied = false;
    q3.n_eos = 0;
    verify("qwen3", &q3);
    QwenConfig q2 = q3;
    q2.family = QWEN2;
    snprintf(q2.model_type, sizeof q2.model_type, "qwen2");
    q2.qk_norm = false; q2.attn_bias = true; q2.NH = 6; q2.NKV = 2; q2.HD = 16; q2.tied = true;
    q2.rope_theta = 10000.0;
    verify("qwen2", &q2);
    return check_summary("verify_gpu_ch04");
}
