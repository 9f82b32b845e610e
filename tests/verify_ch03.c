// tests/verify_ch03.c: the three connectors against PyTorch autograd.
//
//     build/release/tests/verify_ch03 DIR        (DIR is build/ref/ch03)
//
// tests/reference/ref_ch03.py writes, for each case of DIR/cases.json, a
// PyTorch connector's weights (CASE/model.safetensors, the C names), its sizes
// and parameter count (CASE/config.json) and its input, a fixed upstream
// gradient, the output and every gradient computed in float64
// (CASE/io.safetensors). Here the C connector is built from the config, loads
// the weights through its normal loader, runs forward and backward, and each
// tensor is compared (check.h): the output at the fp32 tolerance, the input
// gradient and every parameter gradient at the gradient tolerance. The
// parameter count must equal PyTorch's exactly. Cases cover CLIP-L -> Qwen3-0.6B
// (1024 or 2048 -> 1024) and -> Qwen2.5-0.5B (1024 -> 896), both GELU forms,
// and odd tiny sizes (odd grids for the molmo pooling, 24x24 -> 144 tokens).
// Finally a checkpoint with a wrong shape (DIR/bad_shape) and a missing one
// must be refused with a message.
#include <stdio.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"
#include "03_connector/connector.h"

// Reads tensor `name` of f as f32 into a new buffer, checking its element count.
static float *read_f32(const StFile *f, const char *name, size_t n) {
    const StTensor *t = st_find(f, name);
    if (!t) fail_input(f->path, "no tensor '%s'", name);
    if ((size_t)st_numel(t) != n) fail_input(f->path, "tensor '%s' has %lld values, expected %zu", name,
                                             (long long)st_numel(t), n);
    float *x = xmalloc(n * sizeof(float) + 1);
    if (st_read(t, x, DT_F32) != 0) fail_input(f->path, "tensor '%s' cannot be read as F32", name);
    return x;
}

static void verify_case(const char *dir, const char *name) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s/config.json", dir, name);
    JsonDoc *doc = json_load_file(path);
    JsonValue *j = json_root(doc);
    ConnectorConfig cfg;
    int kind = connector_kind_parse(json_get_str(j, "kind", "?"));
    if (kind < 0) fail_input(path, "unknown connector kind");
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = (ConnectorKind)kind;
    cfg.in_dim = (int)json_get_int(j, "in_dim", 0);
    cfg.hidden = (int)json_get_int(j, "hidden", 0);
    cfg.mlp_hidden = (int)json_get_int(j, "mlp_hidden", 0);
    cfg.gelu = strcmp(json_get_str(j, "gelu", "erf"), "tanh") == 0 ? GELU_TANH : GELU_ERF;
    cfg.pool_dim = (int)json_get_int(j, "pool_dim", 0);
    cfg.pool_heads = (int)json_get_int(j, "pool_heads", 0);
    cfg.pool_head_dim = (int)json_get_int(j, "pool_head_dim", 0);
    cfg.intermediate = (int)json_get_int(j, "intermediate", 0);
    cfg.grid_h = (int)json_get_int(j, "grid_h", 0);
    cfg.grid_w = (int)json_get_int(j, "grid_w", 0);
    const int B = (int)json_get_int(j, "batch", 0);
    const int64_t want_count = json_get_int(j, "param_count", -1);
    json_free(doc);
    const char *e = connector_config_error(&cfg);
    if (e) fail_input(path, "%s", e);

    char label[640];
    const int64_t count = connector_param_count(&cfg);
    snprintf(label, sizeof label, "%s parameter count", name);
    check_true(label, count == want_count, "C %lld, PyTorch %lld", (long long)count, (long long)want_count);

    Connector c;
    connector_build(&c, &cfg);
    snprintf(path, sizeof path, "%s/%s/model.safetensors", dir, name);
    if (connector_load(&c, path, err, sizeof err) != 0) fail_input(path, "%s", err);

    snprintf(path, sizeof path, "%s/%s/io.safetensors", dir, name);
    StFile *io = st_open(path, err, sizeof err);
    if (!io) fail_input(path, "%s", err);
    const size_t nin = (size_t)B * connector_tokens_in(&cfg) * cfg.in_dim;
    const size_t nout = (size_t)B * connector_tokens_out(&cfg) * cfg.hidden;
    float *x = read_f32(io, "input", nin), *dout = read_f32(io, "dout", nout);
    float *want_out = read_f32(io, "out", nout), *want_dx = read_f32(io, "grad.input", nin);
    float *dx = xcalloc(nin, sizeof(float));

    const float *out = connector_forward(&c, x, B);
    snprintf(label, sizeof label, "%s out", name);
    check_f32(label, out, want_out, nout, TOL_F32);
    connector_zero_grad(&c);
    connector_backward(&c, dx, dout);
    snprintf(label, sizeof label, "%s grad.input", name);
    check_f32(label, dx, want_dx, nin, TOL_GRAD);
    for (int i = 0; i < c.grads.n; i++) {
        const TableEntry *ge = &c.grads.entries[i];
        char tname[256];
        snprintf(tname, sizeof tname, "grad.%s", ge->name);
        size_t n = ge->nbytes / sizeof(float);
        float *want = read_f32(io, tname, n);
        snprintf(label, sizeof label, "%s %s", name, tname);
        check_f32(label, table_tensor(&c.grads, i).data, want, n, TOL_GRAD);
        free(want);
    }
    free(x), free(dout), free(want_out), free(want_dx), free(dx);
    st_close(io);
    connector_free(&c);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR   (DIR written by tests/reference/ref_ch03.py)\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/cases.json", dir);
    JsonDoc *doc = json_load_file(path);
    JsonValue *cases = json_root(doc);
    if (cases->type != JSON_ARRAY) fail_input(path, "expected a list of case names");
    for (size_t i = 0; i < cases->len; i++) verify_case(dir, cases->items[i]->str);
    json_free(doc);

    // Bad checkpoints: a wrong shape, and a file that is not there.
    ConnectorConfig cfg;
    connector_config_init(&cfg, CONN_LINEAR, 7, 5, 0, 3, 5);
    Connector c;
    connector_build(&c, &cfg);
    snprintf(path, sizeof path, "%s/bad_shape/model.safetensors", dir);
    err[0] = 0;
    int rc = connector_load(&c, path, err, sizeof err);
    check_true("checkpoint with a wrong shape is refused", rc != 0 && strstr(err, "shape") != NULL, "%s", err);
    snprintf(path, sizeof path, "%s/no_such_dir/model.safetensors", dir);
    err[0] = 0;
    rc = connector_load(&c, path, err, sizeof err);
    check_true("missing checkpoint is refused", rc != 0 && err[0] != 0, "%s", err);
    connector_free(&c);
    return check_summary("verify_ch03");
}
