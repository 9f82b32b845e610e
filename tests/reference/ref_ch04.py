#!/usr/bin/env python3
"""ref_ch04.py: reference outputs for chapter 04 (the Qwen language model).

Builds tiny random-weight Qwen3ForCausalLM and Qwen2ForCausalLM models with
transformers, saves each as a HuggingFace directory (config.json +
safetensors, one sharded, some in bf16, some in fp32), reloads each in fp32
and writes what the C side must reproduce:

    OUT/<name>/                      the model directory, loaded by verify_ch04
    OUT/<name>/expected.safetensors  input_ids [T], logits [T,V], hidden_states [L+1,T,C],
                                     gen_prompt [P], gen_ids [N] (greedy, model.generate)
    OUT/chat.json                    Qwen3's chat template rendered by apply_chat_template
    OUT/bad_*/                       broken model directories for the bad-input checks

and then calls the tokenizer engineer's write_tokenizer_refs(OUT).

Usage: ref_ch04.py --out DIR. Deterministic (fixed seeds); a few seconds.
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM  # noqa: E402

# name, family, sizes, storage. GQA ratios 3, 1, 7, 2; tied and untied; several
# rope_theta and head_dim values; one Qwen3 with attention_bias.
MODELS = [
    dict(name="qwen3_untied_sharded_f32", family="qwen3", hidden_size=96, intermediate_size=200,
         num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, head_dim=32,
         rope_theta=1e6, tie=False, dtype="f32", shard=True, eos_from_greedy=True),
    dict(name="qwen3_tied_bf16", family="qwen3", hidden_size=64, intermediate_size=160,
         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
         rope_theta=10000.0, tie=True, dtype="bf16", shard=False),
    dict(name="qwen3_bias_gqa2_f32", family="qwen3", hidden_size=80, intermediate_size=144,
         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
         rope_theta=500000.0, tie=True, dtype="f32", shard=False, attention_bias=True),
    dict(name="qwen2_tied_gqa7_bf16", family="qwen2", hidden_size=112, intermediate_size=224,
         num_hidden_layers=3, num_attention_heads=14, num_key_value_heads=2,
         rope_theta=1e6, tie=True, dtype="bf16", shard=True),
    dict(name="qwen2_untied_gqa2_f32", family="qwen2", hidden_size=96, intermediate_size=192,
         num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3,
         rope_theta=10000.0, tie=False, dtype="f32", shard=False),
]
VOCAB = 1000
T = 13           # tokens of the logits check
PROMPT = 8       # tokens of the generation prompt
NEW = 32         # greedy tokens generated


def build(spec):
    torch.manual_seed(sum(map(ord, spec["name"])))
    kw = dict(vocab_size=VOCAB, hidden_size=spec["hidden_size"], intermediate_size=spec["intermediate_size"],
              num_hidden_layers=spec["num_hidden_layers"], num_attention_heads=spec["num_attention_heads"],
              num_key_value_heads=spec["num_key_value_heads"], max_position_embeddings=256,
              rms_norm_eps=1e-6, tie_word_embeddings=spec["tie"], initializer_range=0.05,
              rope_parameters={"rope_type": "default", "rope_theta": spec["rope_theta"]},
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if spec["family"] == "qwen3":
        cfg = Qwen3Config(head_dim=spec["head_dim"], attention_bias=spec.get("attention_bias", False), **kw)
        model = Qwen3ForCausalLM(cfg)
    else:
        cfg = Qwen2Config(**kw)
        model = Qwen2ForCausalLM(cfg)
    # HF initialises norms to 1 and biases to 0, which would hide a missing or
    # misplaced weight; make every one of them random too.
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in n:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


def edit_json(path, **kv):
    with open(path) as f:
        d = json.load(f)
    d.update(kv)
    with open(path, "w") as f:
        json.dump(d, f, indent=2)


def write_model(spec, out):
    d = os.path.join(out, spec["name"])
    shutil.rmtree(d, ignore_errors=True)
    model = build(spec)
    if spec["dtype"] == "bf16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(d, max_shard_size="40KB" if spec["shard"] else "1GB")
    cls = Qwen3ForCausalLM if spec["family"] == "qwen3" else Qwen2ForCausalLM
    # The reference runs on exactly the weights in the files, in fp32.
    ref = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    sdpa = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()

    rs = np.random.RandomState(len(spec["name"]))
    ids = torch.tensor(rs.randint(3, VOCAB, size=(1, T)), dtype=torch.long)
    with torch.no_grad():
        o = ref(ids, output_hidden_states=True)
        o2 = sdpa(ids)
    logits = o.logits[0].float().contiguous()                        # [T, V]
    hidden = torch.stack([h[0] for h in o.hidden_states]).float().contiguous()   # [L+1, T, C]
    assert hidden.shape[0] == spec["num_hidden_layers"] + 1
    sdpa_err = (o2.logits[0] - logits).abs().max().item()
    print(f"{'PASS' if sdpa_err < 1e-4 else 'FAIL'} ref_{spec['name']}_eager_vs_sdpa max_abs={sdpa_err:.3e}")

    prompt = ids[:, :PROMPT]
    gen_kw = dict(do_sample=False, max_new_tokens=NEW, pad_token_id=0, min_new_tokens=0)
    with torch.no_grad():
        if spec.get("eos_from_greedy"):
            # Make generation stop early on one model: declare as EOS the token
            # greedy decoding produces 10th, and check C stops there too.
            g0 = ref.generate(prompt, eos_token_id=None, **gen_kw)[0, PROMPT:].tolist()
            eos = next((t for t in g0[9:] if t not in g0[:9]), 2)
            edit_json(os.path.join(d, "config.json"), eos_token_id=[2, eos])
            if os.path.exists(os.path.join(d, "generation_config.json")):
                edit_json(os.path.join(d, "generation_config.json"), eos_token_id=[2, eos])
            ref.generation_config.eos_token_id = [2, eos]
        gen = ref.generate(prompt, **gen_kw)[0, PROMPT:]
    # How close greedy came to a tie: if two logits were within float error,
    # the C side could legitimately pick the other one.
    with torch.no_grad():
        full = torch.cat([prompt[0], gen]).unsqueeze(0)
        lg = ref(full).logits[0, PROMPT - 1:-1]
        top2 = lg.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).min().item()

    save_file({"input_ids": ids[0].to(torch.int32).contiguous(), "logits": logits, "hidden_states": hidden,
               "gen_prompt": prompt[0].to(torch.int32).contiguous(), "gen_ids": gen.to(torch.int32).contiguous()},
              os.path.join(d, "expected.safetensors"))
    nfiles = len([f for f in os.listdir(d) if f.endswith(".safetensors")]) - 1
    print(f"PASS ref_{spec['name']} T={T} V={VOCAB} L={spec['num_hidden_layers']} shards={nfiles} "
          f"dtype={spec['dtype']} tied={spec['tie']} gen={len(gen)} tokens (greedy margin {margin:.2e})")
    return d


def write_bad(out, good):
    """Broken copies of a good model directory, each with one defect."""
    def copy(name):
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        os.remove(os.path.join(d, "expected.safetensors"))
        return d

    d = copy("bad_missing_tensor")
    from safetensors.torch import load_file
    st = load_file(os.path.join(d, "model.safetensors"))
    st.pop("model.layers.1.mlp.up_proj.weight")
    save_file(st, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    d = copy("bad_shape")
    st = load_file(os.path.join(d, "model.safetensors"))
    st["model.norm.weight"] = torch.ones(7, dtype=st["model.norm.weight"].dtype)
    save_file(st, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    d = copy("bad_model_type")
    edit_json(os.path.join(d, "config.json"), model_type="llama")

    d = copy("bad_config_json")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"model_type": "qwen3", "hidden_size": 64,,}')
    print("PASS ref_bad_inputs 4 broken model directories written")


def write_chat(out):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "data", "qwen3"))
    convs = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
         {"role": "user", "content": "Another one?"}],
        [{"role": "user", "content": "Think first."},
         {"role": "assistant", "content": "<think>\nLet me see.\n</think>\n\nDone."}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"},
         {"role": "assistant", "content": "<think>\nhidden\n</think>\n\nx"}, {"role": "user", "content": "é 中文 🙂"}],
    ]
    cases = []
    for msgs in convs:
        for gen_prompt in (True, False):
            for think in (True, False):
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen_prompt,
                                               enable_thinking=think)
                cases.append({"messages": msgs, "add_generation_prompt": gen_prompt, "enable_thinking": think,
                              "text": text})
    with open(os.path.join(out, "chat.json"), "w") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"PASS ref_chat_template {len(cases)} renderings of Qwen3's template")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    dirs = [write_model(s, a.out) for s in MODELS]
    write_bad(a.out, dirs[2])
    write_chat(a.out)
    try:
        from ref_ch04_tok import write_tokenizer_refs
    except ImportError as e:
        print(f"# ref_ch04_tok.py not importable yet ({e}); tokenizer references skipped")
    else:
        write_tokenizer_refs(a.out)


if __name__ == "__main__":
    main()
