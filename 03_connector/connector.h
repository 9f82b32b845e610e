// connector.h: the trainable bridge from image features to LLM tokens.
//
// The ViT (chapter 02) turns an image into a grid of feature vectors, one per
// 14x14 patch, each as wide as the ViT (1024 for CLIP-L). The LLM (chapter 04)
// reads vectors as wide as its own hidden size (1024 for Qwen3-0.6B, 896 for
// Qwen2.5-0.5B). The connector maps the first onto the second, and it is the
// first part of the model that learns. Three designs, chosen by config:
//
//   linear  out = x W^T + b                        the architecture note's option A
//   mlp     out = gelu(x W1^T + b1) W2^T + b2      option B; LLaVA-1.5's `mlp2x_gelu`
//   molmo   2x2 attention pooling, then a SwiGLU MLP (Molmo). Its input is two
//           ViT layers concatenated (2 x 1024 = 2048 wide); each 2x2 window of
//           patches becomes one token, so 24x24 = 576 patches give 144 tokens:
//             q = mean of the window's 4 patches      (one query per window)
//             k, v = the 4 patches                    (Linear 2048 -> NH*HD, with bias)
//             a = multi-head attention(q, k, v)       (softmax over the 4 keys)
//             p = a Wo^T + bo                         (-> the ViT width, 1024)
//             out = (silu(p W1^T) * (p W3^T)) W2^T    (no biases; hidden = LLM intermediate)
//           An odd grid side is padded with zero patches (see ops.c).
//
// Parameter names. LLaVA calls its projector `multi_modal_projector.linear_1/2`;
// Molmo calls its pieces `...vision_backbone.image_pooling_2d.w{q,k,v,o}` and
// `...vision_backbone.image_projector.w{1,2,3}` (w1 the gate, w3 the up, w2 the
// down projection). We keep those last parts under one prefix, `connector.`:
//   linear: connector.linear_1.{weight,bias}
//   mlp:    connector.linear_1.{weight,bias}, connector.linear_2.{weight,bias}
//   molmo:  connector.image_pooling_2d.{wq,wk,wv,wo}.{weight,bias},
//           connector.image_projector.{w1,w2,w3}.weight
// Weights have PyTorch's nn.Linear layout (out_features, in_features).
//
// The whole connector is four tables (tensor.h): the parameters, their
// gradients, the activations the backward pass needs, and the gradients of
// those activations (the backward's scratch). The same tables drive loading,
// saving, initialisation, gradient checks and the `--mem` report.
//
// What it does not do: the optimizer (a local SGD/Adam in run.c for the demo;
// the real AdamW is chapter 05), the GPU path of the whole connector (the ops
// have CUDA twins in ops_cuda.cu; the model-level device dispatch is chapter 05's).
//
// Letters: B images, T = GH*GW patches per image (tokens in), T' tokens out
// (T for linear/mlp, P = ceil(GH/2)*ceil(GW/2) for molmo), Cin feature width,
// H LLM hidden, HM mlp hidden, D pooled width, NH heads, HD head dim,
// A = NH*HD, I projector hidden, M = B*P windows.
#ifndef NM_CONNECTOR_H
#define NM_CONNECTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "01_tensor/tensor.h"
#include "03_connector/ops.h"

typedef enum { CONN_LINEAR = 0, CONN_MLP = 1, CONN_MOLMO = 2 } ConnectorKind;

typedef struct {
    ConnectorKind kind;
    int in_dim;         // Cin: width of one input feature vector (molmo: 2 ViT layers concatenated)
    int hidden;         // H: the LLM's hidden size, the width of every output token
    int mlp_hidden;     // HM (mlp): width between the two Linears; LLaVA-1.5 uses H
    GeluKind gelu;      // (mlp) GELU_ERF like nn.GELU(), or GELU_TANH
    int pool_dim;       // D (molmo): the pooling's output width (Molmo: the ViT width, 1024)
    int pool_heads;     // NH (molmo)
    int pool_head_dim;  // HD (molmo); Molmo has NH*HD = D (16 x 64 = 1024)
    int intermediate;   // I (molmo): the SwiGLU hidden size, the LLM's intermediate size
    int grid_h, grid_w; // GH x GW: the patch grid of one image (24 x 24 for CLIP-L/14 at 336)
} ConnectorConfig;

// "linear" | "mlp" | "molmo" -> kind, or -1.
int connector_kind_parse(const char *s);
const char *connector_kind_name(ConnectorKind k);
// Fills a config the way the systems we copy do, from the ViT width (one
// layer), the LLM's hidden and intermediate sizes and the patch grid:
// linear/mlp take vision_dim-wide features, molmo 2*vision_dim; mlp_hidden = H;
// molmo pools to D = vision_dim with heads of 64 (or one head when
// vision_dim is not a multiple of 64). Adjust fields afterwards as needed.
void connector_config_init(ConnectorConfig *c, ConnectorKind kind, int vision_dim, int hidden,
                           int intermediate, int grid_h, int grid_w);
// NULL when the config is usable, otherwise a sentence saying what is wrong.
const char *connector_config_error(const ConnectorConfig *c);
int connector_tokens_in(const ConnectorConfig *c);    // T
int connector_tokens_out(const ConnectorConfig *c);   // T'
// Adds the parameter entries of this config to an empty table (not allocated).
void connector_describe(Table *params, const ConnectorConfig *c);
// Number of parameters (from the table; no allocation).
int64_t connector_param_count(const ConnectorConfig *c);

typedef struct {
    ConnectorConfig cfg;
    Table params;       // the weights (fp32, trainable)
    Table grads;        // dL/dweights, same entries; backward accumulates into them
    Table acts;         // what forward keeps for backward, sized for B images
    Table dacts;        // dL/d(those activations): the backward's scratch
    int B;              // batch the activation tables are allocated for (0: none yet)
    int B_last;         // batch of the last forward
    const float *inp;   // (B, T, Cin) the last forward's input (the caller's memory)
} Connector;

// Builds the tables and allocates parameters and gradients (zeroed).
void connector_build(Connector *c, const ConnectorConfig *cfg);
void connector_free(Connector *c);
// PyTorch's default init for every nn.Linear: weight and bias uniform in
// [-1/sqrt(in), 1/sqrt(in)] (kaiming_uniform with a = sqrt(5)); one RNG stream
// per tensor, so a tensor's values do not depend on the tensors before it.
void connector_init(Connector *c, uint64_t seed);
// Loads parameters by name from a .safetensors file or model directory: its
// connector.* tensors, or a LLaVA model's multi_modal_projector.* (the mlp
// connector under transformers' name). A tensor under that prefix which this
// connector does not have is an error too, as is a missing one. Returns 0, or
// -1 with the reason in err (missing or extra tensor, wrong shape, ...).
int connector_load(Connector *c, const char *path, char *err, size_t errlen);
// Reads the sizes of a checkpoint's tensors into cfg (kind, grid and heads are
// kept as given). Returns 0, or -1 with the reason in err.
int connector_config_from_checkpoint(ConnectorConfig *cfg, const char *path, char *err, size_t errlen);

// out (B, T', H) = connector(feat (B, T, Cin)). Returns a pointer into the
// activation table (valid until the next forward); keeps `feat` for backward.
const float *connector_forward(Connector *c, const float *feat, int B);
// Backward of the last forward for dout (B, T', H): accumulates every
// parameter gradient into c->grads and, when dfeat (B, T, Cin) is not NULL,
// the input gradient into dfeat (+=).
void connector_backward(Connector *c, float *dfeat, const float *dout);
void connector_zero_grad(Connector *c);

// The `--mem` table for a config and batch, computed from the tables.
void connector_mem_report(const ConnectorConfig *cfg, int B, FILE *f);

#endif
