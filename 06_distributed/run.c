// run.c: chapter 06's command line: chapter 05's trainer on N ranks.
//
//   mpirun -np N ./06_distributed/run train --config FILE --data JSONL (--images DIR | --features DIR)
//                 [--out DIR] [--zero] [--reduce ordered|ring] [--resume] [--steps N] [--timeout S]
//   srun -n N ./06_distributed/run train ...       the same under Slurm (srun --mpi=pmix)
//   ./06_distributed/run --mem [--config FILE] [--ranks N]    memory per rank, plain and ZeRO-1
//   mpirun -np N ./06_distributed/run bench        MPI all-reduce bandwidth by message size
//
// One process (./06_distributed/run train ..., or mpirun -np 1) trains as
// chapter 05's `run train` does: the same model from the same config, the
// same data order, the same log.jsonl and loss.svg. With N ranks the global batch is the
// same grad_accum micro-batches, spread over the ranks (dp.h), and the losses
// and weights are those of one process, bit for bit, with reduce = ordered.
// Rank 0 writes the log and the model files; every rank writes its shard of
// the optimizer state.
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <errno.h>
#include <unistd.h>

#include "01_tensor/common.h"
#include "05_training/adamw.h"
#include "05_training/checkpoint.h"
#include "05_training/config.h"
#include "05_training/data.h"
#include "05_training/nano.h"
#include "05_training/setup.h"
#include "05_training/vlm.h"
#include "06_distributed/comm.h"
#include "06_distributed/dp.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -np N run train --config FILE --data JSONL (--images DIR | --features DIR) [options]\n"
            "       srun -n N run train ...              the same on Slurm (srun --mpi=pmix, or pmi2)\n"
            "       run train ...                        one process: chapter 05's trainer\n"
            "       run --mem [--config FILE] [--ranks N] memory per rank, plain data parallel and ZeRO-1\n"
            "       mpirun -np N run bench [--max-mib M] MPI all-reduce bandwidth by message size\n"
            "launch, one machine:   mpirun -np 4 --bind-to none ./06_distributed/run train ...\n"
            "        as root (CI):  mpirun --allow-run-as-root --oversubscribe -np 3 ...\n"
            "        many machines: srun -N 2 --ntasks-per-node 8 --mpi=pmix ./06_distributed/run train ...\n"
            "options:\n"
            "  --config FILE        stage config (05_training/configs/*.conf, 06_distributed/configs/*.conf)\n"
            "  --data JSONL, --images DIR, --features DIR   as chapter 05's run train\n"
            "  --out DIR            log.jsonl and checkpoints (default build/train06)\n"
            "  --zero               ZeRO-1: AdamW's state sharded over the ranks\n"
            "  --reduce MODE        ordered (default): the gradients summed in micro-batch order, the\n"
            "                       same bits for any rank count; ring: MPI's all-reduce (faster, equal\n"
            "                       to one process up to rounding)\n"
            "  --resume             continue from the newest complete checkpoint in --out (any rank count)\n"
            "  --steps N            override max_steps\n"
            "  --set KEY=VALUE      override one config key (repeatable)\n"
            "  --timeout S          a rank silent for S seconds ends the job (default 60)\n"
            "  --threads N          OpenMP threads per rank\n"
            "testing aids:\n"
            "  --kill-rank R --kill-at-step K   rank R SIGKILLs itself in step K, after its backward\n"
            "  --hang-rank R --hang-at-step K   rank R stops answering in step K (sleeps forever)\n"
            "  --hang-in-reduce     ... after the step's check-in, so that the others wait in the gradient sum\n"
            "  -h, --help           this text\n");
}

typedef struct {
    const char *config, *data, *images, *features, *out;
    bool resume, zero, ordered;
    int steps, n_set;
    const char *set[32];
    double timeout;
    int kill_rank, kill_at, hang_rank, hang_at;
    bool hang_in_reduce;   // hang after the check-in, inside the gradient sum, not before it
} Args;

// ----------------------------------------------------------------------------
// Training

static int train(Comm *c, const Args *a, TrainConfig *cfg) {
    const bool lead = c->rank == 0;
    if (a->steps > 0) cfg->max_steps = a->steps;
    if (!a->data) fail_input("--data", "missing (a .jsonl of LLaVA-style rows)");
    if (!a->images == !a->features) fail_input("--images", "give exactly one of --images DIR and --features DIR");
    if (lead) ensure_dir(a->out);
    comm_barrier(c, "the output folder");
    FeatSource fs = {0};
    int fT = 0, fD = 0;
    char err[512];
    if (a->features) {
        fs.cache = feat_cache_open(a->features);
        fT = fs.cache->T;
        fD = fs.cache->D;
    }
    fs.images = a->images;
    fs.cfg = cfg;
    Tokenizer *tok = tok_load(cfg->tokenizer, err, sizeof err);
    if (!tok) fail_input(cfg->tokenizer, "%s", err);
    tok_add_project_tokens(tok);
    ChatFormat fmt;
    chat_format_init(&fmt, tok, cfg->stage, 1, cfg->max_seq_len, cfg->truncate);
    Vlm v;
    build_vlm(&v, cfg, !a->features, fT, fD, tok_vocab_size(tok), fmt.im_end, fmt.eos_id);
    Dataset ds;
    dataset_load(&ds, a->data, a->images);
    chat_format_init(&fmt, tok, cfg->stage, connector_tokens_out(&v.conn.cfg), cfg->max_seq_len, cfg->truncate);
    fmt.turn_blocks = cfg->turn_blocks;
    fmt.answer_weights = !strcmp(cfg->loss_weight, "answer");
    fmt.pack_len = cfg->pack_len;
    v.freeze_connector = !cfg->train_connector;   // as in chapter 05: a frozen part gets no gradients
    v.freeze_llm = !cfg->train_llm;
    vlm_setup(&v, fmt.image_id, cfg->batch_size, 64, cfg->loss_chunk, cfg->z_loss);
    v.image_bidir = !strcmp(cfg->image_attention, "bidirectional");
    // the groups as chapter 05 makes them; their moments live in the Dp, sharded or not
    AdamW o;
    adamw_init(&o, cfg->beta1, cfg->beta2, cfg->adam_eps, cfg->weight_decay);
    o.g[o.n++] = (AdamGroup){.name = "connector", .params = &v.conn.params, .grads = &v.conn.grads,
                             .lr = cfg->lr_connector, .frozen = !cfg->train_connector};
    o.g[o.n++] = (AdamGroup){.name = "llm", .params = &v.llm.params, .grads = &v.lm.grads, .lr = cfg->lr,
                             .frozen = !cfg->train_llm};
    const int GA = cfg->grad_accum;
    int first, mine;
    dp_micro_range(GA, c->world, c->rank, &first, &mine);
    Dp d;
    dp_init(&d, c, &o, a->zero, a->ordered, mine);
    TrainState st = {0, 0, cfg->seed, 0};   // data_hash 0: the data is not recorded
    if (a->resume) {
        char *ck = checkpoint_latest(a->out);
        if (!ck) fail_input(a->out, "--resume: no complete checkpoint (step_*/COMPLETE) here");
        dp_checkpoint_load(&d, ck, &v, &st);
        if (lead) fprintf(stderr, "resumed from %s: step %lld, data position %lld\n", ck, (long long)st.step, (long long)st.cursor);
        free(ck);
    }
    char *log_path = xsprintf("%s/log.jsonl", a->out), *svg_path = xsprintf("%s/loss.svg", a->out);
    FILE *logf = NULL;
    Point *curve = xcalloc((size_t)cfg->max_steps + 1, sizeof *curve);
    int ncurve = 0;
    if (lead) {
        // keep the log lines of the steps the checkpoint covers, drop the rest
        size_t len = 0;
        const char *ferr;
        char *old = a->resume ? read_file(log_path, &len, &ferr) : NULL;
        char *keep = NULL;
        size_t klen = 0;
        FILE *kf = open_memstream(&keep, &klen);
        if (old)
            for (char *line = strtok(old, "\n"); line; line = strtok(NULL, "\n")) {
                long long s;
                float l;
                if (sscanf(line, "{\"step\": %lld, \"loss\": %f", &s, &l) == 2 && s <= st.step) {
                    fprintf(kf, "%s\n", line);
                    if (ncurve <= cfg->max_steps) curve[ncurve++] = (Point){s, l};
                }
            }
        fclose(kf);
        write_file_atomic(log_path, keep, klen);
        free(keep);
        free(old);
        logf = fopen(log_path, "a");
        if (!logf) fail_input(log_path, "cannot open: %s", strerror(errno));
    }
    DataOrder order;
    data_order_init(&order, &ds, cfg->seed, cfg->shuffle);
    order.batch = cfg->batch_size;
    order.bucket_batches = cfg->bucket;
    if (lead)
        fprintf(stderr, "training on %d rank%s (%s, reduce %s): stage %d, %d rows, batch %d x accum %d, %d steps, "
                        "%lld trainable numbers, shard %lld\n",
                c->world, c->world > 1 ? "s" : "", a->zero ? "ZeRO-1" : "data parallel", a->ordered ? "ordered" : "ring",
                cfg->stage, ds.n, cfg->batch_size, GA, cfg->max_steps, (long long)d.P, (long long)(d.hi - d.lo));
    if (lead && mine == 0) fprintf(stderr, "note: grad_accum %d < %d ranks: some ranks have no micro-batch\n", GA, c->world);
    Batch *bs = xcalloc((size_t)GA, sizeof *bs);
    double *ce = xcalloc(2 * (size_t)GA, sizeof(double)), *z = ce + GA;   // per micro-batch, in order
    int64_t *per = xcalloc((size_t)c->world, sizeof *per);
    for (int r = 0; r < c->world; r++) {
        int f0, n0;
        dp_micro_range(GA, c->world, r, &f0, &n0);
        per[r] = n0;
    }
    double t0 = now_seconds();
    int64_t step0 = st.step;
    while (st.step < cfg->max_steps) {
        double ts = now_seconds();
        int sup = 0, toks = 0, all = 0;
        double wsum = 0;
        // every rank reads the whole global batch's rows (text only, cheap), so that each
        // knows what the loss is a mean over; pixels or features only of its own micro-batches
        for (int k = 0; k < GA; k++) {
            data_next_batch(&bs[k], &order, &fmt, cfg->batch_size, &st.cursor, lead ? stderr : NULL);
            sup += bs[k].n_sup;
            wsum += bs[k].sup_weight;
            toks += bs[k].n_tokens;
            all += bs[k].B * bs[k].T;
        }
        memset(ce, 0, 2 * (size_t)GA * sizeof(double));
        for (int i = 0; i < mine; i++) {
            const Batch *b = &bs[first + i];
            float *feats = xmalloc(((size_t)b->n_images * connector_tokens_in(&v.conn.cfg) * v.conn.cfg.in_dim + 1) *
                                   sizeof(float));
            batch_features(&v, &fs, b, feats);
            adamw_zero_grad(&o);   // each micro-batch's gradient alone, into zeros
            LossStats ls = vlm_forward_backward(&v, b, feats, 1.0f / (float)wsum, true);
            ce[first + i] = ls.ce_sum;
            z[first + i] = ls.z_sum;
            dp_keep_grad(&d, i);
            free(feats);
        }
        if (a->kill_rank == c->rank && a->kill_at == st.step + 1) raise(SIGKILL);
        const bool hang = a->hang_rank == c->rank && a->hang_at == st.step + 1;
        if (hang && !a->hang_in_reduce)
            for (;;) pause();
        comm_checkin(c, st.step + 1);
        if (hang)   // the others are already in the sum: only the watchdog can end it
            for (;;) pause();
        comm_allgather_f64(c, ce, per, "the micro-batch losses");
        comm_allgather_f64(c, z, per, "the micro-batch z-losses");
        double ces = 0, zs = 0;
        for (int k = 0; k < GA; k++) { ces += ce[k]; zs += z[k]; }
        float loss = (float)(ces / wsum);
        if (!isfinite(loss))
            comm_abort(c, "step %lld: loss is %s; stopping; the last complete checkpoint in %s is intact",
                       (long long)st.step + 1, isnan(loss) ? "NaN" : "infinite", a->out);
        float lrf = lr_schedule(st.step, cfg->warmup_steps, cfg->max_steps, cfg->min_lr_ratio);
        double norm = dp_step(&d, cfg->max_grad_norm, lrf);
        st.step++;
        for (int k = 0; k < GA; k++) batch_free(&bs[k]);
        double dt = now_seconds() - ts, el = now_seconds() - t0;
        if (lead) {
            fprintf(logf, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.9g, \"tokens\": %d, "
                          "\"supervised\": %d, \"padded\": %d, \"seconds\": %.4f, \"z\": %.6g, \"ranks\": %d}\n",
                    (long long)st.step, (double)loss, (double)(cfg->lr * lrf), norm, toks, sup, all, dt, zs / wsum,
                    c->world);
            fflush(logf);
            if (ncurve <= cfg->max_steps) curve[ncurve++] = (Point){st.step, loss};
            if (st.step % cfg->log_every == 0 || st.step == cfg->max_steps) write_svg(svg_path, curve, ncurve);
            if (st.step % cfg->log_every == 0 || st.step == cfg->max_steps)
                fprintf(stderr, "step %5lld/%d | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | %d ranks | ETA %.0fs\n",
                        (long long)st.step, cfg->max_steps, (double)loss, (double)(cfg->lr * lrf), norm, toks / dt,
                        c->world, el / (double)(st.step - step0) * (double)(cfg->max_steps - st.step));
        }
        bool save = (cfg->save_every && st.step % cfg->save_every == 0) || st.step == cfg->max_steps;
        if (save && dp_checkpoint_save(&d, a->out, &v, &st, cfg, err, sizeof err) != 0)
            comm_abort(c, "checkpoint: %s", err);
    }
    if (lead) fprintf(stderr, "done: %lld steps on %d ranks; log %s, curve %s\n", (long long)st.step, c->world, log_path,
                      svg_path);
    if (logf) fclose(logf);
    free(per);
    free(ce);
    free(bs);
    free(curve);
    free(log_path);
    free(svg_path);
    data_order_free(&order);
    dp_free(&d);
    dataset_free(&ds);
    vlm_free(&v);
    tok_free(tok);
    feat_cache_close(fs.cache);
    return 0;
}

// ----------------------------------------------------------------------------
// --mem: what ZeRO-1 saves

static void mem_report(const TrainConfig *cfg, int ranks) {
    QwenConfig qc = qwen_nano_config();
    if (strcmp(cfg->llm, "nano")) {
        char *cj = xsprintf("%s/config.json", cfg->llm);
        if (access(cj, R_OK) == 0) qwen_config_load(&qc, cfg->llm);
        else {
            printf("(no %s: using Qwen3-0.6B's config)\n", cj);
            qc.C = 1024; qc.I = 3072; qc.L = 28; qc.NH = 16; qc.NKV = 8; qc.HD = 128; qc.V = 151936;
        }
        free(cj);
    }
    Table q = {0};
    table_init(&q, "qwen");
    qwen_params_build(&q, &qc);
    double P = (double)table_numel(&q, false) * cfg->train_llm;
    table_free(&q);
    printf("LLM %s: C=%d L=%d V=%d, %.1fM trainable parameters (%.0f numbers; the connector adds a few %%)\n",
           qc.model_type, qc.C, qc.L, qc.V, P / 1e6, P);
    // the CPU trainer: fp32 weights, fp32 gradients, fp32 m and v
    // a GPU trainer in mixed precision: bf16 weights and gradients, fp32 master copy, m and v
    printf("bytes per rank       %-16s %-16s %-16s | %-16s %-16s\n", "fp32 plain DP", "fp32 ZeRO-1", "saved",
           "bf16+fp32 plain", "bf16+fp32 ZeRO-1");
    for (int n = 1; n <= ranks; n *= 2) {
        double f_plain = P * (4 + 4 + 8), f_zero = P * (4 + 4 + 8.0 / n);
        double m_plain = P * (2 + 2 + 12), m_zero = P * (2 + 2 + 12.0 / n);
        char a[32], b[32], s[32], x[32], y[32];
        printf("  %2d rank%s          %-16s %-16s %-16s | %-16s %-16s\n", n, n > 1 ? "s" : " ",
               bytes_str(f_plain, a, sizeof a), bytes_str(f_zero, b, sizeof b), bytes_str(f_plain - f_zero, s, sizeof s),
               bytes_str(m_plain, x, sizeof x), bytes_str(m_zero, y, sizeof y));
        if (n < ranks && n * 2 > ranks) n = ranks / 2;   // ends on `ranks` itself
    }
    char g1[32];
    printf("reduce = ordered also keeps a rank's micro-batch gradients until the sum reaches it: ceil(K / N) x %s\n"
           "(K = grad_accum = %d here: ", bytes_str(P * 4, g1, sizeof g1), cfg->grad_accum);
    for (int n = 4; n <= 8 && n <= ranks; n *= 2) {
        char b[32];
        printf("%s%s on %d ranks", n > 4 ? ", " : "", bytes_str(P * 4 * ((cfg->grad_accum + n - 1) / n), b, sizeof b), n);
    }
    printf("); reduce = ring keeps none\n(activations are per rank and not sharded: chapter 05's --mem gives them)\n");
}

// ----------------------------------------------------------------------------
// bench: MPI all-reduce bandwidth by message size

static void bench(Comm *c, int max_mib) {
    if (c->rank == 0)
        printf("MPI_Allreduce, %d ranks, fp32 sum: bus bandwidth = size / time x 2(N-1)/N\n%12s %10s %12s %12s\n",
               c->world, "bytes", "us", "algbw GB/s", "busbw GB/s");
    for (int64_t bytes = 1024; bytes <= (int64_t)max_mib << 20; bytes *= 4) {
        int64_t n = bytes / 4;
        float *x = xcalloc((size_t)n, sizeof(float));
        int iters = bytes < (1 << 20) ? 200 : bytes < (16 << 20) ? 20 : 5;
        comm_allreduce_sum(c, x, n, "bench warm-up");
        double t = 1e30;   // the best of 3 runs of `iters`
        for (int rep = 0; rep < 3; rep++) {
            comm_barrier(c, "bench");
            double t0 = now_seconds();
            for (int i = 0; i < iters; i++) comm_allreduce_sum(c, x, n, "bench");
            double ti = (now_seconds() - t0) / iters;
            if (ti < t) t = ti;
        }
        comm_bcast(c, &t, sizeof t, 0, "bench time");
        double alg = (double)bytes / t / 1e9;
        if (c->rank == 0)
            printf("%12lld %10.1f %12.3f %12.3f\n", (long long)bytes, t * 1e6, alg,
                   alg * 2.0 * (c->world - 1) / (c->world > 1 ? c->world : 1));
        free(x);
    }
}

int main(int argc, char **argv) {
    Args a = {.out = "build/train06", .ordered = true, .timeout = 60, .kill_rank = -1, .kill_at = -1,
              .hang_rank = -1, .hang_at = -1};
    bool mem = false;
    int ranks = 8, max_mib = 64;
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"data", required_argument, 0, 'd'},
        {"images", required_argument, 0, 'i'}, {"features", required_argument, 0, 'f'},
        {"out", required_argument, 0, 'o'},    {"resume", no_argument, 0, 'r'},
        {"steps", required_argument, 0, 's'},  {"threads", required_argument, 0, 't'},
        {"zero", no_argument, 0, 'z'},         {"reduce", required_argument, 0, 'R'},
        {"timeout", required_argument, 0, 'T'}, {"mem", no_argument, 0, 'm'},
        {"ranks", required_argument, 0, 'n'},  {"max-mib", required_argument, 0, 'M'},
        {"kill-rank", required_argument, 0, 1}, {"kill-at-step", required_argument, 0, 2},
        {"hang-rank", required_argument, 0, 3}, {"hang-at-step", required_argument, 0, 4},
        {"hang-in-reduce", no_argument, 0, 5}, {"set", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': a.config = optarg; break;
        case 'd': a.data = optarg; break;
        case 'i': a.images = optarg; break;
        case 'f': a.features = optarg; break;
        case 'o': a.out = optarg; break;
        case 'r': a.resume = true; break;
        case 's': a.steps = parse_int_arg("--steps", optarg, 1, 1000000000); break;
        case 't': nm_ctx.threads = parse_int_arg("--threads", optarg, 1, 4096); ctx_apply_threads(); break;
        case 'z': a.zero = true; break;
        case 'R':
            if (!strcmp(optarg, "ordered")) a.ordered = true;
            else if (!strcmp(optarg, "ring")) a.ordered = false;
            else fail_input("--reduce", "'%s' is not ordered or ring", optarg);
            break;
        case 'T': a.timeout = parse_real_arg("--timeout", optarg, 0.1, 86400); break;
        case 'm': mem = true; break;
        case 'n': ranks = parse_int_arg("--ranks", optarg, 1, 1 << 20); break;
        case 'M': max_mib = parse_int_arg("--max-mib", optarg, 1, 4096); break;
        case 1: a.kill_rank = parse_int_arg("--kill-rank", optarg, 0, INT_MAX); break;
        case 2: a.kill_at = parse_int_arg("--kill-at-step", optarg, 1, INT_MAX); break;
        case 3: a.hang_rank = parse_int_arg("--hang-rank", optarg, 0, INT_MAX); break;
        case 4: a.hang_at = parse_int_arg("--hang-at-step", optarg, 1, INT_MAX); break;
        case 5: a.hang_in_reduce = true; break;
        case 'S':
            if (a.n_set == 32) fail_input("--set", "at most 32 overrides");
            a.set[a.n_set++] = optarg;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    const char *cmd = optind < argc ? argv[optind] : NULL;
    if (!mem && (!cmd || (strcmp(cmd, "train") && strcmp(cmd, "bench")))) {
        if (cmd) fail_input(cmd, "unknown command (train or bench; --help shows them)");
        usage(stderr);
        return 2;
    }
    TrainConfig cfg;
    if (a.config) config_load(&cfg, a.config);
    else config_defaults(&cfg);
    for (int i = 0; i < a.n_set; i++) config_set(&cfg, a.set[i]);
    if (mem) {
        mem_report(&cfg, ranks);
        return 0;
    }
    if (!strcmp(cmd, "train") && !a.config) fail_input("--config", "missing (see 06_distributed/configs/)");
    Comm c;
    comm_init(&c, &argc, &argv, a.timeout);
    if (a.kill_rank >= c.world || a.hang_rank >= c.world)
        comm_abort(&c, "--kill-rank/--hang-rank names a rank beyond the %d of this job", c.world);
    int rc = 0;
    if (!strcmp(cmd, "bench")) bench(&c, max_mib);
    else rc = train(&c, &a, &cfg);
    comm_finalize(&c);
    return rc;
}
