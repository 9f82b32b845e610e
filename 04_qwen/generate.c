// generate.c: sampling, the prefill/decode loop with the KV cache, and the ChatML template.
//
// See generate.h for the order of the sampling steps and why it is that order.
// Everything here works on one sequence (batch 1).
#include "04_qwen/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ============================================================================
// Sampling
// ============================================================================

void sampler_init(Sampler *s, const SamplerConfig *cfg, int V) {
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->V = V;
    rng_seed(&s->rng, cfg->seed, 0x5a3d);
    s->cand = xmalloc((size_t)V * 2 * sizeof(float));   // (V) Cand pairs
    s->prob = xmalloc((size_t)V * sizeof(float));
    s->seen = xcalloc((size_t)V, 1);
}

void sampler_free(Sampler *s) {
    free(s->cand);
    free(s->prob);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

void sampler_observe(Sampler *s, const int *ids, int n) {
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < s->V) s->seen[ids[i]] = 1;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

// A candidate token: its logit and id. Sorted by decreasing logit, ties by
// increasing id, so the order (and the draw) is deterministic.
typedef struct { float logit; int id; } Cand;
static int cmp_desc(const void *a, const void *b) {
    const Cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id - y->id;
}

int sampler_sample(Sampler *s, float *logits) {
    const int V = s->V;
    const SamplerConfig *c = &s->cfg;
    // 1. repetition penalty, on every id already in the context
    if (c->repetition_penalty != 1.0f) {
        for (int i = 0; i < V; i++)
            if (s->seen[i]) logits[i] = logits[i] < 0 ? logits[i] * c->repetition_penalty
                                                      : logits[i] / c->repetition_penalty;
    }
    // 2. greedy
    if (c->temperature <= 0.0f) return argmax(logits, V);
    // A NaN logit has no probability; when every one is NaN the model's numbers
    // are broken and there is nothing to draw from. A temperature so small that
    // the largest logit over it overflows is greedy decoding: its limit.
    int best = -1;
    for (int i = 0; i < V; i++)
        if (isnan(logits[i])) logits[i] = -INFINITY;
        else if (best < 0 || logits[i] > logits[best]) best = i;
    if (best < 0) fail_input("sampling", "every logit is NaN (the model's weights or inputs are not finite)");
    if (!isfinite(logits[best] / c->temperature) || logits[best] == -INFINITY) return best;
    for (int i = 0; i < V; i++) logits[i] /= c->temperature;

    // softmax over the whole vocabulary (the probabilities top-p looks at)
    float mx = logits[argmax(logits, V)];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        s->prob[i] = expf(logits[i] - mx);
        sum += s->prob[i];
    }
    int n = 0;
    Cand *cand = s->cand;
    // 3. top-k: the threshold is the k-th largest logit; ties with it stay.
    // 4. top-p: a token whose probability is below (1-p)/(V-1) can never be in
    //    the nucleus (all such tokens together weigh less than 1-p), so only
    //    the rest need sorting; this keeps each step cheap for 151k ids.
    float pmin = 0.0f;
    if (c->top_p < 1.0f && V > 1) pmin = (float)((1.0 - c->top_p) / (V - 1) * sum);
    for (int i = 0; i < V; i++)   // the most likely id always (top_p = 0 can push pmin past it)
        if (s->prob[i] >= pmin || i == best) cand[n++] = (Cand){logits[i], i};
    qsort(cand, (size_t)n, sizeof(Cand), cmp_desc);
    if (c->top_k > 0 && c->top_k < n) {
        float kth = cand[c->top_k - 1].logit;
        int keep = c->top_k;
        while (keep < n && cand[keep].logit >= kth) keep++;
        n = keep;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += s->prob[cand[i].id];
    if (c->top_p < 1.0f) {
        // keep tokens while the mass of the (more likely) tokens before them is < p
        double cum = 0.0;
        int keep = 0;
        while (keep < n && (keep == 0 || cum < c->top_p * total)) cum += s->prob[cand[keep++].id];
        n = keep;
        total = cum;
    }
    // 5. draw
    double u = rng_uniform(&s->rng) * total, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[cand[i].id];
        if (u < acc) return cand[i].id;
    }
    return cand[n - 1].id;
}

// ============================================================================
// The generation loop
// ============================================================================

static bool is_eos(int id, const int *eos, int n_eos) {
    for (int i = 0; i < n_eos; i++)
        if (eos[i] == id) return true;
    return false;
}

Decoder decoder_init(const Qwen *m, QwenState *s) {
    NM_CHECK(s->B == 1 && s->logits_mode == QWEN_LOGITS_LAST,
             "decoder_init: needs a batch-1 state with last-position logits");
    return (Decoder){.m = m, .s = s, .chunk = s->T, .cap = s->Tcap};
}

// One forward call; returns the last position's logits (V) on the host.
static float *step(Decoder *d, const int *ids, int T) {
    qwen_forward(d->m, d->s, ids, 1, T, NULL);
    return qwen_logits(d->s);
}

int generate(Decoder *d, Sampler *smp, const int *prompt, int P, int max_new, const int *eos, int n_eos, int *out,
             TokenCallback cb, void *user, GenStats *stats) {
    NM_CHECK(P >= 1, "generate: empty prompt");
    NM_CHECK(P + max_new <= d->cap, "generate: %d + %d tokens exceed the cache of %d", P, max_new, d->cap);
    GenStats st = {.n_prompt = P};
    qwen_state_reset(d->s);
    sampler_observe(smp, prompt, P);

    // prefill, in chunks of at most d->chunk tokens
    double t0 = now_seconds();
    float *logits = NULL;   // (V)
    for (int i = 0; i < P; i += d->chunk) {
        int n = P - i < d->chunk ? P - i : d->chunk;
        logits = step(d, prompt + i, n);
    }
    double t1 = now_seconds();
    st.t_prefill = t1 - t0;

    // decode: sample from the last logits, feed the choice back
    int n = 0;
    while (n < max_new) {
        int id = sampler_sample(smp, logits);
        out[n++] = id;
        sampler_observe(smp, &id, 1);
        bool go_on = cb ? cb(id, user) : true;
        if (is_eos(id, eos, n_eos)) { st.stopped_on_eos = true; break; }
        if (!go_on || n == max_new) break;
        logits = step(d, &id, 1);
    }
    st.n_gen = n;
    st.t_decode = now_seconds() - t1;
    if (stats) *stats = st;
    return n;
}

// ============================================================================
// The chat template
// ============================================================================

typedef struct { char *s; size_t len, cap; } Str;

static void put_n(Str *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = 2 * (b->len + n + 1) + 64;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
static void put(Str *b, const char *s) { put_n(b, s, strlen(s)); }

static bool starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }
static bool ends_with(const char *s, const char *p) {
    size_t n = strlen(s), k = strlen(p);
    return n >= k && strcmp(s + n - k, p) == 0;
}
// The last occurrence of needle in [s, s+n), or NULL.
static const char *find_last(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    if (k > n) return NULL;
    for (size_t i = n - k + 1; i-- > 0;)
        if (memcmp(s + i, needle, k) == 0) return s + i;
    return NULL;
}

// Python's str.strip('\n') family on a (pointer, length) slice.
static void lstrip_nl(const char **s, size_t *n) { while (*n && **s == '\n') { (*s)++; (*n)--; } }
static void rstrip_nl(const char *s, size_t *n) { while (*n && s[*n - 1] == '\n') (*n)--; }

static void chat_qwen3(Str *b, const ChatMessage *msgs, int n) {
    if (n > 0 && strcmp(msgs[0].role, "system") == 0) {
        put(b, "<|im_start|>system\n");
        put(b, msgs[0].content);
        put(b, "<|im_end|>\n");
    }
    // The last user turn that is a real query (not a wrapped tool response):
    // assistant turns after it keep their reasoning.
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--) {
        const char *c = msgs[i].content;
        if (strcmp(msgs[i].role, "user") == 0 && !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role, *text = msgs[i].content;
        if (strcmp(role, "user") == 0 || (strcmp(role, "system") == 0 && i > 0)) {
            put(b, "<|im_start|>");
            put(b, role);
            put(b, "\n");
            put(b, text);
            put(b, "<|im_end|>\n");
        } else if (strcmp(role, "assistant") == 0) {
            // split "<think>\nreasoning\n</think>\n\nanswer" into its two parts
            const char *content = text, *reason = "";
            size_t clen = strlen(text), rlen = 0;
            const char *end_tag = strstr(text, "</think>");
            if (end_tag) {
                const char *last_end = find_last(text, clen, "</think>");
                content = last_end + 8;
                clen = strlen(content);
                lstrip_nl(&content, &clen);
                reason = text;
                rlen = (size_t)(end_tag - text);
                rstrip_nl(reason, &rlen);
                const char *open = find_last(reason, rlen, "<think>");
                if (open) { rlen -= (size_t)(open + 7 - reason); reason = open + 7; }
                lstrip_nl(&reason, &rlen);
            }
            put(b, "<|im_start|>assistant\n");
            if (i > last_query && (i == n - 1 || rlen > 0)) {
                rstrip_nl(reason, &rlen);   // strip('\n'): the left side is already stripped
                put(b, "<think>\n");
                put_n(b, reason, rlen);
                put(b, "\n</think>\n\n");
                lstrip_nl(&content, &clen);
            }
            put_n(b, content, clen);
            put(b, "<|im_end|>\n");
        } else if (strcmp(role, "tool") == 0) {
            if (i == 0 || strcmp(msgs[i - 1].role, "tool") != 0) put(b, "<|im_start|>user");
            put(b, "\n<tool_response>\n");
            put(b, text);
            put(b, "\n</tool_response>");
            if (i == n - 1 || strcmp(msgs[i + 1].role, "tool") != 0) put(b, "<|im_end|>\n");
        }
    }
}

static void chat_qwen25(Str *b, const ChatMessage *msgs, int n) {
    if (n == 0 || strcmp(msgs[0].role, "system") != 0)
        put(b, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n");
    for (int i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "tool") == 0) {
            if (i == 0 || strcmp(msgs[i - 1].role, "tool") != 0) put(b, "<|im_start|>user");
            put(b, "\n<tool_response>\n");
            put(b, msgs[i].content);
            put(b, "\n</tool_response>");
            if (i == n - 1 || strcmp(msgs[i + 1].role, "tool") != 0) put(b, "<|im_end|>\n");
            continue;
        }
        put(b, "<|im_start|>");
        put(b, msgs[i].role);
        put(b, "\n");
        put(b, msgs[i].content);
        put(b, "<|im_end|>\n");
    }
}

char *chat_format(ChatStyle style, const ChatMessage *msgs, int n, bool add_generation_prompt,
                  bool enable_thinking) {
    Str b = {0};
    put(&b, "");
    if (style == CHAT_QWEN3) chat_qwen3(&b, msgs, n);
    else chat_qwen25(&b, msgs, n);
    if (add_generation_prompt) {
        put(&b, "<|im_start|>assistant\n");
        if (style == CHAT_QWEN3 && !enable_thinking) put(&b, "<think>\n\n</think>\n\n");
    }
    return b.s;
}
