"""COCO caption metrics through pycocoevalcap (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D).

A thin wrapper: the scorers and the Stanford PTB tokenizer are pycocoevalcap's own, so the numbers are
the ones COCO-caption papers report. It does what ``COCOEvalCap.evaluate`` does (tokenise references and
predictions with the PTB tokenizer, then run each scorer over the same image ids) minus SPICE, which the
InternVL reference output does not contain (spec §5.6) and which needs a separate model download.

Pure: no imports from the rest of the package. pycocoevalcap and Java (for the PTB tokenizer and METEOR)
are checked on first use, with an error that says how to install them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

# The reference's printed dict, in its order (spec §5.6).
CAPTION_METRICS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
_JAVA_SCORERS = {"METEOR"}


def score_captions(
    references: Mapping[int | str, Sequence[str]],
    predictions: Mapping[int | str, str],
    *,
    metrics: Sequence[str] = CAPTION_METRICS,
    per_image: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[int | str, dict[str, float]]]:
    """Score one predicted caption per image against that image's reference captions.

    Args:
        references: image id -> reference captions (raw text; PTB-tokenised here, as pycocoevalcap does).
        predictions: image id -> the predicted caption. Must cover exactly the ids of ``references``
            (CIDEr's document frequencies are computed over the evaluated references, so the id set
            changes the numbers).
        metrics: a subset of `CAPTION_METRICS`.
        per_image: also return each image's scores.

    Returns:
        ``{metric: corpus score}`` in the order of ``metrics`` (BLEU/METEOR/ROUGE-L/CIDEr on the 0-1 scale
        pycocoevalcap uses, e.g. CIDEr 1.28 = "128" in papers); with ``per_image``, also
        ``{image id: {metric: score}}``.
    """
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unknown caption metric(s) {unknown}; expected a subset of {list(CAPTION_METRICS)}")
    _check_ids(references, predictions)
    tokenizer_cls, scorers = _load_pycocoevalcap(metrics)

    ptb = tokenizer_cls()
    with _java_stderr_to_log():
        gts = ptb.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
        res = ptb.tokenize({i: [{"caption": predictions[i]}] for i in references})

    corpus: dict[str, float] = {}
    images: dict[int | str, dict[str, float]] = {i: {} for i in gts}
    for scorer, names in scorers:
        chatter = io.StringIO()  # Bleu prints its n-gram counts to stdout; keep them in the debug log
        try:
            with contextlib.redirect_stdout(chatter):
                score, scores = scorer.compute_score(gts, res)
        finally:
            _close(scorer)
        if chatter.getvalue().strip():
            logger.debug("%s: %s", type(scorer).__name__, chatter.getvalue().strip())
        if isinstance(names, str):
            score, scores, names = [score], [scores], [names]
        for name, value, values in zip(names, score, scores, strict=True):
            if name not in metrics:
                continue
            corpus[name] = float(value)
            for image_id, v in zip(gts.keys(), values, strict=True):
                images[image_id][name] = float(v)
    ordered = {m: corpus[m] for m in metrics}
    return (ordered, images) if per_image else ordered


@contextlib.contextmanager
def _java_stderr_to_log():
    """Send what child processes write to stderr (the PTB tokenizer's Java prints "PTBTokenizer tokenized
    N tokens at ..." on every call) to the debug log instead of the terminal; shown as a warning if the
    block fails, since it then explains the failure. File-descriptor level: the JVM writes to fd 2."""
    import sys
    import tempfile

    fd = 2  # what a child process inherits, whatever sys.stderr is now
    try:
        os.fstat(fd)
    except OSError:  # no stderr at all (some embedders): nothing to hide
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), fd)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            buf.seek(0)
            text = buf.read().decode("utf-8", "replace").strip()
            if text:
                logger.log(logging.WARNING if failed else logging.DEBUG, "Java (PTB tokenizer): %s", text)


def average_length(captions: Sequence[str]) -> float:
    """Mean number of whitespace-separated words (what the reference prints as ``Average length``)."""
    return sum(len(c.split()) for c in captions) / len(captions) if captions else 0.0


def _check_ids(references: Mapping, predictions: Mapping) -> None:
    if not references:
        raise ValueError("no reference captions to score against")
    empty = [i for i, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"{len(empty)} image(s) have no reference caption, e.g. {empty[:5]}")
    missing = [i for i in references if i not in predictions]
    extra = [i for i in predictions if i not in references]
    if missing or extra:
        raise ValueError(
            f"predictions must cover exactly the reference image ids: {len(missing)} missing "
            f"(e.g. {missing[:5]}), {len(extra)} without references (e.g. {extra[:5]})"
        )


def _load_pycocoevalcap(metrics: Sequence[str]):
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:
        raise RuntimeError(
            f"caption metrics need pycocoevalcap ({e}); install it with `pip install 'internvl[eval]'` "
            "or `pip install pycocoevalcap`"
        ) from None
    # The PTB tokenizer always runs in Java, METEOR too.
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption metrics need a Java runtime on PATH (pycocoevalcap runs the Stanford PTB tokenizer and "
            "METEOR in Java); install e.g. OpenJDK 11+ (`apt-get install default-jre-headless`)"
        )
    scorers: list = []
    if any(m.startswith("Bleu_") for m in metrics):
        scorers.append((Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]))
    if "METEOR" in metrics:
        from pycocoevalcap.meteor.meteor import Meteor

        scorers.append((Meteor(), "METEOR"))
    if "ROUGE_L" in metrics:
        scorers.append((Rouge(), "ROUGE_L"))
    if "CIDEr" in metrics:
        scorers.append((Cider(), "CIDEr"))
    return PTBTokenizer, scorers


def _close(scorer) -> None:
    """Stop METEOR's Java subprocess now instead of at garbage collection."""
    proc = getattr(scorer, "meteor_p", None)
    if proc is None:
        return
    try:
        with scorer.lock:
            proc.stdin.close()
            proc.kill()
            proc.wait(timeout=10)
    except Exception:  # noqa: BLE001  (best effort: the process may already be gone)
        pass
