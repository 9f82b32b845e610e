// checkpoint.h: saving a training run so it can be loaded by others and resumed by us.
//
// A checkpoint is a directory OUT/step_00000040/ holding
//   model.safetensors + config.json   the LLM, HF names and HF config: it loads
//                                     in transformers (Qwen3ForCausalLM.from_pretrained)
//   connector.safetensors             the connector, chapter 03's names
//   optimizer.safetensors             AdamW's m and v, "<group>.m.<param name>"
//   state.json                        step, data position (stream index), seed
//   train.conf                        the effective config
//   COMPLETE                          the marker, written last
// Every file is written atomically (temp name, fsync, rename), into
// step_N.tmp/, which is renamed to step_N/ when whole; the marker goes in
// after that. A checkpoint without its marker (a crash, a SIGKILL at any
// moment) is ignored by --resume, which takes the newest complete one.
//
// The ViT is frozen and is not saved: it is still where the config says.
// The RNG: the data order is a pure function of (seed, stream index) (data.h),
// and nothing else in a CPU step draws random numbers, so the seed and the
// index are the whole random state. With the same thread count, resuming is
// bit-identical to not stopping.
#ifndef NM_CHECKPOINT_H
#define NM_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "05_training/adamw.h"
#include "05_training/config.h"
#include "05_training/vlm.h"

typedef struct {
    int64_t step;       // optimizer steps done
    int64_t cursor;     // next row of the data stream
    uint64_t seed;
    uint64_t data_hash; // of the data file (and feature index) trained on; 0 = not recorded
} TrainState;

// Writes OUT/step_%08d, refusing one that is a symbolic link; a step_N already
// there is kept (as step_N.old) until the new one is complete. `die_before_marker` (a testing aid) kills the process
// with SIGKILL after the files and before the marker. Returns 0, or -1 with err.
int checkpoint_save(const char *out, const Vlm *v, const AdamW *o, const TrainState *st, const TrainConfig *cfg,
                    bool die_before_marker, char *err, size_t errlen);
// The model files alone (model.safetensors, config.json, connector.safetensors)
// into dir; checkpoint_save writes them first. Returns 0, or -1 with err.
int checkpoint_write_model(const char *dir, const Vlm *v, char *err, size_t errlen);
// And back: the LLM's and the connector's parameters from dir (fail_input on bad input).
void checkpoint_load_model(const char *dir, Vlm *v);
// Removes PATH and what is in it without following symbolic links (a link is
// removed, never what it points to). 0, or -1 with errno.
int checkpoint_remove(const char *path);
// The newest complete checkpoint in out (malloc'd path), or NULL.
char *checkpoint_latest(const char *out);
// Reads a state.json's text into *st and *adam_step, checking every number's
// range. Returns 0, or -1 with the reason in err.
int checkpoint_parse_state(const char *text, size_t len, TrainState *st, int64_t *adam_step, char *err, size_t errlen);
// Loads parameters, optimizer state and the train state (fail_input on bad input).
void checkpoint_load(const char *dir, Vlm *v, AdamW *o, TrainState *st);

#endif
