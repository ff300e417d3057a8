"""`internvl eval bench` end to end on a tiny random InternVL-Chat (V1-2 layout) built here, on MME, MMBench,
POPE and TextVQA files in their official formats: 1 process vs 2 torchrun processes (gloo) give the same
result files, a killed run resumes to the same result file, and a cache written with other settings is refused.

The model is untrained, so its answers are arbitrary: the tests check the harness (the answers reach the
result through the benchmark's scorer, sharding and resuming change nothing), the metrics themselves are
checked on known answers in tests/unit/test_mllm_metrics.py and test_bench_readers.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from internvl.cli.main import main
from internvl.evaluation.mllm.registry import get_benchmark
from tests import bench_data

pytestmark = pytest.mark.integration
BENCHES = ("mme", "mmbench_dev_en", "pope", "textvqa_val")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from internvl.data.synthetic import build_chat_tokenizer
    from internvl.inference import chat as api
    from internvl.models.internvl_chat import build_internvl_chat, tiny_chat_config

    d = tmp_path_factory.mktemp("tiny_chat")
    build_chat_tokenizer(d)
    tok = api.load_tokenizer(d)
    cfg = tiny_chat_config(
        len(tok), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), system_message="Answer the questions."
    )
    api.save_chat_model(build_internvl_chat(cfg, seed=0), tok, d)
    return d


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return bench_data.write_all(tmp_path_factory.mktemp("data"))


def _args(model_dir, data_dir, out, benches=BENCHES, *extra):
    return [
        "eval",
        "bench",
        "--model",
        str(model_dir),
        "--benchmark",
        ",".join(benches),
        "--data",
        str(data_dir),
        "--output",
        str(out),
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def single(model_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out1")
    assert main(_args(model_dir, data_dir, out)) == 0
    return out


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}


def test_results_come_from_the_answers(single, model_dir, data_dir):
    for name in BENCHES:
        result = json.loads((single / f"{name}.json").read_text())
        answers = {
            r["id"]: r["answer"] for r in map(json.loads, (single / name / "answers.jsonl").read_text().splitlines())
        }
        bench = get_benchmark(name)
        items = bench.read(data_dir)
        assert list(answers) == [i.id for i in items]  # every question listed, in benchmark order
        rescored = bench.score(items, answers)
        assert result["score"] == rescored["score"] and result["breakdown"] == rescored["breakdown"]
        problems = [i.id for i in items if i.problem]
        assert [p["id"] for p in result["problems"]] == problems
        assert all(answers[i] is None for i in problems)  # never sent to the model
        assert result["counts"]["answered"] == len(items) - len(problems)
    mme = json.loads((single / "mme.json").read_text())
    assert mme["counts"]["problems"] == 3 and mme["settings"]["generation"]["max_new_tokens"] == 20
    summary = (single / "summary.md").read_text().splitlines()
    assert summary[0] == "| Model | MMBench-EN | MME | POPE | TextVQA |"  # the card's column order
    assert (single / "mmbench_dev_en_submission.xlsx").is_file()


def test_answer_is_the_chat_answer_to_the_reference_prompt(single, model_dir, data_dir):
    """Independent path: the card-style `chat` on the same image and prompt gives the cached answer."""
    from internvl.inference import chat as api

    model, tok = api.load_chat_model(model_dir)
    bench = get_benchmark("pope")
    item = bench.read(data_dir)[0]
    pixels, _ = api.load_images(model, [item.load_image()])
    expected = api.chat(model, tok, pixels, bench.prompt(item), bench.generation(1))
    cached = json.loads((single / "pope" / "answers.jsonl").read_text().splitlines()[0])
    assert cached == {"id": item.id, "answer": expected}


def test_rerun_uses_the_cache_and_other_settings_are_refused(single, model_dir, data_dir, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(single, out)
    before = {n: (out / f"{n}.json").read_bytes() for n in BENCHES}
    assert main(_args(model_dir, data_dir, out)) == 0
    for n in BENCHES:
        assert (out / f"{n}.json").read_bytes() == before[n]
        assert json.loads((out / n / "last_run.json").read_text())["answered_now"] == 0
    capsys.readouterr()
    assert main(_args(model_dir, data_dir, out, ("pope",), "--num-beams", "2")) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "generation" in err and "'num_beams': 1" in err and "'num_beams': 2" in err


def test_bad_arguments_fail_before_loading(model_dir, data_dir, tmp_path, capsys):
    assert main(_args(model_dir, data_dir, tmp_path / "o", ("pope", "mmbenchh"))) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(_args(model_dir, tmp_path / "nowhere", tmp_path / "o", ("pope",))) == 2
    assert main(_args(tmp_path, data_dir, tmp_path / "o", ("pope",))) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_same_files(single, model_dir, data_dir, tmp_path):
    out = tmp_path / "out2"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "internvl.cli.main",
        *_args(model_dir, data_dir, out),
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for n in BENCHES:
        assert (out / n / "answers.rank1.jsonl").stat().st_size > 0  # both ranks answered
        assert (out / f"{n}.json").read_bytes() == (single / f"{n}.json").read_bytes()
        assert (out / n / "answers.jsonl").read_bytes() == (single / n / "answers.jsonl").read_bytes()
    assert (out / "summary.md").read_bytes() == (single / "summary.md").read_bytes()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(model_dir, tmp_path):
    data = tmp_path / "data"
    bench_data.write_pope(data, per_category=15)
    total = 30
    full = tmp_path / "full"
    assert main(_args(model_dir, data, full, ("pope",))) == 0

    out = tmp_path / "killed"
    cache = out / "pope" / "answers.rank0.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "internvl.cli.main", *_args(model_dir, data, out, ("pope",))],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if cache.is_file() and cache.read_bytes().count(b"\n") >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    done_at_kill = cache.read_bytes().count(b"\n")
    assert 3 <= done_at_kill < total and not (out / "pope.json").exists()

    assert main(_args(model_dir, data, out, ("pope",))) == 0
    run = json.loads((out / "pope" / "last_run.json").read_text())
    assert run["resumed"] >= done_at_kill and run["resumed"] + run["answered_now"] == total
    assert (out / "pope.json").read_bytes() == (full / "pope.json").read_bytes()
    assert (out / "pope" / "answers.jsonl").read_bytes() == (full / "pope" / "answers.jsonl").read_bytes()
