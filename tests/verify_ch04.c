// verify_ch04.c: chapter 04 against transformers (the outputs of tests/reference/ref_ch04.py).
//
//   build/release/tests/verify_ch04 build/ref/ch04
//
// For every tiny random model the reference script saved (Qwen3 and Qwen2,
// tied and untied, GQA ratios 1/2/3/7, bf16 and fp32 files, sharded or not),
// loaded through the normal loader:
//   - logits [T,V] and every hidden state [L+1,T,C] of a full forward;
//   - the KV cache: a prefill of a few tokens then one token at a time must
//     give the full forward's logits, row by row;
//   - greedy generation (with the model's EOS ids) equal to model.generate;
// then the broken model directories (each must end in one `error:` line and
// exit status 1, tested in a child process), Qwen3's chat template against
// apply_chat_template, and the tokenizer checks of tests/verify_ch04_tok.h.
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "01_tensor/check.h"
#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"
#include "04_qwen/generate.h"
#include "04_qwen/qwen.h"

#if defined(__has_include)
#if __has_include("tests/verify_ch04_tok.h")
#include "tests/verify_ch04_tok.h"
#define HAVE_TOK_VERIFY 1
#endif
#endif

static const char *MODELS[] = {
    "qwen3_untied_sharded_f32", "qwen3_tied_bf16", "qwen3_bias_gqa2_f32", "qwen2_tied_gqa7_bf16",
    "qwen2_untied_gqa2_f32",
};

// Reads one tensor of the expected file into a new buffer as F32 or I32.
static void *read_expected(StFile *f, const char *name, DType dt, int64_t *numel) {
    const StTensor *t = st_find(f, name);
    NM_CHECK(t, "%s: no tensor '%s'", f->path, name);
    *numel = st_numel(t);
    void *buf = xmalloc((size_t)(*numel > 0 ? *numel : 1) * 4);
    if (dt == DT_F32) NM_CHECK(st_read(t, buf, DT_F32) == 0, "%s: cannot read %s", f->path, name);
    else {
        NM_CHECK(t->dtype == DT_I32, "%s: %s is not I32", f->path, name);
        memcpy(buf, t->data, (size_t)*numel * 4);
    }
    return buf;
}

static void verify_model(const char *root, const char *name) {
    char *dir = xsprintf("%s/%s", root, name);
    char *exp_path = xsprintf("%s/expected.safetensors", dir);
    char err[512], label[128];
    StFile *ef = st_open(exp_path, err, sizeof err);
    if (!ef) {
        check_true(name, false, "cannot open %s: %s", exp_path, err);
        free(dir); free(exp_path);
        return;
    }
    Qwen m;
    qwen_load(&m, dir);
    const QwenConfig *c = &m.cfg;
    int64_t nT, nlog, nhid, nP, nG;
    int *ids = read_expected(ef, "input_ids", DT_I32, &nT);
    float *want_logits = read_expected(ef, "logits", DT_F32, &nlog);
    float *want_hidden = read_expected(ef, "hidden_states", DT_F32, &nhid);
    int *prompt = read_expected(ef, "gen_prompt", DT_I32, &nP);
    int *want_gen = read_expected(ef, "gen_ids", DT_I32, &nG);
    const int T = (int)nT, V = c->V, C = c->C, L = c->L;
    NM_CHECK(nlog == (int64_t)T * V && nhid == (int64_t)(L + 1) * T * C, "%s: unexpected reference shapes", name);

    // ---- the full forward: logits and every hidden state ----
    QwenState s;
    qwen_state_init(&s, c, 1, T, T, false, QWEN_LOGITS_ALL, DEVICE_CPU);
    float *hidden = xmalloc((size_t)(L + 1) * T * C * sizeof(float));   // (L+1, T, C)
    qwen_forward(&m, &s, ids, 1, T, hidden);
    snprintf(label, sizeof label, "%s/logits", name);
    check_f32(label, qwen_logits(&s), want_logits, (size_t)T * V, TOL_F32);
    for (int l = 0; l <= L; l++) {
        snprintf(label, sizeof label, "%s/hidden_states[%d]", name, l);
        check_f32(label, hidden + (size_t)l * T * C, want_hidden + (size_t)l * T * C, (size_t)T * C, TOL_F32);
    }
    float *full = xmalloc((size_t)T * V * sizeof(float));   // (T, V) our full-forward logits
    memcpy(full, qwen_logits(&s), (size_t)T * V * sizeof(float));
    qwen_state_free(&s);

    // ---- the training plan gives the same numbers ----
    qwen_state_init(&s, c, 1, T, T, true, QWEN_LOGITS_ALL, DEVICE_CPU);
    qwen_forward(&m, &s, ids, 1, T, NULL);
    snprintf(label, sizeof label, "%s/training_plan_logits", name);
    check_f32(label, qwen_logits(&s), full, (size_t)T * V, TOL_F32);
    qwen_state_free(&s);

    // ---- the KV cache: prefill 5 tokens, then one at a time ----
    const int P0 = 5;
    qwen_state_init(&s, c, 1, T, T, false, QWEN_LOGITS_ALL, DEVICE_CPU);
    float *inc = xmalloc((size_t)T * V * sizeof(float));    // (T, V) logits from the cached path
    qwen_forward(&m, &s, ids, 1, P0, NULL);
    memcpy(inc, qwen_logits(&s), (size_t)P0 * V * sizeof(float));
    for (int t = P0; t < T; t++) {
        qwen_forward(&m, &s, ids + t, 1, 1, NULL);
        memcpy(inc + (size_t)t * V, qwen_logits(&s), (size_t)V * sizeof(float));
    }
    snprintf(label, sizeof label, "%s/kv_cache_vs_full_forward", name);
    check_f32(label, inc, full, (size_t)T * V, TOL_F32);
    snprintf(label, sizeof label, "%s/kv_cache_vs_transformers", name);
    check_f32(label, inc, want_logits, (size_t)T * V, TOL_F32);
    qwen_state_free(&s);
    free(inc);

    // ---- greedy generation, EOS ids from config.json / generation_config.json ----
    const int max_new = 32;
    qwen_state_init(&s, c, 1, (int)nP, (int)nP + max_new, false, QWEN_LOGITS_LAST, DEVICE_CPU);
    Sampler smp;
    SamplerConfig sc = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = 1};
    sampler_init(&smp, &sc, V);
    int *got = xmalloc(max_new * sizeof(int));
    GenStats st;
    Decoder dec = decoder_init(&m, &s);
    int n = generate(&dec, &smp, prompt, (int)nP, max_new, c->eos, c->n_eos, got, NULL, NULL, &st);
    int first_diff = -1;
    for (int i = 0; i < n && i < nG && first_diff < 0; i++)
        if (got[i] != want_gen[i]) first_diff = i;
    snprintf(label, sizeof label, "%s/greedy_generate", name);
    check_true(label, n == nG && first_diff < 0, "%d tokens, transformers %lld%s; %s", n, (long long)nG,
               st.stopped_on_eos ? " (both stopped on an EOS id)" : "",
               first_diff < 0 ? "identical ids" : "ids differ");
    sampler_free(&smp);
    qwen_state_free(&s);

    free(got); free(full); free(hidden);
    free(ids); free(want_logits); free(want_hidden); free(prompt); free(want_gen);
    st_close(ef);
    qwen_free(&m);
    free(dir); free(exp_path);
}

// ---- bad input: each broken directory must fail cleanly in a child process ----
static void verify_bad(const char *root, const char *name, const char *expect) {
    char *dir = xsprintf("%s/%s", root, name);
    int fds[2];
    NM_CHECK(pipe(fds) == 0, "pipe failed");
    fflush(stdout);
    pid_t pid = fork();
    NM_CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        Qwen m;
        qwen_load(&m, dir);
        qwen_free(&m);
        _exit(0);
    }
    close(fds[1]);
    char msg[1024] = {0};
    size_t len = 0;
    ssize_t r;
    while (len < sizeof msg - 1 && (r = read(fds[0], msg + len, sizeof msg - 1 - len)) > 0) len += (size_t)r;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    char *nl = strchr(msg, '\n');
    bool one_line = nl && nl[1] == 0;
    if (nl && one_line) *nl = 0;
    char label[128];
    snprintf(label, sizeof label, "bad_input/%s", name);
    check_true(label, WIFEXITED(status) && WEXITSTATUS(status) == 1 && one_line && strncmp(msg, "error: ", 7) == 0 &&
                          strstr(msg, expect) != NULL,
               "exit %d, message: %s", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), msg);
    free(dir);
}

// ---- the chat template against apply_chat_template ----
static void verify_chat(const char *root) {
    char *path = xsprintf("%s/chat.json", root);
    size_t len;
    const char *rerr;
    char *text = read_file(path, &len, &rerr);
    if (!text) { check_true("chat_template", false, "cannot read %s: %s", path, rerr); free(path); return; }
    char err[256];
    JsonDoc *doc = json_parse(text, len, err, sizeof err);
    NM_CHECK(doc, "%s: %s", path, err);
    const JsonValue *cases = json_root(doc);
    int ok = 0, total = (int)cases->len;
    for (size_t i = 0; i < cases->len; i++) {
        const JsonValue *cs = cases->items[i];
        const JsonValue *ms = json_get(cs, "messages");
        ChatMessage *msgs = xcalloc(ms->len + 1, sizeof *msgs);
        for (size_t j = 0; j < ms->len; j++) {
            msgs[j].role = json_get_str(ms->items[j], "role", "");
            msgs[j].content = json_get_str(ms->items[j], "content", "");
        }
        bool gp = json_get_bool(cs, "add_generation_prompt", false);
        bool think = json_get_bool(cs, "enable_thinking", true);
        char *got = chat_format(CHAT_QWEN3, msgs, (int)ms->len, gp, think);
        const char *want = json_get_str(cs, "text", "");
        char label[64];
        snprintf(label, sizeof label, "chat_template/qwen3[%zu]", i);
        bool same = strcmp(got, want) == 0;
        ok += same;
        if (!same) check_true(label, false, "got <<%s>> want <<%s>>", got, want);
        free(got);
        free(msgs);
    }
    check_true("chat_template/qwen3", ok == total, "%d of %d conversations identical to apply_chat_template", ok,
               total);
    json_free(doc);
    free(text);
    free(path);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s REF_DIR (written by tests/reference/ref_ch04.py)\n", argv[0]);
        return 2;
    }
    const char *root = argv[1];
    // The bad inputs first: they fork, and a child forked before any OpenMP
    // thread exists exits cleanly under LeakSanitizer (after, it cannot stop
    // the parent's thread pool it inherited and reports a fatal error).
    verify_bad(root, "bad_missing_tensor", "missing tensor 'model.layers.1.mlp.up_proj.weight'");
    verify_bad(root, "bad_shape", "model.norm.weight");
    verify_bad(root, "bad_model_type", "unknown model_type 'llama'");
    verify_bad(root, "bad_config_json", "bad JSON");
    verify_bad(root, "no_such_model_dir", "not a model directory");
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++) verify_model(root, MODELS[i]);
    verify_chat(root);
#ifdef HAVE_TOK_VERIFY
    verify_tokenizer(root);
#else
    printf("# tests/verify_ch04_tok.h not present yet: tokenizer checks skipped\n");
#endif
    return check_summary("verify_ch04");
}
