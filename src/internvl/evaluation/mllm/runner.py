"""``internvl eval bench``: ask a chat model every benchmark question, cache the answers, score them.

Per benchmark, in ``OUTPUT/<name>/``:

* ``answers.rank<R>.jsonl`` (+ ``.settings.json``): the answers rank R produced, appended and fsynced
  per batch (`PartialResults`), so a crash or a kill loses at most one batch. A rerun reads every rank
  file (any earlier world size), skips what is answered and refuses, with a diff, a cache written
  with other settings (model files, benchmark files, prompts, generation settings, dtype).
* ``answers.jsonl``: all answers merged in benchmark order (rank 0, after all ranks finished).

and ``OUTPUT/<name>.json`` (the result), the server submission file where the benchmark has one, and
``OUTPUT/summary.md`` / ``summary.json`` over every result in the folder. Sharding: the questions not
yet answered are split into contiguous slices, one per rank (the reference's InferenceSampler); the
merge is by question, so the result does not depend on the number of processes. Nothing run-specific
(time, ranks, resumed counts) goes into the result file: a resumed run writes the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from internvl.core.distributed import DistContext
from internvl.core.errors import ConfigError, DataFormatError
from internvl.data.datasets.bench_items import BenchItem
from internvl.evaluation.captioning import MODEL_FILES
from internvl.evaluation.mllm.base import Benchmark
from internvl.evaluation.mllm.registry import get_benchmark
from internvl.evaluation.mllm.report import write_summary
from internvl.evaluation.partial_results import (
    PartialResults,
    file_fingerprint,
    read_results,
    write_json_atomic,
)

logger = logging.getLogger(__name__)
ROW_FIELDS = ("id", "answer")
_RANK_FILE = re.compile(r"^answers\.rank(\d+)\.jsonl$")


class _Chat:
    """Loads the model on first use, so a rank with nothing to answer (or a rescoring run) never does."""

    def __init__(self, model_dir: Path, dtype: str, device: Any, device_map: str | None) -> None:
        self.args = (model_dir, dtype, device, device_map)
        self.model = self.tokenizer = None

    def answer(self, images, questions, generation) -> list[str]:
        import torch

        from internvl.evaluation.mllm.adapter import answer_batch, load_chat

        if self.model is None:
            model_dir, dtype, device, device_map = self.args
            self.model, self.tokenizer = load_chat(model_dir, dtype=dtype, device=device, device_map=device_map)
        with torch.inference_mode():
            return answer_batch(self.model, self.tokenizer, images, questions, generation)


def run_benchmarks(
    model_dir: str | os.PathLike,
    benchmarks: Sequence[str],
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    batch_size: int = 1,
    num_beams: int = 1,
    dtype: str | None = None,
    device: str | None = None,
    device_map: str | None = None,
    resume: bool = True,
    progress: bool = True,
    dist: DistContext | None = None,
) -> dict[str, dict]:
    """Run ``benchmarks`` and return their results (on every rank; only rank 0 writes the result files).

    Everything that can be checked without the model is checked first: benchmark names, optional
    modules, every benchmark's files, the model folder and the cache settings.

    Args:
        limit: only the first N questions of each benchmark (smoke runs; scores are then not comparable).
        batch_size: questions per ``generate`` call; 1 is the reference.
        num_beams: 1 for V1-2 (the reference scripts force 1 above 20B parameters; they default to 5 for
            smaller models on most benchmarks, pass ``num_beams=5`` to reproduce that).
        resume: False discards the answer caches of these benchmarks in ``output_dir`` (``--overwrite``).
    """
    dist = dist or DistContext()
    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(output_dir)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if batch_size < 1 or num_beams < 1:
        raise ConfigError(f"--batch-size and --num-beams must be >= 1, got {batch_size} and {num_beams}")
    if device_map and dist.distributed:
        raise ConfigError("--device-map splits one model over the GPUs of one process; run it without torchrun")
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"--model {model_dir}: no config.json there; expected an InternVL-Chat checkpoint folder")
    if not data_dir.is_dir():
        raise ConfigError(f"--data {data_dir}: not a folder (it plays the role of the reference's internvl_chat/data)")
    benches = [get_benchmark(n) for n in dict.fromkeys(benchmarks)]
    for bench in benches:
        absent = [m for m in bench.requires if importlib.util.find_spec(m) is None]
        if absent:
            raise ConfigError(
                f"benchmark {bench.name} writes its submission with {', '.join(absent)}: "
                f"pip install {' '.join(absent)} (or internvl[bench])"
            )
    prepared = [(bench, *_prepare(bench, data_dir)) for bench in benches]  # read all files before any work
    dev, dt = _device_and_dtype(device, dtype, dist)
    chat = _Chat(model_dir, dt, dev, device_map)
    results = {}
    for bench, items, prompts, files in prepared:
        items = items[:limit] if limit is not None else items
        settings = {
            "benchmark": bench.name,
            "model": str(model_dir.resolve()),
            "model_files": file_fingerprint(model_dir, MODEL_FILES),
            "data_files": files,
            "prompts_sha256": _sha256_text("\n".join(f"{k}\t{v}" for k, v in prompts.items())),
            "generation": bench.generation(num_beams),
            "dtype": dt,
        }
        details = {
            "limit": limit,
            "batch_size": batch_size,
            "device": str(dev),
            "device_map": device_map,
            "world_size": dist.world_size,
        }
        results[bench.name] = _run_one(
            bench,
            items,
            prompts,
            settings,
            details,
            out,
            model_dir,
            chat,
            batch_size=batch_size,
            resume=resume,
            progress=progress,
            dist=dist,
        )
    if dist.is_main:
        write_summary(out)
    dist.barrier()
    return results


def _prepare(bench: Benchmark, data_dir: Path) -> tuple[list[BenchItem], dict[str, str], dict[str, str]]:
    items = bench.read(data_dir)
    if not items:
        raise DataFormatError(f"benchmark {bench.name}: its files under {data_dir} hold no questions")
    seen: set[str] = set()
    prompts: dict[str, str] = {}
    for item in items:
        if item.id in seen and item.problem is None:
            item.problem = f"{item.source}: duplicate question id {item.id!r}"
            item.id = f"{item.id}@{item.source}"
        seen.add(item.id)
        if item.problem is None:
            prompts[item.id] = bench.prompt(item)
    files = {
        str(p.relative_to(data_dir)) if p.is_relative_to(data_dir) else str(p): _sha256_file(p)
        for p in bench.files(data_dir)
        if p.is_file()
    }
    return items, prompts, files


def _device_and_dtype(device: str | None, dtype: str | None, dist: DistContext):
    import torch

    from internvl.evaluation.runtime import pick_device

    if device in (None, "auto") and torch.cuda.is_available():
        dev = torch.device("cuda", dist.local_rank)
    else:
        dev = pick_device(device)
    # The reference evaluates in bf16 on GPUs; on the CPU float32.
    return dev, dtype or ("bf16" if dev.type == "cuda" else "fp32")


def _run_one(bench, items, prompts, settings, details, out, model_dir, chat, *, batch_size, resume, progress, dist):
    from tqdm.auto import tqdm

    start = time.perf_counter()
    bdir = out / bench.name
    if not resume and dist.is_main:
        for f in list(bdir.glob("answers.rank*.jsonl")) + list(bdir.glob("answers.rank*.settings.json")):
            f.unlink()
    dist.barrier()
    own = PartialResults.open(
        bdir / f"answers.rank{dist.rank}.jsonl",
        bdir / f"answers.rank{dist.rank}.settings.json",
        settings,
        details=details,
        key="id",
        fields=ROW_FIELDS,
    )
    dist.barrier()  # every rank has validated (and cleaned) its own file before any reads the others
    done = _collect(bdir, settings)
    todo = [it for it in items if it.problem is None and _needs_answer(done.get(it.id))]
    mine = [todo[i] for i in dist.shard(len(todo))]
    resumed = sum(1 for it in items if it.problem is None) - len(todo)
    if dist.is_main and resumed:
        logger.info("%s: %d answers reused from %s", bench.name, resumed, bdir)
    bar = tqdm(
        total=len(mine),
        desc=f"{bench.name} [rank {dist.rank}]" if dist.distributed else bench.name,
        unit="q",
        disable=not progress,
        position=dist.rank,
    )
    gen = settings["generation"]
    with own:
        for b in range(0, len(mine), batch_size):
            batch, rows, images, ok = mine[b : b + batch_size], [], [], []
            for it in batch:
                try:
                    images.append(it.load_image())
                    ok.append(it)
                except DataFormatError as e:
                    rows.append({"id": it.id, "answer": None, "error": str(e)})
            if ok:
                answers = chat.answer(images, [prompts[it.id] for it in ok], gen)
                rows += [{"id": it.id, "answer": a} for it, a in zip(ok, answers, strict=True)]
            own.append(rows)
            bar.update(len(batch))
    bar.close()
    dist.barrier()
    result = None
    if dist.is_main:
        done = _collect(bdir, settings)
        result = _score(bench, items, done, settings, out, model_dir)
        answers_file = bdir / "answers.jsonl"
        tmp = answers_file.with_suffix(".jsonl.tmp")
        tmp.write_text(
            "".join(
                json.dumps({"id": it.id, "answer": (done.get(it.id) or {}).get("answer")}, ensure_ascii=False) + "\n"
                for it in items
            ),
            encoding="utf-8",
        )
        os.replace(tmp, answers_file)
        write_json_atomic(out / f"{bench.name}.json", result)
        write_json_atomic(
            bdir / "last_run.json",
            {
                **details,
                "resumed": resumed,
                "answered_now": len(todo),
                "seconds": round(time.perf_counter() - start, 2),
            },
        )
        logger.info("%s: %s %s -> %s", bench.name, result["metric"], _fmt(result["score"]), out / f"{bench.name}.json")
    dist.barrier()
    return result


def _needs_answer(row: dict | None) -> bool:
    return row is None or bool(row.get("error"))  # failed rows (an unreadable image) are retried


def _collect(bdir: Path, settings: dict) -> dict[str, dict]:
    """Rows of every rank file in rank order; a successful row wins over a failed one for the same id."""
    files = sorted((int(m.group(1)), p) for p in bdir.glob("answers.rank*.jsonl") if (m := _RANK_FILE.match(p.name)))
    done: dict[str, dict] = {}
    for rank, path in files:
        rows = read_results(path, bdir / f"answers.rank{rank}.settings.json", settings, key="id", fields=ROW_FIELDS)
        for key, row in rows.items():
            if key not in done or (done[key].get("error") and not row.get("error")):
                done[key] = row
    return done


def _score(bench: Benchmark, items: list[BenchItem], done: dict, settings: dict, out: Path, model_dir: Path) -> dict:
    answers = {it.id: (done.get(it.id) or {}).get("answer") if it.problem is None else None for it in items}
    scored = bench.score(items, answers)
    submission = bench.submission(items, answers, out)
    problems = [{"id": it.id, "problem": it.problem} for it in items if it.problem]
    failed = [
        {"id": it.id, "error": done[it.id]["error"]}
        for it in items
        if it.problem is None and it.id in done and done[it.id].get("error")
    ]
    unparsed = scored.pop("unparsed", [])
    return {
        "benchmark": bench.name,
        "title": bench.title,
        "model": str(model_dir),
        "metric": scored.pop("metric"),
        "score": scored.pop("score"),
        "score_scale": bench.score_scale,
        **scored,
        "counts": {
            "questions": len(items),
            "answered": sum(a is not None for a in answers.values()),
            "problems": len(problems),
            "failed": len(failed),
            "unparsed": len(unparsed),
        },
        "problems": problems,
        "failed": failed,
        "unparsed": unparsed,
        "submission": submission.name if submission else None,
        "settings": {
            "generation": settings["generation"],
            "dtype": settings["dtype"],
            "data_files": settings["data_files"],
        },
    }


def _fmt(score: float | None) -> str:
    return "n/a (server)" if score is None else f"{score:.2f}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = ["run_benchmarks"]
