// llava.h: the whole trained VLM as a transformers LLaVA model, and back.
//
// `LlavaForConditionalGeneration` is the ecosystem's name for exactly the
// model this book builds when the connector is the MLP: a CLIP vision tower,
// its penultimate hidden state without the class token, a two-layer projector
// (linear_1, GELU, linear_2) and a causal LM that reads the projected patches
// in place of the image's placeholder tokens. So the trained model is written
// as such a directory, which `LlavaForConditionalGeneration.from_pretrained`
// and `AutoProcessor.from_pretrained` load with no missing or unexpected key:
//
//   config.json               model_type "llava": vision_config (CLIP, from our
//                             VitConfig), text_config (the LM's own config.json),
//                             image_token_index (our <image> id), image_seq_length,
//                             vision_feature_layer (hidden_states index, negative:
//                             -2 is our "penultimate"; a list for two layers),
//                             vision_feature_select_strategy ("default" drops the
//                             class token, "full" keeps it), projector_hidden_act
//   model.safetensors         the names transformers itself writes (f32):
//                               vision_tower.<CLIP vision names>
//                               multi_modal_projector.linear_{1,2}.{weight,bias}
//                               language_model.model.<Qwen names>
//                               language_model.lm_head.weight   (untied LMs only)
//   tokenizer.json            ours, with <image> <video> <point> <timestamp> among
//   tokenizer_config.json     its added tokens (special, never split)
//   preprocessor_config.json  CLIPImageProcessor with the model's own size, mean, std
//   processor_config.json     LlavaProcessor: the image token, patch size, strategy
//
// What has no LLaVA equivalent is refused, every part named in one message:
// the linear connector (LLaVA's projector always has two layers and a GELU),
// the Molmo connector (attention pooling over 2x2 windows), the nano preset's
// extras (patch_merge, patch_context, the 2-D position code pos_code /
// pos_ramp) and image_attention = bidirectional (LLaVA's LM is causal).
//
// Back: the LM of such a directory loads through qwen_load (its config's
// text_config, its tensors under "language_model."), the projector through
// connector_load ("multi_modal_projector."), so a training run's `init` can be a
// LLaVA directory.
#ifndef NM_LLAVA_H
#define NM_LLAVA_H

#include <stddef.h>

#include "05_training/nano.h"

// Writes the model directory m (nano_model_load's layout) as a LLaVA directory
// `out` (created; every file written atomically). Returns 0, or -1 with the
// reason in err, naming every part that has no LLaVA equivalent.
int llava_export(const NanoModel *m, const char *out, char *err, size_t errlen);

// ./05_training/run export-llava --model DIR --out OUT
int llava_cli_export(int argc, char **argv);

#endif
