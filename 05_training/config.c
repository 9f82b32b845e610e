// config.c: the `key = value` parser (see config.h).
#include "05_training/config.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>

#include "01_tensor/common.h"

void config_defaults(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    c->stage = 1;
    c->batch_size = 4;
    c->grad_accum = 1;
    c->max_steps = 30;
    c->warmup_steps = 3;
    c->lr = 1e-3f;
    c->lr_connector = 1e-3f;
    c->min_lr_ratio = 0.1f;
    c->weight_decay = 0.01f;
    c->beta1 = 0.9f;
    c->beta2 = 0.95f;
    c->adam_eps = 1e-8f;
    c->max_grad_norm = 1.0f;
    c->z_loss = 0.0f;
    c->loss_chunk = 64;
    snprintf(c->loss_weight, sizeof c->loss_weight, "token");
    c->max_seq_len = 256;
    c->truncate = false;
    c->turn_blocks = false;
    c->freeze_vision_encoder = true;
    c->train_connector = true;
    c->train_llm = true;
    snprintf(c->connector, sizeof c->connector, "mlp");
    snprintf(c->vit_feature, sizeof c->vit_feature, "penultimate");
    snprintf(c->vit, sizeof c->vit, "nano");
    snprintf(c->llm, sizeof c->llm, "nano");
    snprintf(c->tokenizer, sizeof c->tokenizer, "data/qwen3/tokenizer.json");
    snprintf(c->llm_vocab, sizeof c->llm_vocab, "preset");
    c->pos_code = false;
    c->pos_ramp = false;
    c->patch_merge = 1;
    c->patch_context = 1;
    snprintf(c->image_attention, sizeof c->image_attention, "causal");
    snprintf(c->init, sizeof c->init, "none");
    c->shuffle = true;
    c->bucket = 0;
    c->pack_len = 0;
    c->seed = 1234;
    c->log_every = 1;
    c->save_every = 0;
}

typedef enum { K_INT, K_FLOAT, K_BOOL, K_STR, K_U64 } Kind;
typedef struct {
    const char *key;
    Kind kind;
    size_t off, size;   // offsetof and (for strings) capacity
    double lo, hi;      // range for numbers
} Key;

#define I(k, lo, hi) {#k, K_INT, offsetof(TrainConfig, k), 0, lo, hi}
#define F(k, lo, hi) {#k, K_FLOAT, offsetof(TrainConfig, k), 0, lo, hi}
#define B(k) {#k, K_BOOL, offsetof(TrainConfig, k), 0, 0, 0}
#define S(k) {#k, K_STR, offsetof(TrainConfig, k), sizeof(((TrainConfig *)0)->k), 0, 0}
static const Key KEYS[] = {
    I(stage, 1, 3), I(batch_size, 1, 1 << 20), I(grad_accum, 1, 1 << 20), I(max_steps, 1, 1e9),
    I(warmup_steps, 0, 1e9), F(lr, 0, 10), F(lr_connector, 0, 10), F(min_lr_ratio, 0, 1),
    F(weight_decay, 0, 10), F(beta1, 0, 0.999999), F(beta2, 0, 0.999999), F(adam_eps, 0, 1),
    F(max_grad_norm, 0, 1e9), F(z_loss, 0, 1), I(loss_chunk, 1, 1 << 20), S(loss_weight), I(max_seq_len, 2, 1 << 24),
    B(truncate), B(turn_blocks), B(freeze_vision_encoder), B(train_connector), B(train_llm), S(connector), S(vit_feature),
    S(vit), S(llm), S(tokenizer), S(llm_vocab), I(patch_merge, 1, 2), I(patch_context, 1, 5), S(image_attention), B(pos_code), B(pos_ramp), S(init), B(shuffle), I(bucket, 0, 1024), I(pack_len, 0, 65536), {"seed", K_U64, offsetof(TrainConfig, seed), 0, 0, 0},
    I(log_every, 1, 1e9), I(save_every, 0, 1e9),
};
#undef I
#undef F
#undef B
#undef S

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

int config_parse(TrainConfig *c, const char *text, char *err, size_t errlen) {
    char *buf = xstrdup(text);
    bool seen[sizeof KEYS / sizeof KEYS[0]] = {0};
    int line = 0, rc = 0;
    char *save = NULL;
    // strtok_r would merge empty lines and lose the count: split by hand
    for (char *p = buf; p && !rc;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        (void)save;
        char *s = trim(p);
        p = nl ? nl + 1 : NULL;
        if (!*s || *s == '#') continue;   // a blank line, a comment line
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "line %d: expected `key = value`, got \"%s\"", line, s);
            rc = -1;
            break;
        }
        *eq = 0;
        char *key = trim(s), *val = trim(eq + 1);
        // a comment after a value starts with a '#' that follows a space: a '#' inside
        // the value is part of it (a path like runs/#3), and so is one that begins it
        for (char *h = val + 1; *val && *h; h++)
            if (*h == '#' && isspace((unsigned char)h[-1])) { *h = 0; val = trim(val); break; }
        int k = -1;
        for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
            if (!strcmp(KEYS[i].key, key)) k = (int)i;
        if (k < 0) {
            snprintf(err, errlen, "line %d: unknown key '%s'", line, key);
            rc = -1;
            break;
        }
        if (seen[k]) {
            snprintf(err, errlen, "line %d: key '%s' given twice", line, key);
            rc = -1;
            break;
        }
        seen[k] = true;
        const Key *K = &KEYS[k];
        void *dst = (char *)c + K->off;
        // numbers are read by common.h's parsers, the flags' own, without their exit:
        // the message below names the line
        bool bad = !*val;
        if (!bad && K->kind == K_INT) {
            int64_t v;
            bad = !parse_whole(val, (int64_t)K->lo, (int64_t)K->hi, &v);
            if (!bad) *(int *)dst = (int)v;
        } else if (!bad && K->kind == K_U64) {
            uint64_t v;
            bad = !parse_whole_u64(val, 0, UINT64_MAX, &v);
            if (!bad) *(uint64_t *)dst = v;
        } else if (!bad && K->kind == K_FLOAT) {
            double v;
            bad = !parse_real(val, K->lo, K->hi, &v);
            if (!bad) *(float *)dst = (float)v;
        } else if (!bad && K->kind == K_BOOL) {
            if (!strcmp(val, "true")) *(bool *)dst = true;
            else if (!strcmp(val, "false")) *(bool *)dst = false;
            else bad = true;
        } else if (!bad) {
            bad = strlen(val) >= K->size;
            if (!bad) snprintf(dst, K->size, "%s", val);
        }
        if (bad) {
            const char *want = K->kind == K_BOOL ? "true or false" : K->kind == K_STR ? "a shorter string" : NULL;
            if (want) snprintf(err, errlen, "line %d: bad value '%s' for '%s' (expected %s)", line, val, key, want);
            else if (K->kind == K_U64) snprintf(err, errlen, "line %d: bad value '%s' for '%s' (expected an unsigned integer)", line, val, key);
            else snprintf(err, errlen, "line %d: bad value '%s' for '%s' (expected a %s in [%g, %g])", line, val,
                          key, K->kind == K_INT ? "whole number" : "number", K->lo, K->hi);
            rc = -1;
        }
    }
    if (!rc) {
        if (strcmp(c->image_attention, "causal") && strcmp(c->image_attention, "bidirectional")) {
            snprintf(err, errlen, "image_attention must be causal or bidirectional (got '%s')", c->image_attention);
            rc = -1;
        } else if (strcmp(c->loss_weight, "token") && strcmp(c->loss_weight, "answer")) {
            snprintf(err, errlen, "loss_weight must be token or answer (got '%s')", c->loss_weight);
            rc = -1;
        } else if (strcmp(c->connector, "linear") && strcmp(c->connector, "mlp") && strcmp(c->connector, "molmo")) {
            snprintf(err, errlen, "connector must be linear, mlp or molmo (got '%s')", c->connector);
            rc = -1;
        } else if (strcmp(c->llm_vocab, "preset") && strcmp(c->llm_vocab, "tokenizer")) {
            snprintf(err, errlen, "llm_vocab must be preset or tokenizer (got '%s')", c->llm_vocab);
            rc = -1;
        } else if (c->patch_context % 2 == 0) {
            snprintf(err, errlen, "patch_context must be odd (1, 3 or 5): a window centred on its token (got %d)",
                     c->patch_context);
            rc = -1;
        } else if (!c->freeze_vision_encoder) {
            snprintf(err, errlen, "freeze_vision_encoder = false is not supported: the ViT has no backward");
            rc = -1;
        } else if ((int64_t)c->batch_size * c->max_seq_len > INT32_MAX) {
            snprintf(err, errlen, "batch_size x max_seq_len is %lld tokens a micro-batch; at most 2^31 - 1",
                     (long long)c->batch_size * c->max_seq_len);
            rc = -1;
        } else if (!c->train_connector && !c->train_llm) {
            snprintf(err, errlen, "train_connector and train_llm are both false: nothing to train");
            rc = -1;
        }
    }
    free(buf);
    return rc;
}

void config_load(TrainConfig *c, const char *path) {
    size_t len;
    const char *ferr;
    char *text = read_file(path, &len, &ferr);
    if (!text) fail_input(path, "%s", ferr);
    if (strlen(text) != len) fail_input(path, "NUL byte in a config file");
    char err[512];
    config_defaults(c);
    if (config_parse(c, text, err, sizeof err) != 0) fail_input(path, "%s", err);
    free(text);
}

void config_set(TrainConfig *c, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq) fail_input("--set", "expected KEY=VALUE, got '%s'", kv);
    char *line = xsprintf("%.*s = %s\n", (int)(eq - kv), kv, eq + 1);
    char err[512];
    if (config_parse(c, line, err, sizeof err) != 0) fail_input("--set", "%s: %s", kv, err);
    free(line);
}

// One key's value as the file writes it.
static void key_value(const Key *K, const TrainConfig *c, char *buf, size_t n) {
    const void *p = (const char *)c + K->off;
    switch (K->kind) {
    case K_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case K_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case K_FLOAT: snprintf(buf, n, "%.9g", (double)*(const float *)p); break;
    case K_BOOL: snprintf(buf, n, "%s", *(const bool *)p ? "true" : "false"); break;
    case K_STR: snprintf(buf, n, "%s", (const char *)p); break;
    }
}

void config_write(const TrainConfig *c, FILE *f) {
    char v[544];
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++) {
        key_value(&KEYS[i], c, v, sizeof v);
        fprintf(f, "%s = %s\n", KEYS[i].key, v);
    }
}

void config_diff(const TrainConfig *a, const TrainConfig *b, char *out, size_t n) {
    char va[544], vb[544];
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++) {
        const char *k = KEYS[i].key;
        if (!strcmp(k, "max_steps") || !strcmp(k, "log_every") || !strcmp(k, "save_every")) continue;
        key_value(&KEYS[i], a, va, sizeof va);
        key_value(&KEYS[i], b, vb, sizeof vb);
        if (strcmp(va, vb) && used + 1 < n) {
            int w = snprintf(out + used, n - used, "%s%s (%s, now %s)", used ? ", " : "", k, va, vb);
            used = w < 0 ? n : used + (size_t)w < n ? used + (size_t)w : n - 1;
        }
    }
}
