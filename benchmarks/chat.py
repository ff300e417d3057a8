"""Chat latency: our ``chat()`` vs transformers' native ``InternVLForConditionalGeneration``, same sizes.

Both models get random weights of identical shapes (InternViT with RMSNorm + qk-norm, pixel shuffle 0.5,
LN-Linear-GELU-Linear projector, LLaMA decoder) and the same prompt length, image and greedy decoding.

* prefill latency: best-of-N wall time of a generation of 1 new token (vision encode + prompt prefill + 1 step);
* decode tokens/s: (t(1 + N tokens) - t(1 token)) / N, with ``min_new_tokens`` so no run stops early.

Ours is timed through the full ``chat()`` (prompt building and tokenisation included) and through
``model.generate`` directly. Run: ``python benchmarks/chat.py [--new-tokens 64 --repeats 5]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)  # best of N: robust to other processes sharing the CPU


def _native_model(ours, image_token_id: int):
    """transformers' InternVL with the same sizes, or None when this transformers lacks it."""
    try:
        from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig
    except ImportError:
        return None
    v = ours.config.vision
    vision = InternVLVisionConfig(
        hidden_size=v.hidden_size,
        num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads,
        intermediate_size=v.intermediate_size,
        image_size=[v.image_size, v.image_size],
        patch_size=[v.patch_size] * 2,
        use_qk_norm=True,
        norm_type="rms_norm",
        attention_bias=False,
    )
    config = InternVLConfig(
        vision_config=vision,
        text_config=ours.config.llm_config.to_dict(),
        image_token_id=image_token_id,
        image_seq_length=ours.num_image_token,
        downsample_ratio=ours.config.downsample_ratio,
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    config.text_config._attn_implementation = "sdpa"
    model = InternVLForConditionalGeneration(config).eval()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--vit-width", type=int, default=256)
    parser.add_argument("--vit-layers", type=int, default=4)
    parser.add_argument("--llm-width", type=int, default=256)
    parser.add_argument("--llm-layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoTokenizer

    from internvl.data.synthetic import build_chat_tokenizer, synthetic_image
    from internvl.inference import chat as api
    from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

    tok_dir = tempfile.mkdtemp()
    build_chat_tokenizer(tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    cfg = tiny_chat_config(
        len(tokenizer),
        image_size=args.image_size,
        vit_width=args.vit_width,
        vit_layers=args.vit_layers,
        llm_width=args.llm_width,
        llm_layers=args.llm_layers,
        system_message="Answer the questions.",
    )
    ours = build_internvl_chat(cfg, seed=0)
    api.bind_tokenizer(ours, tokenizer)
    pixel_values, _ = api.load_images(ours, [synthetic_image(0, size=args.image_size)])
    question = "what is in the image? please describe it in detail"
    n = args.new_tokens

    def gen(k: int) -> dict:
        return {"max_new_tokens": k, "min_new_tokens": k, "do_sample": False}

    def chat_k(k: int):
        return lambda: api.chat(ours, tokenizer, pixel_values, question, gen(k))

    from internvl.data.conversation import build_query

    query, _ = build_query(
        "Hermes-2",
        question,
        num_patches_list=[1],
        num_image_token=ours.num_image_token,
        system_message="Answer the questions.",
    )
    enc = tokenizer(query, return_tensors="pt")

    def ours_generate_k(k: int):
        return lambda: ours.generate(
            pixel_values=pixel_values, input_ids=enc.input_ids, attention_mask=enc.attention_mask, **gen(k)
        )

    with torch.inference_mode():
        rows = {}
        t1, tn = _timed(chat_k(1), args.repeats), _timed(chat_k(1 + n), args.repeats)
        rows["ours chat()"] = (t1, n / (tn - t1))
        t1, tn = _timed(ours_generate_k(1), args.repeats), _timed(ours_generate_k(1 + n), args.repeats)
        rows["ours model.generate"] = (t1, n / (tn - t1))

        image_token_id = ours.img_context_token_id
        native = _native_model(ours, image_token_id)
        if native is None:
            print(
                "transformers' InternVLForConditionalGeneration is not available in this transformers; "
                "only our numbers are shown"
            )
        else:

            def native_k(k: int):
                return lambda: native.generate(
                    input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixel_values, **gen(k)
                )

            t1, tn = _timed(native_k(1), args.repeats), _timed(native_k(1 + n), args.repeats)
            rows["transformers InternVL"] = (t1, n / (tn - t1))

    prompt_len = enc.input_ids.shape[1]
    print(
        f"sizes: ViT {args.vit_layers}x{args.vit_width} @ {args.image_size}px ({ours.num_image_token} visual tokens), "
        f"LLM {args.llm_layers}x{args.llm_width}, prompt {prompt_len} tokens, {n} decoded tokens, "
        f"torch threads {torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"{'':26s} {'prefill (ms)':>13s} {'decode tok/s':>13s}")
    for name, (prefill, tps) in rows.items():
        print(f"{name:26s} {prefill * 1000:13.2f} {tps:13.1f}")
    if "transformers InternVL" in rows:
        base_p, base_t = rows["transformers InternVL"]
        for name in ("ours chat()", "ours model.generate"):
            p, t = rows[name]
            print(
                f"ratio {name} / transformers: prefill latency x{p / base_p:.2f} (lower is better), "
                f"decode throughput x{t / base_t:.2f} (higher is better)"
            )


if __name__ == "__main__":
    main()
