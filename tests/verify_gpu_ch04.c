// verify_gpu_ch04.c: Qwen's one forward on the GPU (ops_cuda.cu under qwen.c) against the C oracle.
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
//   - the training plan at batch 2 with position ids, segments and a reach:
//     the final norm's output on both devices;
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
    Qwen m, mg;                     // the same numbers: m computes on the CPU, mg on the GPU
    make_model(&m, c, 7);
    make_model(&mg, c, 7);
    qwen_to_device(&mg, DEVICE_CUDA);
    const int T = 13, V = c->V, P0 = 5;
    int32_t ids[13];
    Rng r;
    rng_seed(&r, 5, 5);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)rng_below(&r, (uint32_t)V);
    char label[128];

    // the C oracle
    QwenState s;
    qwen_state_init(&s, c, 1, T, 64, false, QWEN_LOGITS_ALL, DEVICE_CPU);
    qwen_forward(&m, &s, ids, 1, T, NULL);
    float *want = qwen_logits(&s);   // (T, V)

    // the same forward (qwen.c's one layer loop) with its state on the GPU
    QwenState g;
    qwen_state_init(&g, c, 1, T, 64, false, QWEN_LOGITS_ALL, DEVICE_CUDA);
    qwen_forward(&mg, &g, ids, 1, T, NULL);
    snprintf(label, sizeof label, "gpu/%s/logits", name);
    check_f32(label, qwen_logits(&g), want, (size_t)T * V, TOL_BF16);

    // KV cache: prefill P0, then one token at a time
    qwen_state_reset(&g);
    float *inc = xmalloc((size_t)T * V * sizeof(float));   // (T, V)
    qwen_forward(&mg, &g, ids, 1, P0, NULL);
    memcpy(inc, qwen_logits(&g), (size_t)P0 * V * sizeof(float));
    for (int t = P0; t < T; t++) {
        qwen_forward(&mg, &g, ids + t, 1, 1, NULL);
        memcpy(inc + (size_t)t * V, qwen_logits(&g), (size_t)V * sizeof(float));
    }
    snprintf(label, sizeof label, "gpu/%s/kv_cache_decode", name);
    check_f32(label, inc, want, (size_t)T * V, TOL_BF16);

    // the training plan on both devices, batch 2, with packed rows (position
    // ids and segments) in row 0 and an image seen both ways (reach) in row 1:
    // every mask the attention kernel applies
    {
        enum { B2 = 2, T2 = 12 };
        int32_t tk[B2 * T2], pos[B2 * T2], seg[B2 * T2], reach[B2 * T2];
        for (int i = 0; i < B2 * T2; i++) tk[i] = (int32_t)rng_below(&r, (uint32_t)V);
        for (int t = 0; t < T2; t++) {   // row 0: a 4-token prefix, then two blocks of 4
            pos[t] = t < 4 ? t : 4 + (t - 4) % 4;
            seg[t] = t < 4 ? 0 : 1 + (t - 4) / 4;
            pos[T2 + t] = t;             // row 1: one sequence
            seg[T2 + t] = 0;
        }
        for (int t = 0; t < B2 * T2; t++) reach[t] = t % T2 + 1;
        for (int t = 2; t < 8; t++) reach[T2 + t] = 8;   // row 1: tokens 2..7 are an image
        QwenState a, b;
        qwen_state_init(&a, c, B2, T2, T2, true, QWEN_LOGITS_NONE, DEVICE_CPU);
        qwen_state_init(&b, c, B2, T2, T2, true, QWEN_LOGITS_NONE, DEVICE_CUDA);
        qwen_embed(&m, &a, tk, B2, T2);
        qwen_forward_embeds(&m, &a, B2, T2, pos, seg, reach, NULL);
        qwen_embed(&mg, &b, tk, B2, T2);
        qwen_forward_embeds(&mg, &b, B2, T2, pos, seg, reach, NULL);
        float *xg = xmalloc((size_t)B2 * T2 * c->C * sizeof(float));
        tensor_to_host_f32(xg, tensor_sub(b.x_final, 0, 1, (int64_t)B2 * T2 * c->C));
        snprintf(label, sizeof label, "gpu/%s/training_plan_masks", name);
        check_f32(label, xg, a.x_final.data, (size_t)B2 * T2 * c->C, TOL_BF16);
        free(xg);
        qwen_state_free(&a);
        qwen_state_free(&b);
    }

    // greedy agreement (information: bf16 may legitimately flip a near tie)
    const int N = 16;
    int a[16], b[16];
    SamplerConfig sc = {.temperature = 0.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};
    Sampler smp;
    QwenState s1, g1;
    qwen_state_init(&s1, c, 1, T, T + N, false, QWEN_LOGITS_LAST, DEVICE_CPU);
    qwen_state_init(&g1, c, 1, T, T + N, false, QWEN_LOGITS_LAST, DEVICE_CUDA);
    Decoder dc = decoder_init(&m, &s1), dg = decoder_init(&mg, &g1);
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
    qwen_state_free(&g1);
    qwen_state_free(&s);
    qwen_state_free(&g);
    qwen_free(&m);
    qwen_free(&mg);
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
