// vlm.c: the VLM's training pass (see vlm.h).
#include "05_training/vlm.h"

#include <string.h>

#include "02_vit/image.h"
#include "05_training/backward.h"
#include "05_training/train_cuda.h"

void vlm_setup(Vlm *v, int image_id, int B, int T, int loss_chunk, float z_coef) {
    v->image_id = image_id;
    v->n_vis = connector_tokens_out(&v->conn.cfg);
    v->loss_chunk = loss_chunk;
    v->z_coef = z_coef;
    const QwenConfig *c = &v->llm.cfg;
    NM_CHECK(v->conn.cfg.hidden == c->C, "connector output %d != LLM width %d", v->conn.cfg.hidden, c->C);
    lm_init(&v->lm, &v->llm, B, T, !v->freeze_llm);
    if (v->freeze_connector) {   // connector_init made its gradient table; a frozen connector has none
        table_free(&v->conn.grads);
        table_init(&v->conn.grads, "connector grads (frozen: none)");
    }
    // the C loss's workspace; the GPU's lives on the GPU, for the call
    if (v->llm.device == DEVICE_CPU) v->loss_ws = xmalloc(loss_workspace_floats(loss_chunk, c->V, c->C) * sizeof(float));
}

void vlm_free(Vlm *v) {
    lm_free(&v->lm);
    free(v->loss_ws);
    free(v->vis_grad);
    free(v->reach);
    connector_free(&v->conn);
    qwen_free(&v->llm);
    if (v->has_vit) vit_free(&v->vit);
}

void vlm_vit_features(const Vlm *v, const float *pix, int NI, float *feats) {
    NM_CHECK(v->has_vit, "no ViT loaded: features must come from a cache");
    vit_forward(&v->vit, pix, NI, NULL, &v->feat, feats, NULL);
}

void vlm_image_features(const Vlm *v, const Batch *b, const char *images_dir, float *feats) {
    int S = v->vit.cfg.image_size;
    float *pix = xmalloc((size_t)3 * S * S * sizeof(float));   // (3, S, S) one image at a time
    for (int i = 0; i < b->n_images; i++) {
        char *path = xsprintf("%s/%s", images_dir, b->images[i]);
        Image img;
        char err[256];
        if (image_load(&img, path, err, sizeof err) != 0) fail_input(path, "%s", err);
        clip_preprocess(pix, &img, &v->pp);
        image_free(&img);
        vlm_vit_features(v, pix, 1, feats + (size_t)i * v->feat_T * v->feat_D);
        free(path);
    }
    free(pix);
}

void image_reach(int32_t *reach, const bool *visual, int n, int NV) {
    int t = 0;
    while (t < n) {
        if (!visual[t]) {
            reach[t] = t + 1;
            t++;
            continue;
        }
        int e = t;   // the image starting at t ends at e: NV tokens, or where the run stops
        while (e < n && e - t < NV && visual[e]) e++;
        for (int p = t; p < e; p++) reach[p] = e;
        t = e;
    }
}

// A host array of n floats as a Tensor, for copies to and from the model's device.
static Tensor host_floats(float *p, int64_t n) { return tensor_view(p, DT_F32, DEVICE_CPU, 1, &n); }

LossStats vlm_forward_backward(Vlm *v, const Batch *b, const float *feats, float scale, bool backward) {
    const int B = b->B, T = b->T, BT = B * T;
    const QwenConfig *c = &v->llm.cfg;
    const int C = c->C, NV = v->n_vis, NI = b->n_images;
    lm_reserve(&v->lm, B, T);
    // vis (NI, NV, C) = connector(feats), on the host
    const float *vis = NI > 0 ? connector_forward(&v->conn, feats, NI) : NULL;
    // h0 (B, T, C): text rows from E; placeholder rows from vis, in order.
    // ids_text (B*T) is ids with -1 at the visual positions (skipped by the
    // embedding's forward and backward).
    int32_t *ids_text = xmalloc((size_t)BT * sizeof(int32_t));
    int used = 0;   // visual rows consumed
    for (int t = 0; t < BT; t++) {
        bool visual = b->ids[t] == v->image_id && b->mask[t];
        ids_text[t] = visual ? -1 : b->ids[t];
        if (visual) {
            NM_CHECK(used < NI * NV, "more <image> placeholders than visual tokens (%d images x %d)", NI, NV);
            used++;
        }
    }
    NM_CHECK(used == NI * NV, "%d <image> placeholders for %d images x %d visual tokens", used, NI, NV);
    // the visual rows into h0 (on the model's device), a run of placeholders at a time
    Tensor h0 = v->lm.st.h0;   // (B*T, C) f32
    for (int t = 0, k = 0; t < BT;) {
        if (ids_text[t] >= 0) { t++; continue; }
        int e = t;
        while (e < BT && ids_text[e] < 0) e++;
        tensor_copy(tensor_sub(h0, (int64_t)t * C, 1, (int64_t)(e - t) * C),
                    host_floats((float *)vis + (size_t)k * C, (int64_t)(e - t) * C));
        k += e - t;
        t = e;
    }
    qwen_embed(&v->llm, &v->lm.st, ids_text, B, T);
    int32_t *reach = NULL;   // (B, T) with image_bidir: each image's tokens see the whole image
    if (v->image_bidir && NI > 0) {
        if (v->reach_cap < BT) {
            free(v->reach);
            v->reach = xmalloc((size_t)BT * sizeof(int32_t));
            v->reach_cap = BT;
        }
        bool *visual = xmalloc((size_t)T * sizeof(bool));   // (T) one row's visual positions
        for (int r = 0; r < B; r++) {
            for (int t = 0; t < T; t++) visual[t] = ids_text[(size_t)r * T + t] < 0;
            image_reach(v->reach + (size_t)r * T, visual, T, NV);
        }
        free(visual);
        reach = v->reach;
    }
    // position ids and the mask only for packed rows
    qwen_forward_embeds(&v->llm, &v->lm.st, B, T, b->seg ? b->pos : NULL, b->seg, reach, NULL);
    // Nothing learns below a frozen part: with both frozen there is no backward at all.
    backward = backward && !(v->freeze_llm && v->freeze_connector);
    // the loss, fused with the LM head; its backward writes dx_final and dW
    Tensor dxf = {0}, dW = {0};
    if (backward) {
        dxf = tensor_sub(table_get(&v->lm.scratch, "dx_final"), 0, 2, (int64_t)BT, (int64_t)C);
        tensor_zero(dxf);
        dW = lm_grad(&v->lm, v->llm.lm_head);   // empty when the LLM is frozen
    }
    Tensor xf = v->lm.st.x_final;   // (B*T, C) after the final norm
    LossStats st;
    if (xf.device == DEVICE_CPU)
        st = fused_ce_forward_backward(xf.data, v->llm.lm_head.data, b->targets, b->weights, BT, C, c->V,
                                       v->loss_chunk, scale, v->z_coef, dxf.data, dW.data, v->loss_ws);
    else
        st = fused_ce_forward_backward_cuda(xf.data, xf.dtype, v->llm.lm_head.data, b->targets, b->weights, BT, C,
                                            c->V, v->loss_chunk, scale, v->z_coef, dxf.data, DT_F32, dW.data,
                                            DT_F32);
    if (backward) {
        lm_backward(&v->lm, B, T);
        // h0 was assembled from two sources; its gradient goes back to both
        Tensor dh = tensor_sub(table_get(&v->lm.scratch, "dh"), 0, 2, (int64_t)BT, (int64_t)C);
        if (!v->freeze_llm) embedding_backward(lm_grad(&v->lm, v->llm.embed), dh, ids_text);
        if (NI > 0 && !v->freeze_connector) {
            if (v->vis_cap < NI) {
                free(v->vis_grad);
                v->vis_grad = xmalloc((size_t)NI * NV * C * sizeof(float));
                v->vis_cap = NI;
            }
            for (int t = 0, k = 0; t < BT;) {   // the visual rows of dh, a run at a time, to the host
                if (ids_text[t] >= 0) { t++; continue; }
                int e = t;
                while (e < BT && ids_text[e] < 0) e++;
                tensor_copy(host_floats(v->vis_grad + (size_t)k * C, (int64_t)(e - t) * C),
                            tensor_sub(dh, (int64_t)t * C, 1, (int64_t)(e - t) * C));
                k += e - t;
                t = e;
            }
            connector_backward(&v->conn, NULL, v->vis_grad);
        }
    }
    free(ids_text);
    return st;
}
