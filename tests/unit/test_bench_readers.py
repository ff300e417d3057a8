"""Every benchmark on a few hand-made samples in its real file format: the reader, the reference prompt and
the score on known answers (expected values worked by hand from the official rules)."""

from __future__ import annotations

import pytest

from internvl.core.errors import DataFormatError
from internvl.data.datasets.mmbench import read_mmbench
from internvl.evaluation.mllm.registry import get_benchmark
from tests import bench_data

MC = "Answer with the option's letter from the given choices directly."
SUFFIX = bench_data.SUFFIX


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    bench_data.write_all(root)
    bench_data.write_scienceqa(root)
    bench_data.write_seed(root)
    bench_data.write_mmvp(root)
    bench_data.write_gqa_vizwiz(root)
    return root


def _read(name, data):
    bench = get_benchmark(name)
    items = bench.read(data)
    return bench, items, {i.id: i for i in items}


def test_mme(data):
    bench, items, by_id = _read("mme", data)
    assert [i.id for i in items] == [
        "count/1",
        "count/2",
        "count/3",
        "count/4",
        "existence/1",
        "existence/2",
        "existence/3",
        "existence/4",
    ]
    assert "image not found" in by_id["count/1"].problem and "3 tab-separated" in by_id["count/4"].problem
    assert by_id["count/3"].image.name == "c2.png"  # found under <task>/images/
    assert (
        bench.prompt(by_id["existence/1"]) == f"Is there a red square in the image? Please answer yes or no. {SUFFIX}"
    )
    assert bench.generation(1) == {"num_beams": 1, "max_new_tokens": 20, "do_sample": False}
    answers = {
        "existence/1": "Yes",
        "existence/2": "No",
        "existence/3": "Yes",
        "existence/4": "Yes, there is a cat",
        "count/3": "I think yes",
    }
    r = bench.score(items, answers)
    # existence: image 1 both right, image 2 one right -> 75 + 50; count: nothing right -> 0
    assert r["breakdown"]["existence"]["score"] == 125.0 and r["breakdown"]["count"]["score"] == 0.0
    assert (r["score"], r["cognition"]) == (125.0, 0.0)
    assert [u["id"] for u in r["unparsed"]] == ["count/3"]


def test_mme_missing_folder(tmp_path):
    with pytest.raises(DataFormatError, match="Your_Results"):
        get_benchmark("mme").read(tmp_path)


def test_mmbench(data, tmp_path):
    bench, items, by_id = _read("mmbench_dev_en", data)
    assert [i.id for i in items] == ["0", "1000000", "1", "1000001", "2"]
    assert bench.prompt(by_id["1"]) == f"Look at the left.\nWhich shape is shown?\nA. circle\nB. square\n{MC}"
    assert bench.prompt(by_id["2"]) == f"How many squares?\nA. 1\nB. 2\nC. 3\n{MC}"  # hint "nan" is NA
    assert by_id["2"].image_b64 == by_id["0"].image_b64  # image cell "0" refers to row index 0
    assert by_id["2"].load_image().size == (16, 16)
    answers = {"0": "A", "1000000": "D. red", "1": "B", "1000001": "B", "2": "(C)"}
    r = bench.score(items, answers)
    # question 0: both rotations right; question 1: rotations disagree; question 2: "(C)" is unparsed
    assert r["score"] == pytest.approx(100 / 3) and r["questions"] == 3
    assert r["breakdown"] == {"color": 100.0, "count": 0.0, "shape": 0.0}
    assert r["single_pass_accuracy"] == pytest.approx(200 / 3)
    assert [u["id"] for u in r["unparsed"]] == ["2"]
    from openpyxl import load_workbook

    sheet = load_workbook(bench.submission(items, answers, tmp_path)).active
    rows = list(sheet.values)
    assert rows[0] == ("index", "question", "A", "B", "C", "D", "prediction", "answer", "split")
    assert [(r[0], r[6]) for r in rows[1:]] == [(0, "A"), (1000000, "D"), (1, "B"), (1000001, "B"), (2, "(C)")]
    # an unparsed answer with control characters (a garbled generation) is written without them
    garbled = dict(answers, **{"2": "\x00(C)\x0b\x1f ok"})
    rows = list(load_workbook(bench.submission(items, garbled, tmp_path)).active.values)
    assert rows[-1][6] == "(C) ok"


def test_mmbench_cn_prompt_and_pandas_quirks(tmp_path):
    rows = [
        ["5", "几个?", "", "1", "2", "3", "", "A", "c", "s", "l", "", "dev", "iVBOR"],
        ["6", "Pick one", "None", "7", "8", "", "", "B", "c", "s", "l", "", "dev", "iVBOR"],
        ["x7", "bad index", "", "a", "b", "", "", "A", "c", "s", "l", "", "dev", "iVBOR"],
        ["8", "too few fields"],
    ]
    path = bench_data.write_mmbench(tmp_path, "mmbench_dev_cn_20231003.tsv", rows)
    items = {i.id: i for i in read_mmbench(path)}
    # column C holds "3" and an empty cell -> pandas reads floats -> "3.0"; "None" is NA (no hint)
    assert items["5"].options == {"A": "1", "B": "2", "C": "3.0"}
    assert items["6"].hint is None and items["6"].options == {"A": "7", "B": "8"}
    assert "not an integer" in items["line4"].problem and "fields" in items["line5"].problem
    bench = get_benchmark("mmbench_dev_cn")
    assert bench.prompt(items["5"]) == "几个?\nA. 1\nB. 2\nC. 3.0\n请直接回答选项字母。"
    with pytest.raises(DataFormatError, match="cannot read"):
        items["5"].load_image()  # truncated base64 image: reported, not a crash of the reader


def test_pope(data):
    bench, items, by_id = _read("pope", data)
    assert [i.answer for i in items] == ["yes", "no", "yes", "yes", "no", "yes"]
    assert bench.prompt(by_id["1"]) == f"Is there a dog in the image? {SUFFIX}"
    answers = {"1": "Yes", "2": "No, there is not.", "3": "There is no car.", "4": "Yes", "5": "Yes", "6": None}
    r = bench.score(items, answers)
    adv, rnd = r["breakdown"]["adversarial"], r["breakdown"]["random"]
    assert (adv["tp"], adv["tn"], adv["fn"], adv["fp"]) == (1, 1, 1, 0)
    assert adv["f1"] == pytest.approx(2 / 3) and adv["yes_ratio"] == pytest.approx(1 / 3)
    assert (rnd["tp"], rnd["fp"], rnd["fn"]) == (1, 1, 1) and rnd["f1"] == pytest.approx(0.5)
    assert r["score"] == pytest.approx(100 * 7 / 12)


def test_pope_label_mismatch(data, tmp_path):
    import shutil

    shutil.copytree(data / "pope", tmp_path / "pope")
    f = tmp_path / "pope" / "coco" / "coco_pope_random.json"
    f.write_text(f.read_text().replace("COCO_val2014_000000000005", "COCO_val2014_000000000099"))
    items = {i.id: i for i in get_benchmark("pope").read(tmp_path)}
    assert "does not match" in items["5"].problem and items["4"].problem is None


def test_textvqa(data):
    bench, items, by_id = _read("textvqa_val", data)
    assert by_id["100"].image == data / "textvqa" / "train_images" / "t0.jpg"  # leading data/ -> --data
    assert "image not found" in by_id["104"].problem and "not valid JSON" in by_id["line5"].problem
    assert bench.prompt(by_id["100"]) == f"what brand is this? {SUFFIX}"
    r = bench.score(items, {"100": "Nikon", "101": "two", "102": "go"})
    assert r["score"] == pytest.approx(100 * 2 / 5)  # 1 + 1 + 0, and the two problem lines count as 0


def test_scienceqa(data):
    bench, items, by_id = _read("scienceqa_test", data)
    assert bench.prompt(by_id["line1"]) == f"Which is a mammal?\nA. frog\nB. whale\nC. shark\n{MC}"
    assert (
        bench.prompt(by_id["line2"]) == f"Look at the map.\nWhich ocean is highlighted?\nA. Pacific\nB. Atlantic\n{MC}"
    )
    assert "image not found" in by_id["line3"].problem and "not an index" in by_id["line4"].problem
    r = bench.score(items, {"line1": "(B)", "line2": "The Atlantic"})
    assert r["score"] == 25.0


def test_seed(data):
    bench, items, by_id = _read("seed_image", data)
    assert bench.prompt(by_id["0"]) == by_id["0"].question and bench.generation(1)["max_new_tokens"] == 100
    r = bench.score(items, {"0": "A", "1": "B. y", "2": "The answer is C", "3": "D"})
    assert r["score"] == pytest.approx(200 / 3)  # types 1, 2, 9 count; type 10 (video) does not
    assert r["breakdown"] == {"1": 100.0, "10": 100.0, "2": 100.0, "9": 0.0}
    assert [u["id"] for u in r["unparsed"]] == ["2"]


def test_mmvp(data):
    bench, items, by_id = _read("mmvp", data)
    assert by_id["1"].options == {"A": "Open", "B": "Closed"} and by_id["2"].answer == "B"
    assert bench.prompt(by_id["1"]) == f"Are the wings open or closed?\nA. Open\nB. Closed\n{MC}"
    r = bench.score(items, {"1": "A", "2": "B. Closed", "3": "Right", "4": "B"})
    assert (r["score"], r["pairs"], r["question_accuracy"]) == (50.0, 2, 75.0)


def test_gqa_and_vizwiz(data, tmp_path):
    import json

    bench, items, _ = _read("gqa_testdev", data)
    answers = {"q1": "Yes.", "q2": "Left side"}
    assert bench.score(items, answers)["score"] == 50.0
    sub = json.loads(bench.submission(items, answers, tmp_path).read_text())
    assert sub == [{"questionId": "q1", "prediction": "yes"}, {"questionId": "q2", "prediction": "left side"}]
    bench, items, _ = _read("vizwiz_val", data)
    assert bench.prompt(items[0]) == (
        f"What is this? When the provided information is insufficient, respond with 'Unanswerable'. {SUFFIX}"
    )
    assert bench.score(items, {items[0].id: "Unanswerable"})["score"] == 100.0
    bench, items, _ = _read("vizwiz_test", data)
    assert bench.score(items, {})["score"] is None
    sub = json.loads(bench.submission(items, {items[0].id: "soup"}, tmp_path).read_text())
    assert sub == [{"image": "t1.jpg", "answer": "soup"}]


def test_unknown_benchmark():
    from internvl.core.errors import InternVLError

    with pytest.raises(InternVLError, match="did you mean mme"):
        get_benchmark("mmee")


def test_mathvista(tmp_path):
    pytest.importorskip("pyarrow")
    bench_data.write_mathvista(tmp_path)
    bench, items, by_id = _read("mathvista_testmini", tmp_path)
    assert bench.prompt(by_id["1"]) == "Hint: answer it.\nQuestion: question 1"
    assert bench.generation(1)["max_new_tokens"] == 4096 and by_id["1"].load_image().size == (16, 16)
    assert "decoded_image" in by_id["6"].problem
    answers = {"1": "B", "2": "3", "3": "2.50", "4": "The number is seven", "5": "cat"}
    r = bench.score(items, answers)
    # B -> "15" right; 3 right; 2.50 -> 2.5 right; "seven" unparsed; "cat" wrong; 6 not asked
    assert r["score"] == 50.0
    assert r["breakdown"]["question_type=free_form"] == pytest.approx(200 / 3)
    assert r["breakdown"]["question_type=multi_choice"] == pytest.approx(100 / 3)
    assert [u["id"] for u in r["unparsed"]] == ["4"]


def test_mmmu(tmp_path):
    pytest.importorskip("pyarrow")
    bench_data.write_mmmu(tmp_path)
    bench, items, by_id = _read("mmmu_val", tmp_path)
    assert (
        bench.prompt(by_id["validation_Art_Theory_1"]) == f"<image 1> Which style is this?\nA. Baroque\nB. Cubism\n{MC}"
    )
    assert bench.prompt(by_id["validation_Math_1"]) == f"What is 6*7? <image 1>\n{SUFFIX}"
    assert by_id["validation_Math_2"].answer == ["square", "quadrilateral"]
    answers = {
        "validation_Art_Theory_1": "Cubism",
        "validation_Math_1": "The answer is 42",
        "validation_Math_2": "A circle",
    }
    r = bench.score(items, answers)
    # "Cubism" -> B right; 42 right; "a circle" contains neither gold string
    assert r["score"] == pytest.approx(200 / 3)
    assert r["breakdown"] == {"Art_Theory": 100.0, "Math": 50.0}


def test_parquet_readers_name_the_missing_files_and_columns(tmp_path):
    """MMMU and MathVista share one parquet walk: no matching file, or a file without a needed column, is one
    DataFormatError naming the expected layout or the file and the columns."""
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from internvl.core.errors import DataFormatError
    from internvl.data.datasets.mathvista import read_mathvista
    from internvl.data.datasets.mmmu import read_mmmu

    with pytest.raises(DataFormatError, match=r"MMMU: no <Subject>/validation-\*\.parquet under .*MMMU/MMMU"):
        read_mmmu(tmp_path)
    with pytest.raises(DataFormatError, match=r"MathVista: no testmini-\*\.parquet under .*AI4Math/MathVista"):
        read_mathvista(tmp_path)
    bad = tmp_path / "data" / "testmini-00000-of-00001.parquet"
    bad.parent.mkdir()
    pq.write_table(pa.table({"pid": ["1"], "query": ["q"]}), bad)
    with pytest.raises(DataFormatError, match=r"00001\.parquet: missing column\(s\) \['decoded_image'"):
        read_mathvista(tmp_path)
