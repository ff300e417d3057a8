"""Zero-shot captioning with InternVL-G's QLLaMA (reference ``evaluate_caption.py``, spec §5.5).

Settings default to the reference: prompt ``"English caption:"`` tokenised as ``[BOS] + pieces`` (no
EOS), 5 beams, 8 to 30 new tokens, no sampling, length penalty 1, no early stopping; captions are
``decode(skip_special_tokens=True).strip()``. The reference asserted batch size 1 because it had no
padding logic for prompts; here the prompt is the same for every image, so batches need no padding
and each image's beams are independent of the others in the batch.
"""

from __future__ import annotations

import torch

from internvl.data.tokenization import CAPTION_PROMPT, InternVLTextTokenizer
from internvl.models.internvl_cg import InternVLModel


@torch.no_grad()
def generate_captions(
    model: InternVLModel,
    tokenizer: InternVLTextTokenizer,
    pixel_values: torch.Tensor,
    *,
    prompt: str = CAPTION_PROMPT,
    num_beams: int = 5,
    min_new_tokens: int = 8,
    max_new_tokens: int = 30,
    **generation_kwargs,
) -> list[str]:
    """Caption a batch of images.

    Args:
        pixel_values: float[B, 3, S, S] from the caption transform (resize to S x S).
        prompt: text after the query tokens.
        generation_kwargs: extra ``generate`` arguments (e.g. ``length_penalty``, ``repetition_penalty``).

    Returns:
        B caption strings.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be float[B, 3, S, S]; got shape {tuple(pixel_values.shape)}")
    prompt_ids = tokenizer.caption_prompt_ids(prompt)  # (1, P), shared by the batch
    settings = {"do_sample": False, "length_penalty": 1.0, "early_stopping": False, "num_return_sequences": 1}
    settings.update(generation_kwargs)
    ids = model.generate(
        pixel_values.to(model.device, model.dtype),
        prompt_ids,
        num_beams=num_beams,
        min_new_tokens=min_new_tokens,
        max_new_tokens=max_new_tokens,
        **settings,
    )
    return tokenizer.batch_decode(ids)
