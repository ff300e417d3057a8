"""Conversation templates of InternVL-Chat and the prompt builder of ``chat()`` (chat spec §4.2, §5).

Every template the reference ships is here and renders the exact strings the reference builds
(checked against ``fixtures/upstream/internvl_chat/chat_prompts.json``):

=================  ===========================================  ==============================
name               used by                                      layout
=================  ===========================================  ==============================
``Hermes-2``       InternVL-Chat-V1-2 / V1-2-Plus (Yi-34B)       ChatML, no newline after sep
``internlm2-chat`` V1-5 / InternVL2 (InternLM2)                  same rendering as Hermes-2
``phi3-chat``      InternVL2 (Phi-3)                             ``<|user|>`` / ``<|end|>``
``internvl2_5``    InternVL2.5                                   ChatML with ``<|im_end|>\\n``
``internvl_zh``    InternVL-Chat-V1-1                            ``<human>: ... <bot>: ...</s>``
=================  ===========================================  ==============================

System message (a setting, resolved by `resolve_system_message`): an explicit per-call value, else the
checkpoint's ``config.system_message`` when config.json has one (V1-2-Plus: "Answer the questions."),
else the template default. The V1-2 config.json has no such key, so V1-2 defaults to the reference
template's Chinese InternVL identity prompt below; LMDeploy's V1-2 template uses "Answer the
questions." instead (`V1_2_PLUS_SYSTEM_MESSAGE`), which callers can pass explicitly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from internvl.core.errors import DataFormatError, UnknownModelError
from internvl.core.tokens import (  # noqa: F401 (re-exported: the one definition lives in core.tokens)
    IMAGE_PLACEHOLDER,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
)

INTERNVL_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)
INTERNVL2_5_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
# The system prompt of the V1-2-Plus config.json and of LMDeploy's V1-2 template (likely V1-2's training prompt).
V1_2_PLUS_SYSTEM_MESSAGE = "Answer the questions."


class SeparatorStyle(Enum):
    """How turns are joined. MPT: ``role + msg + sep``; INTERNVL_ZH: ``role + ': ' + msg`` + alternating seps."""

    MPT = "mpt"
    INTERNVL_ZH = "internvl_zh"


@dataclass
class Conversation:
    """A conversation being rendered into a prompt (mutable; get one with `get_conv_template`)."""

    name: str
    system_template: str
    system_message: str
    roles: tuple[str, str]
    sep_style: SeparatorStyle
    sep: str
    sep2: str | None = None
    stop_str: str | None = None
    stop_token_ids: list[int] | None = None
    messages: list[list[str | None]] = field(default_factory=list)
    # Training-side behaviour of the reference preprocess function chosen for this template (spec §7.4):
    strip_messages: bool = False  # preprocess_internlm strips every message value
    keep_leading_assistant: bool = False  # preprocess_internvl2_5 keeps (and trains on) a leading gpt turn

    def set_system_message(self, system_message: str) -> None:
        self.system_message = system_message

    def append_message(self, role: str, message: str | None) -> None:
        """Append a turn; ``None`` (or "") as the message leaves the turn open for generation."""
        self.messages.append([role, message])

    def update_last_message(self, message: str) -> None:
        self.messages[-1][1] = message

    @property
    def stop_sep(self) -> str:
        """The end-of-turn string whose token id ends generation (``<|im_end|>`` for Hermes-2)."""
        return self.sep.strip()

    @property
    def end_of_turn(self) -> str:
        """The part of ``sep`` that closes an answer and is trained on (``<|im_end|>`` of ``"<|im_end|>\\n"``)."""
        return self.sep.rstrip()

    def segments(self) -> list[tuple[str, bool]]:
        """The rendered prompt as ``(text, trainable)`` pieces, in order.

        ``"".join(text for text, _ in conv.segments()) == conv.get_prompt()``: inference prompts and
        training labels come from this one renderer, so they cannot drift apart. Trainable pieces are
        each non-empty assistant message followed by `end_of_turn`; role prefixes, system and user
        turns and the rest of the separator (internvl2_5's ``"\\n"``) are not. Empty messages count as
        open turns (the reference's truthiness check): only the role prefix is rendered.
        """
        system = self.system_template.format(system_message=self.system_message)
        assistant = self.roles[1]
        out: list[tuple[str, bool]] = []
        if self.sep_style is SeparatorStyle.MPT:
            out.append((system + self.sep, False))
            for role, message in self.messages:
                if not message:
                    out.append((role, False))
                elif role == assistant:
                    out += [
                        (role, False),
                        (message + self.end_of_turn, True),
                        (self.sep[len(self.end_of_turn) :], False),
                    ]
                else:
                    out.append((role + message + self.sep, False))
        elif self.sep_style is SeparatorStyle.INTERNVL_ZH:
            seps = (self.sep2 or "", self.sep)
            out.append((system + seps[0], False))
            for i, (role, message) in enumerate(self.messages):
                if not message:
                    out.append((f"{role}:", False))
                elif role == assistant:
                    end = seps[i % 2]
                    out += [(f"{role}: ", False), (message + end.rstrip(), True), (end[len(end.rstrip()) :], False)]
                else:
                    out.append((f"{role}: {message}{seps[i % 2]}", False))
        else:
            raise DataFormatError(f"separator style {self.sep_style} is not supported")
        return [(text, trainable) for text, trainable in out if text]

    def get_prompt(self) -> str:
        """Render the prompt (the concatenation of `segments`)."""
        return "".join(text for text, _ in self.segments())

    def copy(self) -> Conversation:
        return dataclasses.replace(self, messages=[list(m) for m in self.messages])

    def to_openai_api_messages(self) -> list[dict[str, str]]:
        """The conversation as OpenAI chat messages (system first; open turns omitted)."""
        out = [{"role": "system", "content": self.system_message}]
        for i, (_, message) in enumerate(self.messages):
            if message:
                out.append({"role": "user" if i % 2 == 0 else "assistant", "content": message})
        return out


_TEMPLATES: dict[str, Conversation] = {}


def register_conv_template(template: Conversation, override: bool = False) -> None:
    if template.name in _TEMPLATES and not override:
        raise ValueError(f"conversation template {template.name!r} is already registered")
    _TEMPLATES[template.name] = template


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of a registered template."""
    try:
        return _TEMPLATES[name].copy()
    except KeyError:
        raise UnknownModelError(f"unknown conversation template {name!r}; known: {sorted(_TEMPLATES)}") from None


def list_conv_templates() -> list[str]:
    return sorted(_TEMPLATES)


register_conv_template(
    Conversation(
        name="Hermes-2",
        system_template="<|im_start|>system\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep_style=SeparatorStyle.MPT,
        sep="<|im_end|>",
        stop_str="<|endoftext|>",
    )
)
register_conv_template(
    Conversation(
        name="internlm2-chat",
        system_template="<|im_start|>system\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep_style=SeparatorStyle.MPT,
        sep="<|im_end|>",
        strip_messages=True,
    )
)
register_conv_template(
    Conversation(
        name="phi3-chat",
        system_template="<|system|>\n{system_message}",
        system_message=INTERNVL_SYSTEM_MESSAGE,
        roles=("<|user|>\n", "<|assistant|>\n"),
        sep_style=SeparatorStyle.MPT,
        sep="<|end|>",
    )
)
register_conv_template(
    Conversation(
        name="internvl2_5",
        system_template="<|im_start|>system\n{system_message}",
        system_message=INTERNVL2_5_SYSTEM_MESSAGE,
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep_style=SeparatorStyle.MPT,
        sep="<|im_end|>\n",
        keep_leading_assistant=True,
    )
)
register_conv_template(
    Conversation(
        name="internvl_zh",
        # The reference's system template is empty (so a system message would be dropped); with the
        # default empty message both render identically, and an explicit one is kept here.
        system_template="{system_message}",
        system_message="",
        roles=("<human>", "<bot>"),
        sep_style=SeparatorStyle.INTERNVL_ZH,
        sep="</s>",
        sep2=" ",
    )
)


def resolve_system_message(template: str, checkpoint_value: str | None = None, override: str | None = None) -> str:
    """Per-call ``override`` > the checkpoint config's ``system_message`` > the template default."""
    if override is not None:
        return override
    if checkpoint_value is not None:
        return checkpoint_value
    return get_conv_template(template).system_message


def add_image_placeholder(question: str, has_images: bool, history: Sequence | None) -> str:
    """The reference's auto-insertion: prepend ``"<image>\\n"`` when images are given, there is no history
    (``history=None``; an empty list disables it) and the question has no ``<image>``."""
    if has_images and history is None and IMAGE_PLACEHOLDER not in question:
        return IMAGE_PLACEHOLDER + "\n" + question
    return question


def image_tokens(num_patches: int, num_image_token: int) -> str:
    """``<img>`` + ``<IMG_CONTEXT>`` x (num_image_token x tiles) + ``</img>``."""
    return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (num_image_token * num_patches) + IMG_END_TOKEN


def expand_image_placeholders(prompt: str, num_patches_list: Sequence[int], num_image_token: int) -> str:
    """Replace the first remaining ``<image>`` for each entry of ``num_patches_list``, in order.

    Extra placeholders stay literal text (as in the reference).

    Raises:
        DataFormatError: fewer ``<image>`` placeholders than images.
    """
    available = prompt.count(IMAGE_PLACEHOLDER)
    if available < len(num_patches_list):
        raise DataFormatError(
            f"the prompt has {available} {IMAGE_PLACEHOLDER} placeholder(s) but {len(num_patches_list)} images were "
            f"given (num_patches_list={list(num_patches_list)}); add one {IMAGE_PLACEHOLDER} per image"
        )
    for n in num_patches_list:
        prompt = prompt.replace(IMAGE_PLACEHOLDER, image_tokens(n, num_image_token), 1)
    return prompt


def render_conversation(
    template: str,
    question: str,
    history: Sequence[tuple[str, str]] | None = None,
    system_message: str | None = None,
) -> Conversation:
    """The template filled with history turns, the question and an open assistant turn."""
    conv = get_conv_template(template)
    if system_message is not None:
        conv.set_system_message(system_message)
    for old_question, old_answer in history or []:
        conv.append_message(conv.roles[0], old_question)
        conv.append_message(conv.roles[1], old_answer)
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], None)
    return conv


def build_query(
    template: str,
    question: str,
    *,
    history: Sequence[tuple[str, str]] | None = None,
    num_patches_list: Sequence[int] = (),
    num_image_token: int = 256,
    system_message: str | None = None,
) -> tuple[str, str]:
    """The exact prompt string the reference ``chat()`` tokenises, and the end-of-turn separator.

    Args:
        template: conversation template name (``Hermes-2`` for V1-2).
        question: the user turn; ``"<image>\\n"`` is prepended when images are given without history
            and without a placeholder.
        history: previous (question, answer) pairs; their ``<image>`` placeholders are expanded first.
        num_patches_list: tiles per image, in placeholder order (empty for pure text).
        num_image_token: visual tokens per tile (256 for V1-2).
        system_message: None for the template default.

    Returns:
        (prompt, stop separator), e.g. ``"<|im_start|>system\\n...<|im_start|>assistant\\n"`` and ``"<|im_end|>"``.
    """
    question = add_image_placeholder(question, bool(num_patches_list), history)
    conv = render_conversation(template, question, history, system_message)
    return expand_image_placeholders(conv.get_prompt(), num_patches_list, num_image_token), conv.stop_sep
