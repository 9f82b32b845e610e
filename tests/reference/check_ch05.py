#!/usr/bin/env python3
"""check_ch05.py: the trained VLM in the ecosystem, as transformers' LLaVA.

    python tests/reference/check_ch05.py REF_DIR      (after ref_ch05.py and verify_ch05)

A small model with the layout of the full-size stage configs (a CLIP vision tower, the mlp
connector over its penultimate features, a Qwen3 LM with tied embeddings and Qwen3's real
tokenizer) is made here at random with transformers, trained for a few steps by
./05_training/run train on 05_training/configs/stage1.conf, answered by ./05_training/run chat,
and exported by ./05_training/run export-llava. Then, with transformers as the judge:

  - LlavaForConditionalGeneration.from_pretrained loads the export with no missing, unexpected
    or mismatched key, and AutoProcessor loads it;
  - the processor turns the question (one <image>) into the same ids our chat fed the model
    (the <image> expanded to the visual tokens), and CLIPImageProcessor's pixel_values;
  - the logits after the prompt match ours to max rel 1e-4 (max |diff| / max |logit|);
  - greedy generation gives our answer, id for id and as text;
  - models with no LLaVA equivalent (a linear connector, the nano preset's position code and
    bidirectional image attention) are refused, the parts named;
  - the trainer's init accepts the export back (the first loss equals the one from the
    project's own checkpoint layout); init with an llm of another architecture, and a
    connector file with an extra tensor, are errors.
One PASS/FAIL line per check.
"""
import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "05_training", "run")
FAILED = 0


def report(ok, name, msg=""):
    global FAILED
    FAILED += not ok
    print(f"{'PASS' if ok else 'FAIL'} {name} {msg}", flush=True)
    return ok


def run(args, **kw):
    return subprocess.run([RUN] + args, capture_output=True, text=True, cwd=ROOT, **kw)


def losses(path):
    return [json.loads(line)["loss"] for line in open(path) if '"loss"' in line]


def make_models(d):
    from transformers import CLIPVisionConfig, CLIPVisionModel, Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(5)
    vit = CLIPVisionModel(CLIPVisionConfig(image_size=56, patch_size=14, hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=3, num_attention_heads=4)).eval()
    lm = Qwen3ForCausalLM(Qwen3Config(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      max_position_embeddings=512, tie_word_embeddings=True,
                                      bos_token_id=151643, eos_token_id=151645)).eval()
    with torch.no_grad():   # every norm away from 1, so that none can be silently skipped
        for m in (vit, lm):
            for n, p in m.named_parameters():
                if p.ndim == 1 and "norm" in n:
                    p.add_(0.1 * torch.randn(p.shape))
    vit.save_pretrained(os.path.join(d, "clip"))
    lm.save_pretrained(os.path.join(d, "qwen3"))


def train(d, out, extra, steps=3):
    cfg = os.path.join(ROOT, "05_training", "configs", "stage1.conf")
    sets = ["vit=" + os.path.join(d, "clip"), "llm=" + os.path.join(d, "qwen3"), "connector=mlp",
            "vit_feature=penultimate", "tokenizer=data/qwen3/tokenizer.json", "batch_size=2", "grad_accum=1",
            "warmup_steps=1", "max_seq_len=256", "save_every=%d" % steps, "lr=3e-3", "lr_connector=3e-3"] + extra
    args = ["train", "--config", cfg, "--data", os.path.join(d, "captions.jsonl"), "--images", "data/images",
            "--out", out, "--steps", str(steps), "--threads", "2"]
    for s in sets:
        args += ["--set", s]
    return run(args)


def assemble(d, ckpt, model):
    """The directory chat reads: the checkpoint's LM and connector, the tokenizer, the ViT."""
    shutil.rmtree(model, ignore_errors=True)
    os.makedirs(model)
    for f in ("model.safetensors", "config.json", "connector.safetensors", "train.conf"):
        shutil.copy(os.path.join(ckpt, f), model)
    shutil.copy(os.path.join(ROOT, "data", "qwen3", "tokenizer.json"), model)
    shutil.copy(os.path.join(ROOT, "data", "qwen3", "tokenizer_config.json"), model)
    shutil.copytree(os.path.join(d, "clip"), os.path.join(model, "vit"))


def main():
    ref = sys.argv[1] if len(sys.argv) > 1 else "build/ref/ch05"
    d = os.path.join(os.path.abspath(ref), "llava")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.set_num_threads(2)
    make_models(d)
    caps = ["a grey cat with stripes", "an astronaut on the ground", "a cup of coffee on a table", "a rocket"]
    imgs = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"]
    with open(os.path.join(d, "captions.jsonl"), "w") as f:
        for i, (c, im) in enumerate(zip(caps, imgs)):
            f.write(json.dumps({"id": str(i), "image": im, "conversations": [
                {"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": c}]}) + "\n")

    r = train(d, os.path.join(d, "run"), [])
    ckpt = os.path.join(d, "run", "step_00000003")
    if not report(r.returncode == 0 and os.path.exists(os.path.join(ckpt, "COMPLETE")), "llava.train",
                  "3 steps of stage1.conf (mlp connector, penultimate features, Qwen3 tied) " +
                  (r.stderr.strip().splitlines() or [""])[-1][:200]):
        return 1
    model = os.path.join(d, "model")
    assemble(d, ckpt, model)
    image = os.path.join(ROOT, "data", "images", "chelsea.png")
    question = "What is in the picture?"
    dump = os.path.join(d, "c_logits.safetensors")
    r = run(["chat", "--model", model, "--image", image, "--logits", dump, question])
    if not report(r.returncode == 0, "llava.chat", r.stderr.strip()[:200]):
        return 1
    c_answer = r.stdout.split("assistant: ", 1)[1].rstrip("\n")
    hf = os.path.join(d, "hf")
    r = run(["export-llava", "--model", model, "--out", hf])
    if not report(r.returncode == 0, "llava.export", (r.stdout + r.stderr).strip()[:300]):
        return 1

    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    lm, info = LlavaForConditionalGeneration.from_pretrained(hf, output_loading_info=True)
    lm.eval()
    bad = {k: v for k, v in info.items() if v}
    report(not bad, "llava.from_pretrained", "no missing, unexpected or mismatched keys" if not bad else str(bad)[:300])
    proc = AutoProcessor.from_pretrained(hf)
    report(type(proc).__name__ == "LlavaProcessor", "llava.AutoProcessor", type(proc).__name__)

    c = load_file(dump)
    ids = c["input_ids"].long()[None]
    tok = proc.tokenizer
    img_id = lm.config.image_token_index
    n_img = int((ids == img_id).sum())
    # the prompt as text, the image's run folded back to one <image>: the processor must expand it again
    first = int((ids[0] == img_id).nonzero()[0])
    text = tok.decode(ids[0, :first + 1].tolist() + ids[0, first + n_img:].tolist(), skip_special_tokens=False)
    pil = Image.open(image)
    enc = proc(text=text, images=pil, return_tensors="pt")
    report(torch.equal(enc["input_ids"], ids), "llava.processor_ids",
           f"{ids.shape[1]} ids, {n_img} image tokens (<image> = {img_id}), as our chat's prompt")
    pv = CLIPImageProcessorPil.from_pretrained(hf)(images=pil, return_tensors="pt")["pixel_values"]
    report(torch.equal(enc["pixel_values"], pv), "llava.processor_pixels", f"pixel_values {tuple(pv.shape)} = "
           "CLIPImageProcessorPil with the export's preprocessor_config.json")
    with torch.no_grad():
        logits = lm(input_ids=ids, pixel_values=pv).logits[0, -1].float()
    ours = c["logits"].float()
    rel = float((logits - ours).abs().max() / logits.abs().max())
    report(rel <= 1e-4, "llava.logits", f"max rel {rel:.2e} over {ours.numel()} logits after the prompt (tol 1e-4)")
    c_ids = c["answer_ids"].long().tolist()
    eos = [151645, 151643]
    with torch.no_grad():
        gen = lm.generate(input_ids=ids, pixel_values=pv, max_new_tokens=len(c_ids) + 1, do_sample=False,
                          eos_token_id=eos, pad_token_id=151643)[0, ids.shape[1]:].tolist()
    hf_ids = [t for t in gen if t not in eos][:len(c_ids)]
    stopped = len(gen) <= len(c_ids) or gen[len(c_ids)] in eos or len(c_ids) == 0
    ok = hf_ids == c_ids and (len(c_ids) >= 64 or stopped)
    report(ok, "llava.greedy", f"{len(c_ids)} ids identical" if ok else f"ours {c_ids[:12]} HF {gen[:12]}")
    report(tok.decode(c_ids, skip_special_tokens=False) == c_answer, "llava.answer_text",
           repr(c_answer[:60]))

    # no LLaVA equivalent: refused, every part named
    r = run(["export-llava", "--out", os.path.join(d, "nano_hf")])
    report(r.returncode == 1 and "position code" in r.stderr and "image_attention" in r.stderr and
           not os.path.exists(os.path.join(d, "nano_hf", "config.json")), "llava.refuse_nano", r.stderr.strip()[:240])
    lin = os.path.join(d, "linear")
    r = train(d, os.path.join(d, "run_linear"), ["connector=linear"], steps=1)
    assemble(d, os.path.join(d, "run_linear", "step_00000001"), lin)
    r = run(["export-llava", "--model", lin, "--out", os.path.join(d, "linear_hf")])
    report(r.returncode == 1 and "linear connector" in r.stderr, "llava.refuse_linear", r.stderr.strip()[:200])

    # back: init from the LLaVA export = init from our own layout (same first loss)
    r1 = train(d, os.path.join(d, "init_ours"), ["init=" + model], steps=1)
    r2 = train(d, os.path.join(d, "init_llava"), ["init=" + hf], steps=1)
    l1 = losses(os.path.join(d, "init_ours", "log.jsonl")) if r1.returncode == 0 else None
    l2 = losses(os.path.join(d, "init_llava", "log.jsonl")) if r2.returncode == 0 else None
    report(l1 is not None and l1 == l2, "llava.init_back", f"first loss {l1} from our checkpoint, {l2} from the "
           f"LLaVA export {r2.stderr.strip()[-160:] if r2.returncode else ''}")
    r = train(d, os.path.join(d, "init_conflict"), ["init=" + hf, "llm=nano"], steps=1)
    report(r.returncode == 1 and "init replaces llm's weights" in r.stderr, "llava.init_llm_conflict",
           (r.stderr.strip().splitlines() or [""])[-1][:200])
    extra = os.path.join(d, "extra")
    shutil.copytree(model, extra)
    t = load_file(os.path.join(extra, "connector.safetensors"))
    t["connector.linear_3.weight"] = torch.zeros(2, 2)
    save_file(t, os.path.join(extra, "connector.safetensors"))
    r = train(d, os.path.join(d, "init_extra"), ["init=" + extra], steps=1)
    report(r.returncode == 1 and "connector.linear_3.weight" in r.stderr, "llava.init_extra_tensor",
           (r.stderr.strip().splitlines() or [""])[-1][:200])
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
