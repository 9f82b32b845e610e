// 04_qwen/run.c: chapter 04's command line: a Qwen language model that talks.
//
//   ./04_qwen/run                               the nano default generates from a default prompt
//   ./04_qwen/run --model DIR --prompt TEXT     a real checkpoint (Qwen/Qwen3-0.6B, Qwen/Qwen2.5-0.5B)
//   ./04_qwen/run --model DIR --chat --prompt TEXT [--think]
//   ./04_qwen/run --mem --config config.json --ctx 4096
//   ./04_qwen/run tokenize | detokenize | train-tokenizer ...
//
// This file only wires the chapter together: parse the options, load (or
// randomly initialise) the model and the tokenizer, build the prompt (plain or
// through the chat template), then prefill + decode with streaming output. The
// model is qwen.c, the loop and sampling generate.c, the tokenizer tokenizer.c.
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "01_tensor/matmul.h"   // cuda_available
#include "01_tensor/safetensors.h"
#include "04_qwen/generate.h"
#include "04_qwen/qwen.h"
#include "04_qwen/tokenizer.h"

#define NANO_SEED 1234
#define DEFAULT_TOKENIZER_PATH "data/qwen3/tokenizer.json"
#define DEFAULT_PROMPT "The quick brown fox"
#define NANO_MODEL_DIR "models/nano"      // the trained nano checkpoint (chapter 05), when shipped
#define NANO_PROMPT "a large red"         // its default prompt: the start of a caption of its world

static void usage(FILE *f) {
    fprintf(f,
            "usage: ./04_qwen/run [options]\n"
            "       ./04_qwen/run tokenize|detokenize|train-tokenizer [ARGS] (each has --help)\n"
            "\n"
            "Chapter 04: the Qwen language model (Qwen3 and Qwen2/2.5), with a KV cache.\n"
            "With no --model, runs the trained nano checkpoint " NANO_MODEL_DIR " (the LLM of the nano\n"
            "VLM that chapter 05 trains on the synthetic world: C=128, 4 layers, its own small BPE\n"
            "vocabulary; it only knows the world's sentences). Without that directory, or with\n"
            "--random, the nano preset: the same architecture over Qwen3's 151,936-row vocabulary,\n"
            "RANDOMLY INITIALISED (seed %d), so its text is gibberish; it shows the machinery.\n"
            "\n"
            "options:\n"
            "  --model DIR            a HuggingFace model directory (config.json, *.safetensors,\n"
            "                         sharded or not; bf16/f16/f32 weights are read into fp32)\n"
            "  --random               the randomly initialised nano preset, even when " NANO_MODEL_DIR " exists\n"
            "  --tokenizer FILE|DIR   tokenizer.json (default: DIR/tokenizer.json if present, else\n"
            "                         " DEFAULT_TOKENIZER_PATH ")\n"
            "  --prompt TEXT          the prompt (default: \"" DEFAULT_PROMPT "\", or \"" NANO_PROMPT "\" for the\n"
            "                         trained nano checkpoint, which only knows its world's captions)\n"
            "  --chat                 wrap the prompt in the model's chat template (ChatML; Qwen3's\n"
            "                         for qwen3 models, Qwen2.5's with its default system prompt for qwen2)\n"
            "  --system TEXT          a system message for --chat\n"
            "  --think                Qwen3 chat: let the model think (enable_thinking=true);\n"
            "                         without it the template closes an empty <think></think> block\n"
            "  --max-new N            tokens to generate at most (default 64)\n"
            "  --temperature T        0 = greedy (default 0.7)\n"
            "  --top-k K              keep the K most likely tokens, 0 = off (default 20)\n"
            "  --top-p P              nucleus sampling, 1 = off (default 0.95)\n"
            "  --repetition-penalty R divide the logits of tokens already seen (HF semantics; default 1)\n"
            "  --seed S               sampling seed (default 1)\n"
            "  --device cpu|cuda      where to run (default: cuda when a GPU is present, else cpu; cuda\n"
            "                         generates in bf16 on the GPU; --save-logits runs on the CPU only)\n"
            "  --threads N            OpenMP threads for the CPU (default: all)\n"
            "  --save-logits OUT      write the prompt's logits [T,V] f32, hidden_states [L+1,T,C]\n"
            "                         (transformers' numbering) and input_ids to OUT.safetensors, then exit\n"
            "  --mem                  print the memory plan (weights, KV cache, activations, logits)\n"
            "                         for the model and --ctx, without loading weights, then exit\n"
            "  --config FILE          with --mem: a config.json instead of --model\n"
            "  --ctx N                with --mem: context length (default 4096)\n"
            "  -h, --help             this text\n"
            "\n"
            "Output: the prompt's continuation streamed to stdout as it is generated; the model\n"
            "used and the speed (prefill and decode tokens/s) on stderr.\n",
            NANO_SEED);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}
static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

// The eos_token of tokenizer_config.json (a string or {"content": ...}), as an id.
static void add_tokenizer_eos(QwenConfig *c, const Tokenizer *tok, const char *dir) {
    char *path = xsprintf("%s/tokenizer_config.json", dir);
    size_t len;
    const char *rerr;
    char *text = read_file(path, &len, &rerr);
    if (text) {
        char err[256];
        JsonDoc *doc = json_parse(text, len, err, sizeof err);
        if (!doc) fail_input(path, "bad JSON: %s", err);
        const JsonValue *e = json_get(json_root(doc), "eos_token");
        const char *name = e && e->type == JSON_STRING ? e->str : e ? json_get_str(e, "content", NULL) : NULL;
        int id = name ? tok_token_to_id(tok, name) : -1;
        bool have = false;
        for (int i = 0; i < c->n_eos; i++) have |= c->eos[i] == id;
        if (id >= 0 && !have && c->n_eos < QWEN_MAX_EOS) c->eos[c->n_eos++] = id;
        json_free(doc);
        free(text);
    }
    free(path);
}

// ----------------------------------------------------------------------------
// Streaming: each new id goes through the tokenizer's stream, which holds back
// the bytes of a character split across tokens until it is complete.

typedef struct {
    const Tokenizer *tok;
    TokStream stream;
} Printer;

static bool print_token(int id, void *user) {
    Printer *p = user;
    char *text = NULL;
    size_t n = tok_stream_push(p->tok, &p->stream, id, true, &text);
    if (n) fwrite(text, 1, n, stdout);
    fflush(stdout);
    free(text);
    return true;
}

// ----------------------------------------------------------------------------
// --save-logits

static void save_logits(const Qwen *m, const int *ids, int T, const char *out) {
    const QwenConfig *c = &m->cfg;
    QwenState s;
    qwen_state_init(&s, c, 1, T, T, false, QWEN_LOGITS_ALL, m->device);
    float *hidden = xmalloc((size_t)(c->L + 1) * T * c->C * sizeof(float));   // (L+1, T, C)
    qwen_forward(m, &s, ids, 1, T, hidden);
    int64_t sl[2] = {T, c->V}, sh[3] = {c->L + 1, T, c->C}, si[1] = {T};
    StItem items[3] = {
        {"logits", DT_F32, 2, sl, (void *)qwen_logits(&s)},
        {"hidden_states", DT_F32, 3, sh, hidden},
        {"input_ids", DT_I32, 1, si, ids},
    };
    char err[512];
    if (st_write(out, items, 3, NULL, 0, err, sizeof err) != 0) fail_input(out, "%s", err);
    fprintf(stderr, "wrote %s: logits [%d, %d], hidden_states [%d, %d, %d], input_ids [%d]\n", out, T, c->V,
            c->L + 1, T, c->C, T);
    free(hidden);
    qwen_state_free(&s);
}

// ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "tokenize") == 0) return tok_cli_tokenize(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "detokenize") == 0) return tok_cli_detokenize(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "train-tokenizer") == 0) return tok_cli_train(argc - 1, argv + 1);

    const char *model_dir = NULL, *tok_path = NULL, *prompt = DEFAULT_PROMPT, *system_msg = NULL;
    const char *save_path = NULL, *config_path = NULL;
    bool chat = false, think = false, mem = false, random_init = false, prompt_given = false;
    int max_new = 64, ctx = 4096;
    SamplerConfig sc = {.temperature = 0.7f, .top_k = 20, .top_p = 0.95f, .repetition_penalty = 1.0f, .seed = 1};
    const char *device_arg = NULL;

    enum { O_MODEL = 256, O_TOK, O_PROMPT, O_CHAT, O_SYSTEM, O_THINK, O_MAXNEW, O_TEMP, O_TOPK, O_TOPP, O_REP,
           O_SEED, O_DEVICE, O_THREADS, O_SAVE, O_MEM, O_CONFIG, O_CTX, O_RANDOM };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},     {"tokenizer", required_argument, 0, O_TOK},
        {"prompt", required_argument, 0, O_PROMPT},   {"chat", no_argument, 0, O_CHAT},
        {"system", required_argument, 0, O_SYSTEM},   {"think", no_argument, 0, O_THINK},
        {"max-new", required_argument, 0, O_MAXNEW},  {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK},      {"top-p", required_argument, 0, O_TOPP},
        {"repetition-penalty", required_argument, 0, O_REP},
        {"seed", required_argument, 0, O_SEED},       {"device", required_argument, 0, O_DEVICE},
        {"threads", required_argument, 0, O_THREADS}, {"save-logits", required_argument, 0, O_SAVE},
        {"mem", no_argument, 0, O_MEM},               {"config", required_argument, 0, O_CONFIG},
        {"ctx", required_argument, 0, O_CTX},         {"random", no_argument, 0, O_RANDOM},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    opterr = 0;   // we word the errors ourselves, one line each
    int o;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case O_MODEL: model_dir = optarg; break;
        case O_TOK: tok_path = optarg; break;
        case O_PROMPT: prompt = optarg; prompt_given = true; break;
        case O_CHAT: chat = true; break;
        case O_SYSTEM: system_msg = optarg; break;
        case O_THINK: think = true; break;
        case O_MAXNEW: max_new = parse_int_arg("--max-new", optarg, 0, 1 << 20); break;
        case O_TEMP: sc.temperature = (float)parse_real_arg("--temperature", optarg, 0.0, 100.0); break;
        case O_TOPK: sc.top_k = parse_int_arg("--top-k", optarg, 0, INT_MAX); break;
        case O_TOPP: sc.top_p = (float)parse_real_arg("--top-p", optarg, 1e-6, 1.0); break;
        case O_REP: sc.repetition_penalty = (float)parse_real_arg("--repetition-penalty", optarg, 1e-3, 1e3); break;
        case O_SEED: sc.seed = parse_u64_arg("--seed", optarg, 0, LONG_MAX); break;
        case O_DEVICE: device_arg = optarg; break;
        case O_THREADS: nm_ctx.threads = parse_threads_arg(optarg); break;
        case O_SAVE: save_path = optarg; break;
        case O_MEM: mem = true; break;
        case O_CONFIG: config_path = optarg; break;
        case O_CTX: ctx = parse_int_arg("--ctx", optarg, 1, 1 << 24); break;
        case O_RANDOM: random_init = true; break;
        case 'h': usage(stdout); return 0;
        case ':': fail_input(argv[optind - 1], "needs a value (see --help)");
        default: fail_input(argv[optind - 1], "unknown option (see --help)");
        }
    }
    if (optind < argc) fail_input(argv[optind], "unexpected argument (see --help; the prompt goes after --prompt)");
    if (config_path && !mem) fail_input("--config", "only used with --mem");
    ctx_apply_threads();
    // generation has a CUDA path (and --mem prices it); --save-logits runs the CPU forward,
    // whose hidden states are the ones transformers numbers
    const Device device = device_select(device_arg, mem ? "--mem" : save_path ? "--save-logits" : "generate",
                                        mem || !save_path, cuda_available());

    // ---- --mem: the plan, from the config alone ----
    if (mem) {
        QwenConfig c;
        if (config_path) qwen_config_load(&c, config_path);
        else if (model_dir) qwen_config_load(&c, model_dir);
        else c = qwen_nano_config();
        qwen_mem_report(&c, ctx, stdout);
        return 0;
    }

    // ---- the default model: the trained nano checkpoint when it is there ----
    if (random_init && model_dir) fail_input("--random", "cannot be combined with --model");
    bool trained_nano = false;
    if (!model_dir && !random_init && is_file(NANO_MODEL_DIR "/config.json") &&
        is_file(NANO_MODEL_DIR "/model.safetensors") && is_file(NANO_MODEL_DIR "/tokenizer.json")) {
        model_dir = NANO_MODEL_DIR;
        trained_nano = true;
        if (!prompt_given) prompt = NANO_PROMPT;
    }

    // ---- the configuration (the prompt checks need V and the context) ----
    QwenConfig cfg;
    if (model_dir) {
        if (!is_dir(model_dir)) fail_input(model_dir, "not a model directory (expected config.json and *.safetensors)");
        qwen_config_load(&cfg, model_dir);
    } else {
        cfg = qwen_nano_config();
    }

    // ---- the tokenizer ----
    char *tok_in_dir = model_dir ? xsprintf("%s/tokenizer.json", model_dir) : NULL;
    if (!tok_path) tok_path = tok_in_dir && is_file(tok_in_dir) ? tok_in_dir : DEFAULT_TOKENIZER_PATH;
    char err[512];
    Tokenizer *tok = tok_load(tok_path, err, sizeof err);
    if (!tok) fail_input(tok_path, "%s", err);
    tok_add_project_tokens(tok);
    if (model_dir) add_tokenizer_eos(&cfg, tok, model_dir);
    else if (is_dir("data/qwen3")) add_tokenizer_eos(&cfg, tok, "data/qwen3");

    // ---- the prompt ----
    char *text;
    if (chat) {
        ChatMessage msgs[2];
        int n = 0;
        if (system_msg) msgs[n++] = (ChatMessage){"system", system_msg};
        msgs[n++] = (ChatMessage){"user", prompt};
        text = chat_format(cfg.family == QWEN3 ? CHAT_QWEN3 : CHAT_QWEN25, msgs, n, true, think);
    } else {
        text = xstrdup(prompt);
    }
    int32_t *ids32 = NULL;
    int P = tok_encode(tok, text, strlen(text), &ids32, true);
    if (P < 1) fail_input("--prompt", "the prompt is empty");
    int *ids = xmalloc((size_t)P * sizeof(int));
    for (int i = 0; i < P; i++) {
        if (ids32[i] < 0 || ids32[i] >= cfg.V)
            fail_input("--prompt", "token id %d is outside the model's vocabulary of %d (tokenizer %s)", ids32[i],
                       cfg.V, tok_path);
        ids[i] = ids32[i];
    }
    if (P + max_new > cfg.max_pos)
        fail_input("--prompt", "%d prompt tokens + %d new tokens exceed the model's context of %d", P, max_new,
                   cfg.max_pos);

    if (save_path) {   // refuse an impossible output before the (possibly long) model load
        char *slash = strrchr(save_path, '/');
        char *parent = slash ? xsprintf("%.*s", (int)(slash - save_path), save_path) : xstrdup(".");
        if (!is_dir(*parent ? parent : "/")) fail_input(save_path, "the directory for this file does not exist");
        free(parent);
    }

    // ---- the model ----
    Qwen m;
    if (model_dir) {
        qwen_load(&m, model_dir);
        memcpy(m.cfg.eos, cfg.eos, sizeof cfg.eos);   // with the tokenizer_config's EOS added above
        m.cfg.n_eos = cfg.n_eos;
        if (trained_nano)
            fprintf(stderr, "model: %s, the TRAINED nano checkpoint (chapter 05's VLM, its language model alone; "
                            "it knows the synthetic world's sentences) (", model_dir);
        else
            fprintf(stderr, "model: %s (", model_dir);
    } else {
        qwen_init_random(&m, &cfg, NANO_SEED);
        fprintf(stderr, "model: nano default, a Qwen3-architecture model RANDOMLY INITIALISED (seed %d, N(0, 0.02)); "
                        "%s, so expect gibberish (", NANO_SEED,
                random_init ? "--random" : "no trained checkpoint in " NANO_MODEL_DIR);
    }
    {
        char b[32];
        fprintf(stderr, "%lld parameters, %s fp32)\n  ", (long long)table_numel(&m.params, false),
                bytes_str((double)m.params.nbytes, b, sizeof b));
        qwen_config_print(&m.cfg, stderr);
    }

    if (save_path) {
        save_logits(&m, ids, P, save_path);
        goto done;
    }

    // ---- generate, streaming ----
    fprintf(stderr, "prompt: %d tokens; generating up to %d (%s, seed %llu) on %s\n", P, max_new,
            sc.temperature <= 0 ? "greedy" : "sampling", (unsigned long long)sc.seed, device_name(device));
    const int chunk = P < 512 ? P : 512;
    QwenState s = {0};
    qwen_to_device(&m, device);   // one forward for both devices: the weights and the state go there
    qwen_state_init(&s, &m.cfg, 1, chunk, P + max_new, false, QWEN_LOGITS_LAST, device);
    Decoder dec = decoder_init(&m, &s);
    Sampler smp;
    sampler_init(&smp, &sc, m.cfg.V);
    Printer pr = {.tok = tok};
    int *out = xmalloc((size_t)(max_new > 0 ? max_new : 1) * sizeof(int));
    if (!chat) fwrite(text, 1, strlen(text), stdout);
    GenStats st = {0};
    if (max_new > 0) generate(&dec, &smp, ids, P, max_new, m.cfg.eos, m.cfg.n_eos, out, print_token, &pr, &st);
    char *rest = NULL;
    size_t nrest = tok_stream_flush(&pr.stream, &rest);
    if (nrest) fwrite(rest, 1, nrest, stdout);
    free(rest);
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tokens/s); decode: %d tokens in %.3f s (%.1f tokens/s)%s\n",
            st.n_prompt, st.t_prefill, st.t_prefill > 0 ? st.n_prompt / st.t_prefill : 0.0, st.n_gen, st.t_decode,
            st.t_decode > 0 ? st.n_gen / st.t_decode : 0.0, st.stopped_on_eos ? "; stopped on EOS" : "");
    sampler_free(&smp);
    free(out);
    qwen_state_free(&s);
done:
    free(ids);
    free(ids32);
    free(text);
    free(tok_in_dir);
    tok_free(tok);
    qwen_free(&m);
    return 0;
}
