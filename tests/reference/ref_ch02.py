#!/usr/bin/env python3
"""Reference outputs for chapter 02 (the CLIP ViT and its preprocessing).

Writes, under --out DIR:
  images/                 extra test images made here: an RGBA PNG and a gray+alpha PNG
                          (transparency is composited over white by transformers), a
                          palette PNG with a transparent index, a portrait photo, and 15
                          JPEGs of different kinds written by PIL (make_jpegs)
  preprocess.safetensors  for every test image NAME and crop size S in (336, 224):
                            NAME.decoded        uint8 (H, W, 3)  PIL decode + transformers' convert_to_rgb
                            NAME.S.resized      uint8 (h, w, 3)  after the shortest-side bicubic resize
                            NAME.S.pixel_values f32 (3, S, S)    CLIPImageProcessorPil output
                          resize.K.src / resize.K.dst: random images and PIL's bicubic resize of
                          them to odd sizes (up, down, one axis only, extreme ratios)
                          composite: uint8 (256, 256), pixel (c, a) over opaque white
  preprocess.json         the list of images, sizes and shapes
  models/NAME/            random-weight HF model directories (save_pretrained):
                            tiny     CLIPVisionModel, image 42, patch 14, width 72, 6 heads, 3 layers
                            deep     CLIPVisionModel, image 32, patch 8, width 32, 2 heads, 10 layers
                            large2   ViT-L/14-336 shapes (1024 wide, 16 heads, 577 tokens), 2 layers
                            clipfull a whole CLIPModel (vision + text towers), vision 3 layers
  models/NAME.expected.safetensors:
                            pixel_values (B, 3, S, S), hidden_states (L+1, B, T, D), pooled (B, D),
                            penultimate (B, T-1, D), molmo (B, T-1, 2D) when L >= 9

The preprocessing pins transformers' PIL backend by name (CLIPImageProcessorPil); the
torchvision backend rounds differently (specs.md 1.5). Deterministic; a few seconds.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, features
from safetensors.torch import save_file

import transformers
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel
from transformers.image_transforms import convert_to_rgb
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png",
          "no_time_for_that_tiny.gif"]
CROPS = [336, 224]


def processor(size):
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 resample=3, do_center_crop=True, do_resize=True, do_rescale=True,
                                 do_normalize=True, do_convert_rgb=True)


def make_images(d):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(2)
    chelsea = np.array(Image.open(os.path.join(ROOT, "data/images/chelsea.png")).convert("RGB"))
    # a portrait photo: the cat turned on its side (300 x 451 -> 451 tall)
    Image.fromarray(np.ascontiguousarray(chelsea.transpose(1, 0, 2))).save(os.path.join(d, "portrait.png"))
    # a tall portrait (400 x 1000): Pillow 13 resizes it vertically first (H - h > 2 (W - w))
    astro = np.array(Image.open(os.path.join(ROOT, "data/images/astronaut.png")).convert("RGB"))
    Image.fromarray(np.ascontiguousarray(np.concatenate([astro[:, 50:450], astro[::-1, 50:450]])[:1000])).save(
        os.path.join(d, "tall.png"))
    # a 1x1 image: transformers upsamples it to a constant 336x336, so do we
    Image.new("RGB", (1, 1), (200, 10, 30)).save(os.path.join(d, "one.png"))
    # RGBA with every alpha level: a small crop of the cat with an alpha ramp
    small = chelsea[:120, :160]
    alpha = (np.arange(160)[None, :] * 255 // 159 * np.ones((120, 1))).astype(np.uint8)
    alpha[::7] = rng.integers(0, 256, (len(alpha[::7]), 160), dtype=np.uint8)
    Image.fromarray(np.dstack([small, alpha]), "RGBA").save(os.path.join(d, "rgba.png"))
    # gray + alpha
    gray = np.array(Image.fromarray(small).convert("L"))
    Image.fromarray(np.dstack([gray, alpha[:, ::-1]]), "LA").save(os.path.join(d, "la.png"))
    # palette image with one transparent index (PNG tRNS)
    pal = Image.fromarray(small).quantize(16)
    pal.info["transparency"] = 3
    pal.save(os.path.join(d, "palette_trns.png"), transparency=3)
    return ["portrait.png", "tall.png", "one.png", "rgba.png", "la.png", "palette_trns.png"] + make_jpegs(d)


def make_jpegs(d):
    """JPEGs of every kind PIL writes, from real photos: qualities, the three chroma
    subsamplings, progressive, grayscale, CMYK (PIL writes Adobe's inverted polarity),
    RGB stored without YCbCr, optimised Huffman tables, restart markers, sizes that are
    not a whole number of blocks. PIL reads them back with libjpeg-turbo (ISLOW inverse
    DCT, fancy upsampling); the C side must decode each to the same bytes."""
    astro = Image.open(os.path.join(ROOT, "data/images/astronaut.png")).convert("RGB")
    chelsea = Image.open(os.path.join(ROOT, "data/images/chelsea.png")).convert("RGB")
    coffee = Image.open(os.path.join(ROOT, "data/images/coffee.png")).convert("RGB")
    odd = coffee.crop((13, 7, 13 + 333, 7 + 217))          # 333 x 217: partial MCUs on both edges
    kinds = [
        ("q95_444.jpg", astro, dict(quality=95, subsampling=0)),
        ("q75_422.jpg", chelsea, dict(quality=75, subsampling=1)),
        ("q50_420.jpg", coffee, dict(quality=50, subsampling=2)),
        ("q8_420.jpg", chelsea, dict(quality=8, subsampling=2)),           # heavy blocking, clipped values
        ("progressive_420.jpg", astro, dict(quality=85, subsampling=2, progressive=True)),
        ("progressive_444.jpg", coffee, dict(quality=90, subsampling=0, progressive=True, optimize=True)),
        ("gray.jpg", astro.convert("L"), dict(quality=80)),
        ("gray_progressive.jpg", chelsea.convert("L"), dict(quality=60, progressive=True)),
        ("cmyk.jpg", chelsea.convert("CMYK"), dict(quality=90)),
        ("rgb_keep.jpg", coffee, dict(quality=85, keep_rgb=True, subsampling=0)),  # Adobe transform 0
        ("restart_rows.jpg", astro, dict(quality=80, restart_marker_rows=1)),
        ("restart_blocks_progressive.jpg", chelsea, dict(quality=70, restart_marker_blocks=5, progressive=True)),
        ("odd_420.jpg", odd, dict(quality=88, subsampling=2)),
        ("odd_422_optimized.jpg", odd.transpose(Image.Transpose.ROTATE_90), dict(quality=77, subsampling=1, optimize=True)),
        ("tiny_7x5.jpg", odd.resize((7, 5)), dict(quality=90, subsampling=2)),
    ]
    names = []
    for name, im, opts in kinds:
        im.save(os.path.join(d, name), "JPEG", **opts)
        back = Image.open(os.path.join(d, name))
        assert back.format == "JPEG" and back.mode == im.mode, (name, back.mode)
        names.append(name)
    return names


def preprocess(out):
    tensors, listing = {}, []
    extra = make_images(os.path.join(out, "images"))
    # paths as the C side opens them: data/ relative to the repo root, made ones relative to --out
    paths = [(n, os.path.join("data/images", n), os.path.join(ROOT, "data/images", n)) for n in IMAGES] + \
            [(n, os.path.join("images", n), os.path.join(out, "images", n)) for n in extra]
    for name, path, full in paths:
        pil = Image.open(full)
        dec = convert_to_rgb(pil, return_numpy=True)
        tensors[f"{name}.decoded"] = torch.from_numpy(np.ascontiguousarray(dec))
        entry = {"name": name, "path": path, "in_out": not path.startswith("data/"), "mode": pil.mode, "size": list(pil.size), "crops": {}}
        for s in CROPS:
            proc = processor(s)
            pv = proc(images=Image.open(full), return_tensors="np")["pixel_values"][0]
            assert pv.dtype == np.float32 and pv.shape == (3, s, s), pv.shape
            # the resized image, by the same resize the processor calls
            img = proc.process_image(Image.open(full), do_convert_rgb=True)          # (3, H, W) uint8
            from transformers.image_processing_utils import SizeDict
            rs = proc.resize(img, SizeDict(shortest_edge=s), resample=3)
            tensors[f"{name}.{s}.resized"] = torch.from_numpy(np.ascontiguousarray(rs.transpose(1, 2, 0)))
            tensors[f"{name}.{s}.pixel_values"] = torch.from_numpy(np.ascontiguousarray(pv))
            entry["crops"][str(s)] = list(rs.shape[1:])
        listing.append(entry)

    # PIL's bicubic on random images, directly: downscale, upscale, one axis, extreme ratios
    rng = np.random.default_rng(0)
    cases = [((37, 53), (336, 483)), ((500, 301), (336, 557)), ((1, 1), (3, 2)), ((7, 400), (5, 336)),
             ((64, 64), (64, 17)), ((64, 64), (129, 64)), ((333, 777), (101, 13)), ((20, 30), (20, 30)),
             # Pillow 13 goes vertical first when H - h > 2 (W - w): tall, exactly at the tie, upscaled
             ((900, 300), (600, 200)), ((90, 40), (70, 30)), ((91, 40), (70, 30)), ((119, 31), (38, 107))]
    for i, ((h, w), (oh, ow)) in enumerate(cases):
        src = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 2 == 1:   # smooth-ish content too, not only noise
            yy, xx = np.mgrid[0:h, 0:w]
            src[..., 0] = (127 + 127 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
        dst = np.array(Image.fromarray(src, "RGB").resize((ow, oh), Image.Resampling.BICUBIC))
        tensors[f"resize.{i}.src"] = torch.from_numpy(src)
        tensors[f"resize.{i}.dst"] = torch.from_numpy(np.ascontiguousarray(dst))

    # the alpha composite table: pixel (c, a) over opaque white
    c, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = Image.fromarray(np.stack([c, c, c, a], -1).astype(np.uint8), "RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    tensors["composite"] = torch.from_numpy(np.array(Image.alpha_composite(white, rgba).convert("RGB"))[..., 0].copy())

    save_file(tensors, os.path.join(out, "preprocess.safetensors"))
    with open(os.path.join(out, "preprocess.json"), "w") as f:
        json.dump({"images": listing, "crops": CROPS, "n_resize": len(cases),
                   "backend": "CLIPImageProcessorPil", "transformers": transformers.__version__,
                   "pillow": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo")}, f, indent=1)
    print(f"PASS preprocess reference: {len(paths)} images x crops {CROPS}, {len(cases)} resize cases "
          f"(CLIPImageProcessorPil, Pillow {Image.__version__}, its libjpeg-turbo {features.version('libjpeg_turbo')})")


def randomize(model, seed):
    """Every parameter random, biases and layernorms included, so that none of them can be
    silently ignored by the C side and still pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") or \
                    "layrnorm.weight" in name or "layernorm.weight" in name or "final_layer_norm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2 and "embedding" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in ** 0.5))
            elif "patch_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel() ** 0.5))
            else:   # class and position embeddings, token embeddings, logit scale
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def vision_cfg(image, patch, hidden, heads, layers, inter, act="quick_gelu"):
    return dict(image_size=image, patch_size=patch, hidden_size=hidden, num_attention_heads=heads,
                num_hidden_layers=layers, intermediate_size=inter, hidden_act=act, layer_norm_eps=1e-5,
                num_channels=3, attention_dropout=0.0)


def run_model(name, model, vision, out, seed, images):
    d = os.path.join(out, "models", name)
    model.save_pretrained(d)
    cfg = vision.config
    L = cfg.num_hidden_layers
    proc = processor(cfg.image_size)
    pv = torch.cat([proc(images=Image.open(os.path.join(ROOT, "data/images", n)), return_tensors="pt")["pixel_values"]
                    for n in images])
    with torch.no_grad():
        o = vision(pixel_values=pv, output_hidden_states=True)
        # hidden_states[0] is the embeddings AFTER pre_layrnorm: checked here, stated in vit.h
        emb = vision.embeddings(pv)
        pre = vision.pre_layrnorm(emb)
        assert torch.equal(o.hidden_states[0], pre), "hidden_states[0] is not pre_layrnorm(embeddings)"
        assert not torch.equal(o.hidden_states[0], emb)
        assert torch.equal(o.hidden_states[-1], o.last_hidden_state)
    hs = torch.stack(o.hidden_states)     # (L+1, B, T, D)
    exp = {"pixel_values": pv.contiguous(), "hidden_states": hs.contiguous(),
           "pooled": o.pooler_output.contiguous(),
           "penultimate": hs[L - 1][:, 1:].contiguous()}
    if L >= 9:
        exp["molmo"] = torch.cat([hs[L - 2][:, 1:], hs[L - 9][:, 1:]], dim=-1).contiguous()
    save_file(exp, os.path.join(out, "models", name + ".expected.safetensors"),
              metadata={"images": ",".join(images)})
    print(f"PASS model {name}: {type(model).__name__} L={L} D={cfg.hidden_size} heads={cfg.num_attention_heads} "
          f"image={cfg.image_size} patch={cfg.patch_size} B={pv.shape[0]} T={hs.shape[2]}")


def models(out):
    torch.manual_seed(0)
    imgs = ["astronaut.png", "camera.png", "chelsea.png"]
    specs = [("tiny", vision_cfg(42, 14, 72, 6, 3, 100), 1, imgs),
             ("deep", vision_cfg(32, 8, 32, 2, 10, 48), 2, imgs[:2]),
             ("large2", vision_cfg(336, 14, 1024, 16, 2, 4096), 3, imgs[:2])]
    for name, vc, seed, im in specs:
        m = CLIPVisionModel(CLIPVisionConfig(**vc)).eval()
        randomize(m, seed)
        run_model(name, m, m, out, seed, im)   # v5: the vision model is the module itself
    # transformers v5 saves a CLIPVisionModel WITHOUT the `vision_model.` prefix
    # (embeddings.class_embedding, ...); the hub's CLIPModel checkpoint has it. The C
    # loader accepts both. A whole CLIPModel: the loader must find vision_model.* and
    # ignore the text tower.
    cfg = CLIPConfig(vision_config=vision_cfg(28, 14, 48, 4, 3, 64),
                     text_config=dict(hidden_size=40, intermediate_size=80, num_hidden_layers=2,
                                      num_attention_heads=4, vocab_size=99, max_position_embeddings=16,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0),
                     projection_dim=24)
    m = CLIPModel(cfg).eval()
    randomize(m, 4)
    run_model("clipfull", m, m.vision_model, out, 4, imgs[:2])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    preprocess(args.out)
    models(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
