"""Per-device memory estimate for ``--dry-run``: parameters, gradients, optimizer states, activations.

A planning number, not a guarantee (allocator fragmentation, communication buckets and the CUDA
context come on top; budget 10-20% extra). Model states follow the ZeRO paper's accounting:

* weights: ``bytes_w`` per parameter (2 in bf16, 4 in fp32), sharded over devices at ZeRO-3;
* gradients: ``bytes_w`` per *trainable* parameter, sharded at ZeRO >= 2;
* optimizer: AdamW's two fp32 moments, plus the fp32 master copy in bf16 runs, per trainable parameter,
  sharded at ZeRO >= 1.

Activations of the InternVL stage-2 forward (B images per device, 3B text rows of nq + L tokens): with
activation checkpointing each tower keeps its block inputs plus one block's recomputation working set;
without it, every block's working set. A tower with no trainable parameter inside or above it keeps
nothing for backward (head mode: the ViT and QLLaMA run forward only); the forward then still needs one
block's working set at a time (``buffers``), as does ZeRO-3 for the parameters it gathers.

For our implementation (SDPA attention, non-reentrant checkpointing, lm_head frozen). The guide's
measurements of the reference (24 GB head, 37 GB LoRA, 80 GB full on 32 GPUs) include its eager
attention, its trainable lm_head and the allocator's cache, so they are higher.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    buffers: float = 0.0  # transient: one block's forward working set, ZeRO-3's gathered parameters

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.buffers

    def as_gib(self) -> dict[str, float]:
        return {k: round(v / GIB, 3) for k, v in {**self.__dict__, "total": self.total}.items()}


def model_state_bytes(
    total: int, trainable: int, precision: str, zero_stage: int, world_size: int
) -> tuple[float, float, float]:
    bw = 2 if precision == "bf16" else 4
    optimizer_per_param = 8 + (4 if precision == "bf16" else 0)
    w = total * bw / (world_size if zero_stage >= 3 else 1)
    g = trainable * bw / (world_size if zero_stage >= 2 else 1)
    o = trainable * optimizer_per_param / (world_size if zero_stage >= 1 else 1)
    return w, g, o


def block_bytes(config, batch: int, text_length: int, image_size: int, precision: str) -> tuple[float, float]:
    """One ViT block's and one QLLaMA block's saved tensors (norms, qkv, attention output, MLP
    in/hidden/out, attention scores as the eager worst case; QLLaMA with its cross-attention K/V)."""
    a = 2 if precision == "bf16" else 4
    v, q = config.vision_config, config.qllama_config
    n = (image_size // v.patch_size) ** 2 + 1
    rows, t = 3 * batch, config.num_query_token + text_length
    vit = batch * n * (8 * v.hidden_size + 2 * v.intermediate_size) * a + batch * v.num_attention_heads * n * n * a
    qll = rows * t * (8 * q.hidden_size + 3 * q.intermediate_size) * a + rows * q.num_attention_heads * t * t * a
    qll += rows * n * 2 * q.hidden_size * a / q.cross_attention_frequency
    return vit, qll


def activation_bytes(
    config,
    batch: int,
    text_length: int,
    image_size: int,
    precision: str,
    *,
    checkpointing: bool,
    vision_trains: bool,
    qllama_trains: bool,
) -> float:
    """Stored activations of one training forward of `InternVLModel.retrieval_features` (see module doc)."""
    a = 2 if precision == "bf16" else 4
    v, q = config.vision_config, config.qllama_config
    n = (image_size // v.patch_size) ** 2 + 1
    rows, t = 3 * batch, config.num_query_token + text_length
    vit_block, q_block = block_bytes(config, batch, text_length, image_size, precision)
    total = 0.0
    # The ViT must keep activations when it trains or when the QLLaMA above it needs its output's grad.
    if vision_trains:
        total += (
            (v.num_hidden_layers * batch * n * v.hidden_size * a + vit_block)
            if checkpointing
            else v.num_hidden_layers * vit_block
        )
    if qllama_trains or vision_trains:
        total += (
            (q.num_hidden_layers * rows * t * q.hidden_size * a + q_block)
            if checkpointing
            else q.num_hidden_layers * q_block
        )
    return total


def estimate(
    config,
    counts: dict[str, tuple[int, int]],
    *,
    batch: int,
    text_length: int,
    image_size: int,
    precision: str,
    zero_stage: int,
    world_size: int,
    checkpointing: bool,
    zero3_live_params: float = 2e9,
) -> MemoryEstimate:
    """The estimate for one device; ``counts`` from `internvl.training.methods.parameter_counts`.

    ``zero3_live_params``: parameters ZeRO-3 may hold gathered at once (the DeepSpeed config's
    ``stage3_max_live_parameters`` + ``stage3_prefetch_bucket_size``).
    """
    trainable, total = counts["total"]
    w, g, o = model_state_bytes(total, trainable, precision, zero_stage, world_size)
    act = activation_bytes(
        config,
        batch,
        text_length,
        image_size,
        precision,
        checkpointing=checkpointing,
        vision_trains=counts.get("vision_model", (0, 0))[0] > 0,
        qllama_trains=counts.get("qllama", (0, 0))[0] > 0 or counts.get("query_tokens", (0, 0))[0] > 0,
    )
    # Nothing stored (frozen towers): the forward still needs one block's working set at a time.
    buffers = 0.0 if act else max(block_bytes(config, batch, text_length, image_size, precision))
    if zero_stage >= 3:
        buffers += min(total, zero3_live_params) * (2 if precision == "bf16" else 4)
    return MemoryEstimate(w, g, o, act, buffers)


# -- InternVL-Chat SFT ------------------------------------------------------------------------------
def chat_block_bytes(vision, llm, *, tiles: int, batch: int, text_length: int, precision: str) -> tuple[float, float]:
    """One ViT block's (over all ``tiles`` of the micro-batch) and one LLM decoder layer's (``batch`` rows
    of ``text_length`` tokens) saved tensors: norms, q/k/v, attention output, MLP in/hidden/out (SDPA:
    no score matrix is stored; the ViT term keeps it as the eager worst case, as `block_bytes`)."""
    a = 2 if precision == "bf16" else 4
    n = (vision.image_size // vision.patch_size) ** 2 + 1
    vit = tiles * n * (8 * vision.hidden_size + 2 * vision.intermediate_size) * a
    vit += tiles * vision.num_attention_heads * n * n * a
    kv = llm.hidden_size // llm.num_attention_heads * getattr(llm, "num_key_value_heads", llm.num_attention_heads)
    lm = batch * text_length * (6 * llm.hidden_size + 2 * kv + 4 * llm.intermediate_size) * a
    return vit, lm


def estimate_chat(
    vision,
    llm,
    counts: dict[str, tuple[int, int]],
    *,
    batch: int,
    tiles_per_sample: int,
    text_length: int,
    precision: str,
    zero_stage: int,
    world_size: int,
    checkpointing: bool,
    zero3_live_params: float = 2e9,
) -> MemoryEstimate:
    """Per-device estimate of one SFT step of InternVL-Chat (``counts`` from
    `internvl.training.chat_methods.trainable_summary`).

    Activations: the ViT keeps them when it trains; the LLM when anything in or below it trains (the
    gradient of the projector/ViT flows through it). With activation checkpointing a tower keeps its
    block inputs plus one block's working set. The loss adds the logits and their float32 copy
    (``batch x text_length x vocab``), which checkpointing does not remove.
    """
    a = 2 if precision == "bf16" else 4
    trainable, total = counts["total"]
    w, g, o = model_state_bytes(total, trainable, precision, zero_stage, world_size)
    tiles = batch * tiles_per_sample
    vit_block, lm_block = chat_block_bytes(
        vision, llm, tiles=tiles, batch=batch, text_length=text_length, precision=precision
    )
    n = (vision.image_size // vision.patch_size) ** 2 + 1
    vision_trains = counts.get("vision_model", (0, 0))[0] > 0
    below_llm = vision_trains or counts.get("mlp1", (0, 0))[0] > 0
    llm_trains = counts.get("language_model", (0, 0))[0] > 0 or below_llm
    act = 0.0
    if vision_trains:
        layers = vision.num_hidden_layers
        act += layers * tiles * n * vision.hidden_size * a + vit_block if checkpointing else layers * vit_block
    if llm_trains:
        layers = llm.num_hidden_layers
        act += layers * batch * text_length * llm.hidden_size * a + lm_block if checkpointing else layers * lm_block
    logits = batch * text_length * llm.vocab_size * (a + 4)
    buffers = logits + (0.0 if vision_trains else vit_block)
    if zero_stage >= 3:
        buffers += min(total, zero3_live_params) * a
    return MemoryEstimate(w, g, o, act, buffers)
