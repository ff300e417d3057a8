"""InternViT forward throughput: ours against transformers' native `InternVLVisionModel`.

Both models get equal width/depth/heads, the same flavour (RMSNorm + q/k norm, no qkv bias) and the
same input, and run in this one process; the script prints images/s for each and the ratio
ours / transformers. Results go to stdout and, with --json, to a file.

    python benchmarks/vit_forward.py                       # CPU-sized default
    python benchmarks/vit_forward.py --preset 6b --image-size 448 --batch 8 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from internvl.models.intern_vit import InternViTConfig, build_intern_vit

SIZES = {
    # width, layers, heads, mlp
    "small": (384, 6, 6, 1536),
    "300m": (1024, 24, 16, 4096),
    "6b": (3200, 48, 25, 12800),
}


def _native(cfg: InternViTConfig):
    from transformers import InternVLVisionConfig, InternVLVisionModel

    hf_cfg = InternVLVisionConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        attention_bias=cfg.qkv_bias,
        use_qk_norm=cfg.qk_normalization,
        norm_type=cfg.norm_type,
        image_size=(cfg.image_size, cfg.image_size),
        patch_size=(cfg.patch_size, cfg.patch_size),
        use_mean_pooling=False,
    )
    hf_cfg._attn_implementation = "sdpa"
    return InternVLVisionModel(hf_cfg)


def _seconds_per_call(model, x: torch.Tensor) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    model(x)
    sync()
    return time.perf_counter() - start


def _interleaved_throughput(models: dict, x: torch.Tensor, warmup: int, iters: int) -> dict[str, float]:
    """images/s per model, best call of ``iters`` rounds; the models alternate within each round so
    that load from other processes on a shared machine hits both alike."""
    best = {name: float("inf") for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models.values():
                m(x)
        for _ in range(iters):
            for name, m in models.items():
                best[name] = min(best[name], _seconds_per_call(m, x))
    return {name: x.shape[0] / t for name, t in best.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(SIZES), default="small")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10, help="timed rounds; the best call counts")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()

    width, layers, heads, mlp = SIZES[args.preset]
    cfg = InternViTConfig(
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        image_size=args.image_size,
    )
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=args.device, dtype=dtype)

    ours = build_intern_vit(cfg).to(args.device, dtype)
    try:
        native = _native(cfg).to(args.device, dtype).eval()
    except ImportError as e:
        ips = _interleaved_throughput({"ours": ours}, x, args.warmup, args.iters)["ours"]
        print(f"transformers has no InternVLVisionModel ({e}); ours: {ips:.2f} images/s")
        return
    ips = _interleaved_throughput({"ours": ours, "native": native}, x, args.warmup, args.iters)
    ours_ips, native_ips = ips["ours"], ips["native"]

    result = {
        "preset": args.preset,
        "image_size": args.image_size,
        "batch": args.batch,
        "device": args.device,
        "dtype": args.dtype,
        "ours_images_per_s": round(ours_ips, 3),
        "transformers_images_per_s": round(native_ips, 3),
        "ratio_ours_over_transformers": round(ours_ips / native_ips, 3),
    }
    print(
        f"InternViT forward, {args.preset} ({width}w x {layers}L x {heads}h), {args.image_size}px, "
        f"batch {args.batch}, {args.device} {args.dtype}"
    )
    print(f"  ours                        {ours_ips:9.2f} images/s")
    print(f"  transformers InternVLVision {native_ips:9.2f} images/s")
    print(f"  ratio ours / transformers   {ours_ips / native_ips:9.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
