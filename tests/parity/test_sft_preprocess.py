"""SFT tokenisation and label masking against every case of the reference fixtures (``sft/cases.json``).

Each case is classified from its own fields:

* bad input (an empty answer, ``<image>`` in an answer, not one placeholder per image, or the
  reference's ids show a cut image block): we raise `SFTSampleError` of the matching kind;
* the reference produced a consistent sample (no error, no mismatch warning, and its supervised tokens
  are exactly each answer followed by its end-of-turn token): our input_ids, labels and
  attention_mask are identical;
* otherwise (warned and trained on nothing, raised, or supervised the wrong tokens): our labels pass
  the same answer check, our input_ids equal the reference's, and our attention_mask covers every
  real token (also a literal ``</s>`` when pad id == eos id).
"""

from __future__ import annotations

import json
import re

import pytest

from internvl.data.conversation import IMAGE_PLACEHOLDER, IMG_END_TOKEN, get_conv_template
from internvl.data.sft import IGNORE_INDEX, SFTSampleError, preprocess_conversation
from internvl.data.text_encoders import SentencePieceEncoder
from tests.conftest import parity_root

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def fixture():
    root = parity_root() / "sft"
    if not root.is_dir():
        pytest.fail(f"sft fixtures not found at {root} (set INTERNVL_PARITY_FIXTURES)")
    data = json.loads((root / "cases.json").read_text())
    encoders = {
        name: SentencePieceEncoder.from_pretrained(root / prof["dir"], **prof["from_pretrained_overrides"])
        for name, prof in data["tokenizer_profiles"].items()
    }
    return data, encoders


def _decode(encoder: SentencePieceEncoder, ids: list[int]) -> str:
    """Text of ids without any normalisation of the token boundaries (byte pieces joined, ▁ -> space)."""
    added = {v[0]: k for k, v in encoder.split_tokens.items()}
    out = bytearray()
    for i in ids:
        if i in added:
            out += added[i].encode()
            continue
        piece = encoder.sp.id_to_piece(i)
        m = re.fullmatch(r"<0x([0-9A-F]{2})>", piece)
        out += bytes([int(m.group(1), 16)]) if m else piece.replace("\u2581", " ").encode()
    return out.decode("utf-8", errors="replace")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _expected_answers(case: dict) -> tuple[list[str], str | None]:
    """The answers the template should supervise (after its own dropping/stripping rules) and the system turn."""
    conv = get_conv_template(case["template"])
    turns = list(case["conversations"])
    system = turns.pop(0)["value"] if turns and turns[0]["from"] == "system" else None
    if turns and turns[0]["from"] == "gpt" and not conv.keep_leading_assistant:
        turns = turns[1:]
    answers = [t["value"].strip() if conv.strip_messages else t["value"] for t in turns if t["from"] == "gpt"]
    return answers, system


def _labels_problem(case: dict, encoder: SentencePieceEncoder, ids: list[int], labels: list[int]) -> str | None:
    """Why these labels are not "each answer + its end token and nothing else" (None when they are)."""
    if any(lab != IGNORE_INDEX and lab != tok for lab, tok in zip(labels, ids, strict=True)):
        return "a label differs from its input id"
    runs, start = [], None
    for pos, lab in enumerate([*labels, IGNORE_INDEX]):
        if lab != IGNORE_INDEX and start is None:
            start = pos
        elif lab == IGNORE_INDEX and start is not None:
            runs.append((start, pos))
            start = None
    answers, _ = _expected_answers(case)
    end = get_conv_template(case["template"]).end_of_turn
    end_id = encoder.token_id(end)
    n_real = sum(
        1 for i, t in enumerate(ids) if t != encoder.pad_token_id or i < len(ids) and labels[i] != IGNORE_INDEX
    )
    truncated = len(ids) >= case["model_max_length"] and n_real >= case["model_max_length"]
    if len(runs) != len(answers) and not (truncated and len(runs) < len(answers)):
        return f"{len(runs)} supervised runs for {len(answers)} answers"
    for k, (lo, hi) in enumerate(runs):
        text = _squash(_decode(encoder, ids[lo:hi]))
        want = _squash(answers[k] + end)
        last = truncated and k == len(runs) - 1 and hi == len(ids)
        if last:
            if not want.startswith(text):
                return f"truncated run {k} {text!r} is not a prefix of {want!r}"
        elif text != want or ids[hi - 1] != end_id:
            return f"run {k} is {text!r} (last id {ids[hi - 1]}), expected {want!r} ending with {end_id}"
    return None


def _bad_input(case: dict, encoder: SentencePieceEncoder) -> str | None:
    """The `SFTSampleError` kind the case's own fields call for, or None."""
    kw = case["kwargs"]
    turns = case["conversations"]
    if any(t["from"] == "gpt" and not t["value"].strip() for t in turns):
        return "empty_answer"
    if any(t["from"] == "gpt" and IMAGE_PLACEHOLDER in t["value"] for t in turns):
        return "placeholder_in_answer"
    n_images = 0 if kw["text_only"] else len(kw["num_image_token_list"])
    if sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns if t["from"] == "human") != n_images:
        return "placeholder_mismatch"
    if case.get("input_ids") is not None and case["input_ids"].count(encoder.token_id(IMG_END_TOKEN)) < n_images:
        return "over_length"  # the reference's truncation cut an image block
    return None


def _run(case: dict, encoder: SentencePieceEncoder) -> dict:
    kw = case["kwargs"]
    out = preprocess_conversation(
        case["conversations"],
        case["template"],
        encoder,
        num_image_tokens=[] if kw["text_only"] else kw["num_image_token_list"],
        max_length=case["model_max_length"],
        pad_to_max_length=not kw["group_by_length"] and not kw["use_packed_ds"],
    )
    return {k: v.tolist() for k, v in out.items()}


def test_every_case(fixture):
    data, encoders = fixture
    outcome = {"identical": [], "better": [], "rejected": []}
    for case in data["cases"]:
        name = case["name"]
        enc = encoders[case["tokenizer_profile"]]
        assert enc.pad_token_id == case["pad_token_id"], name
        kind = _bad_input(case, enc)
        if kind is not None:
            with pytest.raises(SFTSampleError) as err:
                _run(case, enc)
            assert err.value.kind == kind, f"{name}: {err.value}"
            outcome["rejected"].append(name)
            continue
        ours = _run(case, enc)
        consistent = (
            case["error"] is None
            and not case["mismatch_warning"]
            and _labels_problem(case, enc, case["input_ids"], case["labels"]) is None
        )
        if consistent:
            for key in ("input_ids", "labels", "attention_mask"):
                assert ours[key] == case[key], f"{name}: {key} differs from the reference"
            outcome["identical"].append(name)
            continue
        problem = _labels_problem(case, enc, ours["input_ids"], ours["labels"])
        assert problem is None, f"{name}: {problem}"
        if case.get("input_ids") is not None:
            assert ours["input_ids"] == case["input_ids"], name
            pad_tail = len(ours["input_ids"]) - sum(ours["attention_mask"])
            assert ours["attention_mask"] == [1] * (len(ours["input_ids"]) - pad_tail) + [0] * pad_tail, name
            ref_inner_zeros = [
                i for i, m in enumerate(case["attention_mask"]) if not m and i < len(ours["input_ids"]) - pad_tail
            ]
            assert all(ours["attention_mask"][i] == 1 for i in ref_inner_zeros), name
        _, system = _expected_answers(case)
        if system is not None:  # a leading system turn becomes the system prompt (the reference raised KeyError)
            prompt = _decode(
                enc, [t for t, lab in zip(ours["input_ids"], ours["labels"], strict=True) if lab == IGNORE_INDEX]
            )
            assert _squash(system) in _squash(prompt), name
        outcome["better"].append(name)
    # Every template contributes reference-identical cases; every kind of deviation is exercised.
    assert {data["cases"][0]["template"]} | {c["template"] for c in data["cases"]} == set(data["template_function"])
    identical_templates = {n.split("/")[0] for n in outcome["identical"]}
    assert identical_templates == set(data["template_function"]) - {"internvl_zh"}, identical_templates
    assert len(outcome["identical"]) >= 50 and outcome["better"] and outcome["rejected"], {
        k: len(v) for k, v in outcome.items()
    }


def test_reference_failure_modes_are_all_classified(fixture):
    """The cases the fixture README names as reference bugs land in "better" or "rejected", from their fields."""
    data, encoders = fixture
    by_name = {c["name"]: c for c in data["cases"]}
    shifted = [
        c
        for c in data["cases"]
        if c["error"] is None
        and not c["mismatch_warning"]
        and _bad_input(c, encoders[c["tokenizer_profile"]]) is None
        and _labels_problem(c, encoders[c["tokenizer_profile"]], c["input_ids"], c["labels"])
    ]
    # Consistent by the reference's own check, but wrong labels: the shifted internlm2 dialogue and the
    # dummy-prefix "▁" after <|im_end|> that internvl2_5 supervises.
    assert {c["template"] for c in shifted} == {"internlm2-chat", "internvl2_5"}, [c["name"] for c in shifted]
    warned = [c for c in by_name.values() if c["mismatch_warning"]]
    assert all(c["template"] == "internvl_zh" for c in warned if c["kind"] == "single_image" and c["primary_profile"])


def test_one_pass_boundaries_equal_prefix_encodings(fixture):
    """The encoder's one-pass boundary search agrees with tokenising every prefix (the slow oracle)."""
    from internvl.data.sft import tokenize_segments

    data, encoders = fixture
    checked = 0
    for case in data["cases"]:
        conv = get_conv_template(case["template"])
        for turn in case["conversations"]:
            if turn["from"] in ("human", "gpt"):
                conv.append_message(
                    conv.roles[turn["from"] == "gpt"], turn["value"].replace("<image>", "<img><IMG_CONTEXT></img>")
                )
        segments = conv.segments()
        enc = encoders[case["tokenizer_profile"]]
        assert enc.encode_with_offsets("ab", [1]) is not None
        fast = tokenize_segments(enc, segments)
        assert fast == tokenize_segments(enc, segments, use_offsets=False), case["name"]
        assert fast[0] == enc.encode("".join(t for t, _ in segments)), case["name"]
        checked += 1
    assert checked == len(data["cases"])
