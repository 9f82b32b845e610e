// run.c: chapter 05's command line: train the VLM on the CPU.
//
//   ./05_training/run                      the demo: a tiny generated caption dataset,
//                                          the nano model, 40 steps; watch the loss fall
//   ./05_training/run train --config FILE [--data JSONL --images DIR | --features CACHE]
//                     [--out DIR] [--resume] [--steps N]
//   ./05_training/run --mem [--config FILE]  the training memory breakdown
//   ./05_training/run generate|score ...     the synthetic world and its scorer (world.h, eval.h)
//   ./05_training/run eval|chat ...          a trained nano VLM answering (nano.h)
//
// A progress line per logged step (step, loss, lr, grad norm, tokens/s, ETA)
// goes to stderr; OUT/log.jsonl gets one JSON object per step and
// OUT/loss.svg the loss curve, both rewritten as the run goes. Checkpoints
// (checkpoint.h) go to OUT/step_N/.
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <errno.h>
#include <unistd.h>

#include "01_tensor/cuda_util.h"   // cuda_mem_peak, cuda_mem_info
#include "01_tensor/matmul.h"      // cuda_available
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"
#include "05_training/adamw.h"
#include "05_training/checkpoint.h"
#include "05_training/config.h"
#include "05_training/data.h"
#include "05_training/eval.h"
#include "05_training/llava.h"
#include "05_training/nano.h"
#include "05_training/setup.h"
#include "05_training/world.h"
#include "05_training/vlm.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: run                                  demo: train the nano VLM on a generated caption set\n"
            "       run train --config FILE [options]    train a stage (05_training/configs/*.conf)\n"
            "       run --mem [--config FILE]            print the training memory breakdown\n"
            "       run generate --out DIR [...]         write the synthetic world (images + JSONL); --help\n"
            "       run score --scenes F --answers F     score an answers file against scenes; --help\n"
            "       run eval [--model DIR] [--n N]       evaluate a trained model on held-out scenes; --help\n"
            "       run chat [--model DIR] --image IMG \"question\"   ask a trained model about an image\n"
            "options:\n"
            "  --config FILE        stage config (`key = value` lines; unknown keys are errors)\n"
            "  --data JSONL         LLaVA-style rows (.jsonl, or .json array)\n"
            "  --images DIR         folder the rows' image paths are relative to\n"
            "  --features DIR       ViT feature cache instead of images: chapter 02's `run cache` output\n"
            "                       (index.json + bf16 shards), images found by their paths\n"
            "  --out DIR            where log.jsonl, loss.svg and checkpoints go (default build/train05)\n"
            "  --resume             continue from the newest complete checkpoint in --out (its\n"
            "                       train.conf and data must match this run's)\n"
            "  --overwrite          replace the earlier run in --out (kept in OUT/.replaced until this\n"
            "                       run's first checkpoint is complete); without it such an --out is refused\n"
            "  --steps N            override max_steps\n"
            "  --set KEY=VALUE      override one config key (repeatable; same checks as the file)\n"
            "  --threads N          OpenMP threads (default: OpenMP's)\n"
            "  --device cpu|cuda    where `train` runs (default cpu, even with a GPU present): cuda puts the\n"
            "                       LLM, its backward, the fused loss and its AdamW on the GPU (bf16 compute,\n"
            "                       fp32 master weights, gradients and moments); the connector and the\n"
            "                       frozen ViT stay on the host. The demo, eval and chat run on the CPU\n"
            "  --mem                memory breakdown for the config, then exit (with --device cuda also what\n"
            "                       the GPU holds; train --device cuda prints it beside the measured peak)\n"
            "testing aids:\n"
            "  --kill-at-step K     SIGKILL the process right after step K (and its checkpoint)\n"
            "  --kill-in-checkpoint K  SIGKILL while writing step K's checkpoint, before its marker\n"
            "  --inject-nan K       make the loss of step K NaN (to test the NaN stop)\n"
            "  -h, --help           this text\n");
}

// ----------------------------------------------------------------------------
// --mem

static void print_row(const char *what, double bytes, double total) {
    char b[32];
    printf("  %-34s %12s  %5.1f%%\n", what, bytes_str(bytes, b, sizeof b), total > 0 ? 100 * bytes / total : 0);
}

static void mem_report(const TrainConfig *cfg, bool gpu) {
    // sizes only: tables are described, never allocated
    VitConfig vc = vit_config_nano();
    QwenConfig qc = qwen_nano_config();
    char err[512];
    if (strcmp(cfg->vit, "nano")) {
        char *cj = xsprintf("%s/config.json", cfg->vit);
        if (vit_config_from_json(&vc, cj, err, sizeof err) != 0) {
            printf("(no %s: using CLIP ViT-L/14-336's config)\n", cj);
            vc = vit_config_large336();
        }
        free(cj);
    }
    if (strcmp(cfg->llm, "nano")) {
        char *cj = xsprintf("%s/config.json", cfg->llm);
        if (access(cj, R_OK) == 0) qwen_config_load(&qc, cfg->llm);
        else {
            printf("(no %s: using Qwen3-0.6B's config)\n", cj);
            qc = qwen_nano_config();
            qc.C = 1024; qc.I = 3072; qc.L = 28; qc.NH = 16; qc.NKV = 8; qc.HD = 128; qc.max_pos = 40960;
        }
        free(cj);
    }
    if (!strcmp(cfg->llm, "nano") && !strcmp(cfg->llm_vocab, "tokenizer")) {
        Tokenizer *tok = tok_load(cfg->tokenizer, err, sizeof err);
        if (tok) {
            tok_add_project_tokens(tok);
            qc.V = tok_vocab_size(tok);
            tok_free(tok);
        } else {
            printf("(no tokenizer %s yet: the vocabulary is priced at Qwen3's size)\n", cfg->tokenizer);
        }
    }
    VitFeature feat;
    if (vit_feature_parse(&feat, cfg->vit_feature, &vc, err, sizeof err) != 0) fail_input("vit_feature", "%s", err);
    ConnectorConfig cc;
    int G = vit_grid(&vc);
    connector_config_init(&cc, (ConnectorKind)connector_kind_parse(cfg->connector), vc.hidden, qc.C, qc.I, G, G);
    if (vis_prep_needed(cfg) && cc.kind != CONN_MOLMO && G % cfg->patch_merge == 0) {
        cc.in_dim = vis_prep_dim(vit_feature_dim(&feat, &vc), G, cfg->patch_merge, cfg->patch_context, vis_pos_flags(cfg));
        cc.grid_h = cc.grid_w = G / cfg->patch_merge;
    }
    Table q_t = {0}, c_t = {0}, s_t = {0};
    table_init(&q_t, "qwen");
    qwen_params_build(&q_t, &qc);
    table_init(&c_t, "connector");
    connector_describe(&c_t, &cc);
    int B = cfg->batch_size, T = cfg->max_seq_len;
    table_init(&s_t, "scratch");
    lm_scratch_build(&s_t, &qc, B, T, DEVICE_CPU);
    double f = 4.0;
    double vit_w = vit_mem(&vc, 1, DT_F32, &feat, 1).weights;
    double vit_run = vit_mem(&vc, 1, DT_F32, &feat, 1).total - vit_w;
    double llm_p = (double)table_numel(&q_t, false) * f, con_p = (double)table_numel(&c_t, false) * f;
    double grads = llm_p * cfg->train_llm + con_p * cfg->train_connector;
    double adam = 2 * grads;
    // the training plan of chapter 04's forward, priced as the trainer allocates it
    double acts = (double)qwen_train_acts_bytes(&qc, B, T), scratch = (double)table_bytes(&s_t);
    int imgs = B;   // one image per row (LLaVA)
    double con_acts = (double)imgs * connector_tokens_out(&cc) * (cc.mlp_hidden + cc.hidden) * 2 * f +
                      (double)imgs * connector_tokens_in(&cc) * cc.in_dim * f;
    double logits = (double)cfg->loss_chunk * (qc.V + 2.0 * qc.C) * f;
    double batch = (double)B * T * (4 * 4 + 1) + (double)imgs * 3 * vc.image_size * vc.image_size * f;
    double total = vit_w + vit_run + llm_p + con_p + grads + adam + acts + scratch + con_acts + logits + batch;
    printf("training memory, fp32 CPU: stage %d, batch %d x %d tokens, %s connector, loss chunk %d\n", cfg->stage, B,
           T, cfg->connector, cfg->loss_chunk);
    printf("  ViT %d layers x %d (frozen), LLM %s C=%d L=%d V=%d\n", vc.layers, vc.hidden, qc.model_type, qc.C, qc.L,
           qc.V);
    print_row("ViT weights (frozen)", vit_w, total);
    print_row("ViT forward scratch (1 image)", vit_run, total);
    print_row("connector params", con_p, total);
    print_row("LLM params", llm_p, total);
    print_row("gradients (trainable only)", grads, total);
    print_row("AdamW m + v", adam, total);
    print_row("LLM activations (kept for backward)", acts, total);
    print_row("LLM backward scratch (one layer)", scratch, total);
    print_row("connector activations", con_acts, total);
    print_row("chunked logits (chunk x V)", logits, total);
    print_row("batch (ids, labels, pixels)", batch, total);
    print_row("total", total, total);
    char b1[32];
    printf("  full logits would be (B*T, V) = %s: never allocated\n",
           bytes_str((double)B * T * qc.V * f, b1, sizeof b1));
    if (gpu) {   // what train --device cuda holds on the GPU (the ViT, connector and batch stay on the host)
        LmGpuMem g = lm_gpu_mem(&qc, B, T, cfg->loss_chunk, cfg->train_llm);
        printf("on the GPU (--device cuda): the LLM in bf16, fp32 master weights, gradients and AdamW moments\n");
        print_row("LLM weights (bf16 compute copy)", g.weights, g.total);
        print_row("LLM master weights (fp32)", g.master, g.total);
        print_row("LLM gradients (fp32)", g.grads, g.total);
        print_row("LLM AdamW m + v (fp32)", g.adam, g.total);
        print_row("LLM activations (kept for backward)", g.acts, g.total);
        print_row("LLM backward scratch (one layer)", g.scratch, g.total);
        print_row("largest transient (loss chunk)", g.transient, g.total);
        print_row("GPU total (predicted)", g.total, g.total);
    }
    table_free(&q_t);
    table_free(&c_t);
    table_free(&s_t);
}

// On a GPU: the allocator's high-water mark beside the prediction for the
// (B, T) the training plan holds now, and the device as cudaMemGetInfo sees it.
static void gpu_mem_line(const Vlm *v, const TrainConfig *cfg, const char *when) {
    size_t fr = 0, tot = 0;
    cuda_mem_info(&fr, &tot);
    LmGpuMem g = lm_gpu_mem(&v->llm.cfg, v->lm.B, v->lm.T, cfg->loss_chunk, !v->freeze_llm);
    char b1[32], b2[32], b3[32], b4[32];
    double peak = (double)cuda_mem_peak();
    fprintf(stderr, "GPU memory %s: allocator peak %s, predicted %s for batch %d x %d (%+.1f%%); device in use %s of %s\n",
            when, bytes_str(peak, b1, sizeof b1), bytes_str(g.total, b2, sizeof b2), v->lm.B, v->lm.T,
            g.total > 0 ? 100.0 * (peak - g.total) / g.total : 0.0, bytes_str((double)(tot - fr), b3, sizeof b3),
            bytes_str((double)tot, b4, sizeof b4));
}

// ----------------------------------------------------------------------------
// One run per --out
//
// A trainer holds OUT/.lock (flock, released by the kernel when the process ends
// in any way, SIGKILL included) for as long as it runs, with its pid written in
// it: a second trainer on the same --out is refused at once, naming the first.

static void lock_out(const char *out) {
    char *p = xsprintf("%s/.lock", out);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail_input(p, "cannot create the lock file: %s", strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "?";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        if (n > 0) pid[strcspn(pid, "\n")] = 0;
        fail_input(out, "in use by another trainer (pid %s holds %s); wait for it, or use another --out", pid, p);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) fail_input(p, "cannot write: %s", strerror(errno));
    free(p);   // fd stays open: the lock lasts as long as the process
}

// The files of a run in OUT: its log, its curve, its checkpoints (step_*).
static bool run_file(const char *name) {
    return !strcmp(name, "log.jsonl") || !strcmp(name, "loss.svg") || !strncmp(name, "step_", 5);
}

// A fresh run into an OUT that holds an earlier run: refused, or with --overwrite
// the earlier run's files are moved (renamed, not copied) into OUT/.replaced,
// which is removed once this run's first checkpoint is complete. A kill or a
// full disk before that leaves the earlier run whole in OUT/.replaced; the next
// --overwrite then keeps it there and clears only what the interrupted run left
// (a log, unfinished checkpoints: it finished none). Returns whether
// OUT/.replaced is waiting to be removed.
static bool clear_earlier_run(const char *out, bool overwrite) {
    char *rep = xsprintf("%s/.replaced", out), *latest = checkpoint_latest(out);
    struct stat sb;
    bool have_rep = lstat(rep, &sb) == 0;
    DIR *d = opendir(out);
    if (!d) fail_input(out, "cannot read: %s", strerror(errno));
    char first[300] = "";
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (run_file(e->d_name) && n++ == 0) snprintf(first, sizeof first, "%s", e->d_name);
    closedir(d);
    if (!overwrite && (n > 0 || have_rep))
        fail_input(out, "holds an earlier run (%s%s); --resume continues it, --overwrite replaces it, or give "
                   "another --out", n ? first : ".replaced", n > 1 ? " and more" : "");
    if (have_rep && latest && checkpoint_remove(rep) != 0) fail_input(rep, "cannot remove: %s", strerror(errno));
    if (have_rep && latest) have_rep = false;   // obsolete: the run after it completed a checkpoint
    if (n == 0) { free(rep); free(latest); return have_rep; }
    if (!have_rep && mkdir(rep, 0755) != 0) fail_input(rep, "cannot create: %s", strerror(errno));
    d = opendir(out);
    if (!d) fail_input(out, "cannot read: %s", strerror(errno));
    while ((e = readdir(d))) {
        if (!run_file(e->d_name)) continue;
        char *from = xsprintf("%s/%s", out, e->d_name), *to = xsprintf("%s/%s", rep, e->d_name);
        int rc = have_rep ? checkpoint_remove(from) : rename(from, to);
        if (rc != 0) fail_input(from, "cannot %s: %s", have_rep ? "remove" : "move into .replaced", strerror(errno));
        free(from);
        free(to);
    }
    closedir(d);
    fprintf(stderr, "--overwrite: the earlier run in %s is in %s until this run's first checkpoint\n", out, rep);
    free(rep);
    free(latest);
    return true;
}

// FNV-1a over the bytes of FILE, continuing from H: what a checkpoint records of
// the data it was trained on, so that --resume with other data is refused.
static uint64_t hash_file(uint64_t h, const char *path) {
    size_t len;
    const char *ferr;
    char *b = read_file(path, &len, &ferr);
    if (!b) fail_input(path, "%s", ferr);
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)b[i]) * 0x100000001b3ull;
    free(b);
    return h;
}

typedef struct {
    const char *config, *data, *images, *features, *out;
    bool resume, mem, overwrite;
    int steps;
    int n_set;
    const char *set[32];   // --set KEY=VALUE overrides, in order
    int kill_at, kill_in_ckpt, nan_at;
} Args;

static int train(const Args *a, TrainConfig *cfg) {
    if (a->steps > 0) cfg->max_steps = a->steps;
    if (!a->data) fail_input("--data", "missing (a .jsonl of LLaVA-style rows)");
    if (!a->images == !a->features) fail_input("--images", "give exactly one of --images DIR and --features FILE");
    if (a->resume && a->overwrite) fail_input("--overwrite", "and --resume: give one");
    ensure_dir(a->out);
    lock_out(a->out);
    bool replaced = a->resume ? false : clear_earlier_run(a->out, a->overwrite);
    FeatSource fs = {0};
    int fT = 0, fD = 0;
    char err[512];
    if (a->features) {
        fs.cache = feat_cache_open(a->features);
        fT = fs.cache->T;
        fD = fs.cache->D;
        fprintf(stderr, "feature cache %s: %d images, (%d, %d) each\n", a->features, fs.cache->n, fT, fD);
    }
    fs.images = a->images;
    fs.cfg = cfg;
    Tokenizer *tok = tok_load(cfg->tokenizer, err, sizeof err);
    if (!tok) fail_input(cfg->tokenizer, "%s", err);
    tok_add_project_tokens(tok);
    ChatFormat fmt;
    chat_format_init(&fmt, tok, cfg->stage, 1, cfg->max_seq_len, cfg->truncate);   // for its ids
    Vlm v;
    build_vlm(&v, cfg, !a->features, fT, fD, tok_vocab_size(tok), fmt.im_end, fmt.eos_id);
    Dataset d;
    dataset_load(&d, a->data, a->images);
    chat_format_init(&fmt, tok, cfg->stage, connector_tokens_out(&v.conn.cfg), cfg->max_seq_len, cfg->truncate);
    fmt.turn_blocks = cfg->turn_blocks;
    fmt.answer_weights = !strcmp(cfg->loss_weight, "answer");
    fmt.pack_len = cfg->pack_len;
    v.freeze_connector = !cfg->train_connector;   // a frozen part gets no gradients and no AdamW state
    v.freeze_llm = !cfg->train_llm;
    const bool gpu = nm_ctx.device == DEVICE_CUDA;
    if (gpu) qwen_to_device(&v.llm, DEVICE_CUDA);   // the LLM's forward, backward and step on the GPU
    vlm_setup(&v, fmt.image_id, cfg->batch_size, 64, cfg->loss_chunk, cfg->z_loss);
    v.image_bidir = !strcmp(cfg->image_attention, "bidirectional");
    AdamW o;
    adamw_init(&o, cfg->beta1, cfg->beta2, cfg->adam_eps, cfg->weight_decay);
    adamw_add_group(&o, "connector", &v.conn.params, &v.conn.grads, cfg->lr_connector, !cfg->train_connector);
    // on a GPU the LLM group steps the fp32 master weights there and rewrites the bf16 copy the forward reads
    adamw_add_group(&o, "llm", gpu && cfg->train_llm ? &v.lm.master : &v.llm.params, &v.lm.grads, cfg->lr,
                    !cfg->train_llm);
    if (gpu && cfg->train_llm) adamw_set_compute(&o, 1, &v.llm.dev);
    TrainState st = {0, 0, cfg->seed, 0};
    st.data_hash = hash_file(0xcbf29ce484222325ull, a->data);
    if (a->features) {
        char *ip = xsprintf("%s/index.json", a->features);
        st.data_hash = hash_file(st.data_hash, ip);
        free(ip);
    }
    char *log_path = xsprintf("%s/log.jsonl", a->out), *svg_path = xsprintf("%s/loss.svg", a->out);
    // the loss curve grows as it goes: a resumed log may hold any number of lines
    int ncurve = 0, ccap = 64;
    Point *curve = xcalloc((size_t)ccap, sizeof *curve);
#define CURVE_ADD(s_, l_) do { if (ncurve == ccap) curve = xrealloc(curve, sizeof *curve * (size_t)(ccap *= 2)); \
                               curve[ncurve++] = (Point){(s_), (l_)}; } while (0)
    if (a->resume) {
        char *ck = checkpoint_latest(a->out);
        if (!ck) fail_input(a->out, "--resume: no complete checkpoint (step_*/COMPLETE) here");
        {   // the checkpoint must be this run's: same config (but for its length and
            // reporting) and same data
            TrainConfig was;
            char *cp = xsprintf("%s/train.conf", ck), diff[2048];
            config_load(&was, cp);
            config_diff(&was, cfg, diff, sizeof diff);
            if (diff[0]) fail_input(cp, "--resume: the checkpoint was trained with other values of: %s", diff);
            free(cp);
        }
        uint64_t want = st.data_hash;
        adamw_state_to_host(&o);   // checkpoints are host tables (no-ops on the CPU)
        checkpoint_load(ck, &v, &o, &st);
        adamw_state_to_device(&o);
        lm_master_from_host(&v.lm);
        if (st.data_hash && st.data_hash != want)
            fail_input(a->data, "--resume: not the data %s was trained on (its file%s differ%s)", ck,
                       a->features ? " or the feature cache's index" : "", a->features ? "" : "s");
        st.data_hash = want;
        if (st.step > cfg->max_steps)
            fail_input(ck, "--resume: the checkpoint is at step %lld, past this run's %d steps",
                       (long long)st.step, cfg->max_steps);
        fprintf(stderr, "resumed from %s: step %lld, data position %lld\n", ck, (long long)st.step, (long long)st.cursor);
        free(ck);
        // keep the log lines of the steps the checkpoint covers, in order, once each; drop the rest
        size_t len;
        const char *ferr;
        char *old = read_file(log_path, &len, &ferr);
        char *keep = NULL;
        size_t klen = 0;
        FILE *kf = open_memstream(&keep, &klen);
        if (old)
            for (char *line = strtok(old, "\n"); line; line = strtok(NULL, "\n")) {
                long long s;
                float l;
                if (sscanf(line, "{\"step\": %lld, \"loss\": %f", &s, &l) == 2 && s <= st.step &&
                    (ncurve == 0 || s > curve[ncurve - 1].step)) {
                    fprintf(kf, "%s\n", line);
                    CURVE_ADD(s, l);
                }
            }
        fclose(kf);
        if (write_file_atomic(log_path, keep, klen) != 0) fail_input(log_path, "cannot write: %s", strerror(errno));
        free(keep);
        free(old);
    } else if (write_file_atomic(log_path, "", 0) != 0) {
        fail_input(log_path, "cannot write: %s", strerror(errno));
    }
    FILE *logf = fopen(log_path, "a");
    if (!logf) fail_input(log_path, "cannot open: %s", strerror(errno));
    DataOrder order;
    data_order_init(&order, &d, cfg->seed, cfg->shuffle);
    order.batch = cfg->batch_size;
    order.bucket_batches = cfg->bucket;
    fprintf(stderr, "training: stage %d, %d rows, batch %d x accum %d, %d steps, lr %g (connector %g)%s%s\n",
            cfg->stage, d.n, cfg->batch_size, cfg->grad_accum, cfg->max_steps, (double)cfg->lr,
            (double)cfg->lr_connector, cfg->train_connector ? "" : ", connector frozen", cfg->train_llm ? "" : ", LLM frozen");
    char *last_ckpt = checkpoint_latest(a->out);
    double t0 = now_seconds();
    int64_t first = st.step;
    int GA = cfg->grad_accum;
    Batch *bs = xcalloc((size_t)GA, sizeof *bs);
    while (st.step < cfg->max_steps) {
        double ts = now_seconds();
        int64_t cursor0 = st.cursor;
        int sup = 0, toks = 0, all = 0;
        double wsum = 0;   // what the loss is a mean over: supervised tokens, or answers
        for (int k = 0; k < GA; k++) {
            data_next_batch(&bs[k], &order, &fmt, cfg->batch_size, &st.cursor, stderr);
            sup += bs[k].n_sup;
            wsum += bs[k].sup_weight;
            toks += bs[k].n_tokens;
            all += bs[k].B * bs[k].T;
        }
        adamw_zero_grad(&o);
        double ce = 0, z = 0;
        for (int k = 0; k < GA; k++) {
            float *feats = xmalloc(((size_t)bs[k].n_images * connector_tokens_in(&v.conn.cfg) * v.conn.cfg.in_dim + 1) *
                                   sizeof(float));
            batch_features(&v, &fs, &bs[k], feats);
            LossStats ls = vlm_forward_backward(&v, &bs[k], feats, 1.0f / (float)wsum, true);
            ce += ls.ce_sum;
            z += ls.z_sum;
            free(feats);
        }
        float loss = (float)(ce / wsum);
        if (a->nan_at == st.step + 1) loss = NAN;
        if (!isfinite(loss)) {
            fail_input(a->data, "step %lld: loss is %s on the batch of data positions %lld..%lld (rows %d..); "
                       "stopping; last checkpoint %s is intact",
                       (long long)st.step + 1, isnan(loss) ? "NaN" : "infinite", (long long)cursor0,
                       (long long)st.cursor - 1, bs[0].rows[0] + 1, last_ckpt ? last_ckpt : "(none yet)");
        }
        double norm = adamw_clip(&o, cfg->max_grad_norm);
        float lrf = lr_schedule(st.step, cfg->warmup_steps, cfg->max_steps, cfg->min_lr_ratio);
        adamw_step(&o, lrf);
        st.step++;
        if (gpu && st.step == first + 1) gpu_mem_line(&v, cfg, "after the first step");
        for (int k = 0; k < GA; k++) batch_free(&bs[k]);
        double dt = now_seconds() - ts, el = now_seconds() - t0;
        double eta = el / (double)(st.step - first) * (double)(cfg->max_steps - st.step);
        // every write of the log is checked: a full disk stops the run, naming the
        // last complete checkpoint, and the line it could not finish is taken back
        // off the log, which ends with a whole line as before
        long line_at = ftell(logf);
        int wrote = fprintf(logf, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens\": %d, "
                      "\"supervised\": %d, \"supervised_frac\": %.4f, \"padded\": %d, \"seconds\": %.4f, \"z\": %.6g}\n",
                (long long)st.step, (double)loss, (double)(cfg->lr * lrf), norm, toks, sup, (double)sup / toks, all, dt,
                z / wsum);
        if (wrote < 0 || fflush(logf) != 0) {
            int e = errno;
            if (line_at >= 0 && ftruncate(fileno(logf), line_at) == 0) fsync(fileno(logf));
            errno = e;
            fail_input(log_path, "cannot write step %lld: %s; last checkpoint %s is intact", (long long)st.step,
                       strerror(errno), last_ckpt ? last_ckpt : "(none yet)");
        }
        CURVE_ADD(st.step, loss);
        if (st.step % cfg->log_every == 0 || st.step == cfg->max_steps) {
            fprintf(stderr, "step %5lld/%d | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | sup %.0f%% | ETA %.0fs\n",
                    (long long)st.step, cfg->max_steps, (double)loss, (double)(cfg->lr * lrf), norm, toks / dt,
                    100.0 * sup / toks, eta);
            write_svg(svg_path, curve, ncurve);
        }
        bool save = (cfg->save_every && st.step % cfg->save_every == 0) || st.step == cfg->max_steps;
        if (save) {
            if (fsync(fileno(logf)) != 0)
                fail_input(log_path, "cannot sync: %s; last checkpoint %s is intact", strerror(errno),
                           last_ckpt ? last_ckpt : "(none yet)");
            lm_master_to_host(&v.lm);   // checkpoints are host tables (no-ops on the CPU)
            adamw_state_to_host(&o);
            if (checkpoint_save(a->out, &v, &o, &st, cfg, a->kill_in_ckpt == st.step, err, sizeof err) != 0)
                fail_input(a->out, "checkpoint: %s; last checkpoint %s is intact", err,
                           last_ckpt ? last_ckpt : "(none yet)");
            adamw_state_to_device(&o);
            if (replaced) {   // this run has a complete checkpoint now: the one it replaced can go
                char *rep = xsprintf("%s/.replaced", a->out);
                if (checkpoint_remove(rep) != 0) fail_input(rep, "cannot remove: %s", strerror(errno));
                free(rep);
                replaced = false;
            }
            free(last_ckpt);   // the one just written (an older run's may be newer in the same --out)
            last_ckpt = xsprintf("%s/step_%08lld", a->out, (long long)st.step);
        }
        if (a->kill_at == st.step) raise(SIGKILL);
    }
    write_svg(svg_path, curve, ncurve);
    if (gpu) gpu_mem_line(&v, cfg, "at the end");
    fprintf(stderr, "done: %lld steps; log %s, curve %s, checkpoint %s\n", (long long)st.step, log_path, svg_path,
            last_ckpt ? last_ckpt : "-");
    if (fclose(logf) != 0) fail_input(log_path, "cannot write: %s", strerror(errno));
#undef CURVE_ADD
    free(bs);
    free(last_ckpt);
    free(curve);
    free(log_path);
    free(svg_path);
    data_order_free(&order);
    adamw_free(&o);
    dataset_free(&d);
    vlm_free(&v);
    tok_free(tok);
    feat_cache_close(fs.cache);
    return 0;
}

// ----------------------------------------------------------------------------
// The demo's dataset: coloured shapes on grey, captioned.

static void write_demo_data(const char *dir, int n, uint64_t seed) {
    static const char *colors[] = {"red", "green", "blue", "yellow"};
    static const unsigned char rgb[4][3] = {{220, 40, 40}, {40, 200, 60}, {40, 70, 220}, {230, 210, 40}};
    static const char *shapes[] = {"square", "circle"};
    char *imgdir = xsprintf("%s/images", dir);
    ensure_dir(imgdir);
    Rng r;
    rng_seed(&r, seed, 77);
    char *jl = NULL;
    size_t jlen = 0;
    FILE *jf = open_memstream(&jl, &jlen);
    const int S = 64;
    unsigned char *px = xmalloc((size_t)S * S * 3);
    for (int i = 0; i < n; i++) {
        int c = (int)rng_below(&r, 4), s = (int)rng_below(&r, 2);
        int cx = 16 + (int)rng_below(&r, 32), cy = 16 + (int)rng_below(&r, 32), rad = 8 + (int)rng_below(&r, 6);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                bool in = s == 0 ? (abs(x - cx) <= rad && abs(y - cy) <= rad)
                                 : ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= rad * rad);
                for (int k = 0; k < 3; k++) px[((size_t)y * S + x) * 3 + k] = in ? rgb[c][k] : 128;
            }
        char *hdr = xsprintf("P6\n%d %d\n255\n", S, S);
        size_t hl = strlen(hdr);
        char *file = xmalloc(hl + (size_t)S * S * 3);
        memcpy(file, hdr, hl);
        memcpy(file + hl, px, (size_t)S * S * 3);
        char *p = xsprintf("%s/shape%03d.ppm", imgdir, i);
        if (write_file_atomic(p, file, hl + (size_t)S * S * 3) != 0) fail_input(p, "cannot write");
        free(p);
        free(file);
        free(hdr);
        fprintf(jf, "{\"id\": \"%d\", \"image\": \"shape%03d.ppm\", \"conversations\": [{\"from\": \"human\", "
                    "\"value\": \"<image>\\n\"}, {\"from\": \"gpt\", \"value\": \"a %s %s\"}]}\n",
                i, i, colors[c], shapes[s]);
    }
    fclose(jf);
    char *p = xsprintf("%s/captions.jsonl", dir);
    if (write_file_atomic(p, jl, jlen) != 0) fail_input(p, "cannot write");
    free(p);
    free(jl);
    free(px);
    free(imgdir);
}

int main(int argc, char **argv) {
    // the world's commands parse their own flags (world.h, eval.h)
    if (argc > 1 && !strcmp(argv[1], "generate")) return world_cli_generate(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "score")) return eval_cli_score(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "eval")) return nano_cli_eval(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "chat")) return nano_cli_chat(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "export-llava")) return llava_cli_export(argc - 1, argv + 1);
    Args a = {.out = NULL, .steps = 0, .kill_at = -1, .kill_in_ckpt = -1, .nan_at = -1};
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"data", required_argument, 0, 'd'},
        {"images", required_argument, 0, 'i'}, {"features", required_argument, 0, 'f'},
        {"out", required_argument, 0, 'o'},    {"resume", no_argument, 0, 'r'},
        {"steps", required_argument, 0, 's'},  {"threads", required_argument, 0, 't'},
        {"mem", no_argument, 0, 'm'},          {"kill-at-step", required_argument, 0, 'K'},
        {"kill-in-checkpoint", required_argument, 0, 'C'}, {"inject-nan", required_argument, 0, 'N'},
        {"set", required_argument, 0, 'S'},    {"device", required_argument, 0, 'D'},
        {"overwrite", no_argument, 0, 'O'},    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *device = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': a.config = optarg; break;
        case 'd': a.data = optarg; break;
        case 'i': a.images = optarg; break;
        case 'f': a.features = optarg; break;
        case 'o': a.out = optarg; break;
        case 'r': a.resume = true; break;
        case 'O': a.overwrite = true; break;
        case 's': a.steps = parse_int_arg("--steps", optarg, 1, 1000000000); break;   // max_steps' range
        case 't': nm_ctx.threads = parse_threads_arg(optarg); ctx_apply_threads(); break;
        case 'm': a.mem = true; break;
        case 'K': a.kill_at = parse_int_arg("--kill-at-step", optarg, 1, INT_MAX); break;
        case 'C': a.kill_in_ckpt = parse_int_arg("--kill-in-checkpoint", optarg, 1, INT_MAX); break;
        case 'N': a.nan_at = parse_int_arg("--inject-nan", optarg, 1, INT_MAX); break;
        case 'D': device = optarg; break;
        case 'S':
            if (a.n_set == 32) fail_input("--set", "at most 32 overrides");
            a.set[a.n_set++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    const char *cmd = optind < argc ? argv[optind] : NULL;
    if (cmd && strcmp(cmd, "train")) {
        fprintf(stderr, "error: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    // `train` runs on a GPU when asked (never by default: the CPU run's bits are the reference); the rest on the CPU
    // --mem --device cuda prices the GPU run without needing a GPU
    const bool mem_gpu = a.mem && device && !strcmp(device, "cuda");
    device_select(device && !mem_gpu ? device : "cpu", a.mem ? "--mem" : cmd ? "train" : "demo", cmd && !a.mem,
                  cuda_available());
    TrainConfig cfg;
    if (a.config) config_load(&cfg, a.config);
    else config_defaults(&cfg);
    for (int i = 0; i < a.n_set; i++) config_set(&cfg, a.set[i]);
    if (a.mem) {
        mem_report(&cfg, mem_gpu);
        return 0;
    }
    if (!cmd) {
        // the demo: generate 32 captioned shapes, train the nano model on them
        if (!a.out) a.out = "build/demo05";
        if (!a.resume) a.overwrite = true;   // the demo's --out is its own: a second demo replaces the first
        ensure_dir(a.out);
        write_demo_data(a.out, 32, cfg.seed);
        char *data = xsprintf("%s/captions.jsonl", a.out), *img = xsprintf("%s/images", a.out);
        a.data = data;
        a.images = img;
        if (!a.config) cfg.max_steps = 40;
        fprintf(stderr, "demo: 32 generated images with captions in %s; nano ViT (random, frozen) + mlp connector "
                        "+ nano Qwen3 (random)\n", a.out);
        int rc = train(&a, &cfg);
        free(data);
        free(img);
        return rc;
    }
    if (!a.config) fail_input("--config", "missing (see 05_training/configs/)");
    if (!a.out) a.out = "build/train05";
    return train(&a, &cfg);
}
