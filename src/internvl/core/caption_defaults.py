"""The captioning defaults every entry point shares (`internvl caption`, `internvl eval caption`, the
Python API of `internvl.evaluation.captioning`), in one place so the verbs cannot drift apart.

Standard library only: the CLI reads these as option defaults before torch is imported.
"""

from __future__ import annotations

PROMPT = "English caption:"  # the reference's text after the query tokens, for every dataset
GENERATION = {"num_beams": 5, "min_new_tokens": 8, "max_new_tokens": 30}  # the reference's beam search
# Images per `generate` call. The reference ran 1; 8 keeps a GPU busy and gives the same captions up to
# fp16 rounding in batched matmuls (README, Captioning). Not part of the resume settings.
CAPTION_BATCH_SIZE = 8
