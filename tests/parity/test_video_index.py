"""Our frame sampler (`internvl.data.video.get_index`) against the reference's on every fixture case.

Cases the reference computes inside the clip must match exactly; where it returns indices outside
[0, max_frame] or raises (``num_segments`` 0), ours raises a `DataFormatError` instead (README:
video deviations). Everything, including which cases are which, is read from the fixture file.
"""

from __future__ import annotations

import json

import pytest

from internvl.core.errors import DataFormatError
from internvl.data.video import get_index
from tests.conftest import parity_root

pytestmark = pytest.mark.parity


def _cases() -> list[dict]:
    path = parity_root() / "video_index" / "cases.json"
    if not path.is_file():
        pytest.fail(f"parity fixtures not found at {path} (set INTERNVL_PARITY_FIXTURES)")
    return json.loads(path.read_text())["cases"]


def _bound(case: dict):
    bound = case["bound"]
    return tuple(bound) if case.get("bound_is_tuple") and bound is not None else bound


def _call(case: dict):
    return get_index(
        _bound(case), case["fps"], case["max_frame"], first_idx=case["first_idx"], num_segments=case["num_segments"]
    )


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_video_index_matches_reference_or_refuses(case):
    if case.get("error"):
        with pytest.raises(DataFormatError, match="num_segments|outside the clip"):
            _call(case)
        return
    expected = case["frame_indices"]
    if any(i < 0 or i > case["max_frame"] for i in expected):
        with pytest.raises(DataFormatError, match=r"outside the clip \(frames 0\.\.\d+"):
            _call(case)
        return
    assert _call(case).tolist() == expected


def test_fixture_covers_both_kinds():
    """The set exercises matches and refusals (so a fixture regeneration that loses one kind is noticed)."""
    refusals = [c for c in CASES if c.get("error") or any(i < 0 or i > c["max_frame"] for i in c["frame_indices"])]
    assert refusals and len(refusals) < len(CASES)
