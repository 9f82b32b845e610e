// 01_tensor/run.c: chapter 01's command line.
//
//   ./01_tensor/run                  a guided tour: build a tensor table, save it as
//                                    safetensors, read it back, inspect it, a short SGEMM bench
//   ./01_tensor/run inspect PATH     list the tensors of a .safetensors file or a model directory
//   ./01_tensor/run bench [...]      SGEMM GFLOP/s and the % of this CPU's peak
//
// Everything this chapter builds is on show here: the Table that will describe
// every model of the book, the safetensors reader and writer that move tables
// to and from HuggingFace's files, bf16 rounding, and the matmul.
#include <getopt.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "01_tensor/bench.h"
#include "01_tensor/common.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"
#include "01_tensor/safetensors.h"
#include "01_tensor/tensor.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ./01_tensor/run [COMMAND] [ARGS] [--device cpu]\n"
            "\n"
            "Chapter 01: tensors, the tensor table, safetensors, matmul.\n"
            "\n"
            "commands:\n"
            "  (none)            a tour: writes a small model file to a temporary directory,\n"
            "                    reads it back, inspects it and runs a short SGEMM benchmark\n"
            "  inspect PATH      one line per tensor of a .safetensors or torch.save .bin file, or of a\n"
            "                    HuggingFace model directory (model.safetensors or pytorch_model.bin,\n"
            "                    single or sharded with its .index.json): name, dtype, shape, bytes;\n"
            "                    then totals\n"
            "  bench [--threads N] [--json] [--sizes LIST] [--reps N] [--quick]\n"
            "                    SGEMM GFLOP/s at 256, 1024, 2048 and 4096x1024x1024, next to this\n"
            "                    CPU's measured peak (make bench adds PyTorch beside it; bench --help)\n"
            "\n"
            "options:\n"
            "  --device cpu      where the command runs; every command of this chapter runs on the\n"
            "                    CPU, even with a GPU present (its CUDA matmul is checked by\n"
            "                    make verify-gpu), so --device cuda is an error\n"
            "  -h, --help        this text\n");
}

// ----------------------------------------------------------------------------
// inspect

static int cmd_inspect(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "error: inspect: expected one PATH (a .safetensors file or a model directory)\n");
        return 1;
    }
    const char *path = argv[1];
    char err[512];
    StModel *m = st_model_open(path, err, sizeof err);
    if (!m) fail_input(path, "%s", err);
    int64_t params = 0;
    size_t bytes = 0;
    char sb[128], bb[32];
    printf("%-60s %-5s %-20s %14s\n", "name", "dtype", "shape", "bytes");
    for (int i = 0; i < m->n; i++) {
        const StTensor *t = m->tensors[i];
        size_t nb = t->end - t->begin;
        printf("%-60s %-5s %-20s %14zu\n", t->name, dtype_name(t->dtype), shape_str(t->shape, t->ndim, sb, sizeof sb), nb);
        params += st_numel(t);
        bytes += nb;
    }
    printf("total: %d tensors, %lld parameters, %zu bytes (%s) in %d file%s\n", m->n, (long long)params, bytes,
           bytes_str((double)bytes, bb, sizeof bb), m->nfiles, m->nfiles == 1 ? "" : "s");
    st_model_close(m);
    return 0;
}

// ----------------------------------------------------------------------------
// The tour

// A two-layer MLP described the way every model of the book will be: one table.
static void build_tiny_mlp(Table *t) {
    table_init(t, "tiny mlp");
    table_add(t, "fc1.weight", DT_F32, true, 2, (int64_t[]){32, 16});   // (hidden, in)
    table_add(t, "fc1.bias", DT_F32, true, 1, (int64_t[]){32});
    table_add(t, "fc2.weight", DT_F32, true, 2, (int64_t[]){8, 32});    // (out, hidden)
    table_add(t, "fc2.bias", DT_F32, true, 1, (int64_t[]){8});
    table_add(t, "norm.weight", DT_F32, false, 1, (int64_t[]){8});      // frozen, for show
}

static int cmd_tour(void) {
    printf("== 1. a model is a table ==\n");
    Table t;
    build_tiny_mlp(&t);
    table_alloc(&t, DEVICE_CPU);
    Rng rng;
    rng_seed(&rng, nm_ctx.seed, 0);
    for (int i = 0; i < t.n; i++) {
        Tensor x = table_tensor(&t, i);
        rng_fill_normal(&rng, x.data, (size_t)tensor_numel(x), 0.0f, 0.1f);
    }
    table_print(&t, stdout, true);
    printf("   one allocation of %zu bytes holds all %d tensors\n\n", t.nbytes, t.n);

    printf("== 2. save it as safetensors, read it back ==\n");
    char dir[] = "/tmp/nm_ch01_XXXXXX";
    NM_CHECK(mkdtemp(dir) != NULL, "cannot create a temporary directory");
    char *path = xsprintf("%s/tiny_mlp.safetensors", dir);
    char err[512];
    if (table_save(&t, path, false, err, sizeof err) != 0) fail_input(path, "%s", err);
    printf("   wrote %s\n", path);
    StModel *m = st_model_open(path, err, sizeof err);
    if (!m) fail_input(path, "%s", err);
    Table back;
    build_tiny_mlp(&back);
    table_alloc(&back, DEVICE_CPU);
    if (table_load(&back, m, NULL, err, sizeof err) != 0) fail_input(path, "%s", err);
    printf("   read back: %s\n\n", memcmp(t.buffer, back.buffer, t.nbytes) == 0 ? "identical bytes" : "DIFFERENT");
    st_model_close(m);

    printf("== 3. inspect ==\n");
    char *argv[] = {"inspect", path};
    cmd_inspect(2, argv);
    printf("\n");

    printf("== 4. bf16: the top half of a float, rounded to nearest even ==\n");
    float xs[] = {1.0f, 3.14159265f, 1.00390625f, 1.01171875f, 65504.0f, 1e-40f, NAN};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        uint16_t b = f32_to_bf16(xs[i]);
        printf("   %-14.9g -> bf16 0x%04x -> %.9g\n", (double)xs[i], b, (double)bf16_to_f32(b));
    }
    printf("\n");

    printf("== 5. matmul: the layer fc1 on a batch of 4 ==\n");
    float inp[4 * 16], out[4 * 32];   // inp (M=4, K=16), out (M=4, N=32)
    rng_fill_normal(&rng, inp, 4 * 16, 0.0f, 1.0f);
    matmul_forward(tensor_f32(out, 2, (int64_t)4, (int64_t)32), tensor_f32(inp, 2, (int64_t)4, (int64_t)16),
                   table_get(&t, "fc1.weight"), table_get(&t, "fc1.bias"));
    printf("   out[0][:4] = %.5f %.5f %.5f %.5f\n\n", (double)out[0], (double)out[1], (double)out[2], (double)out[3]);

    printf("== 6. how fast is our SGEMM on this CPU? (quick run; `make bench` compares with PyTorch) ==\n");
    char *bargv[] = {"bench", "--quick"};
    int rc = bench_main(2, bargv);

    unlink(path);
    rmdir(dir);
    free(path);
    table_free(&t);
    table_free(&back);
    return rc;
}

// The options of the tour and of inspect: --device and --help, through
// getopt_long. Returns the index of the first argument that is not an option.
static int parse_opts(int argc, char **argv, const char *command) {
    static const struct option opts[] = {
        {"device", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *device = NULL;
    opterr = 0;   // the errors are worded below, one line each
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (o) {
        case 'd': device = optarg; break;
        case 'h': usage(stdout); exit(0);
        case ':': fail_input(argv[optind - 1], "needs a value (see --help)");
        default: fail_input(argv[optind - 1], "unknown option (see --help)");
        }
    }
    device_select(device, command, false, cuda_available());
    return optind;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc == 1 || argv[1][0] == '-') {
        int first = parse_opts(argc, argv, "tour");
        if (first < argc) fail_input(argv[first], "unexpected argument (see --help)");
        return cmd_tour();
    }
    if (strcmp(argv[1], "inspect") == 0) {
        // getopt_long moves the options of argv[1..] to the front; cmd_inspect
        // reads its arguments from its argv[1], so it is handed the slot before them
        int first = parse_opts(argc - 1, argv + 1, "inspect");
        return cmd_inspect(argc - first, argv + first);
    }
    if (strcmp(argv[1], "bench") == 0) return bench_main(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown command '%s' (try --help)\n", argv[1]);
    return 2;
}
