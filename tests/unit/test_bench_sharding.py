"""Sharding and cache reading used by the sharded benchmark runner."""

from __future__ import annotations

import pytest

from internvl.core.distributed import DistContext
from internvl.core.errors import ConfigError
from internvl.evaluation.partial_results import PartialResults, read_results


@pytest.mark.parametrize("n, world", [(10, 3), (2, 4), (0, 2), (7, 1), (8, 2)])
def test_shards_are_contiguous_and_cover_everything_once(n, world):
    shards = [DistContext(rank=r, world_size=world).shard(n) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    if n == 10 and world == 3:
        assert shards == [range(4), range(4, 7), range(7, 10)]  # the reference's InferenceSampler


def test_from_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = DistContext.from_env()
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (1, 2, True, False)


def test_read_results_skips_but_keeps_a_half_written_line(tmp_path):
    path, settings_path = tmp_path / "a.jsonl", tmp_path / "a.settings.json"
    with PartialResults.open(path, settings_path, {"k": 1}, key="id", fields=("id", "answer")) as p:
        p.append([{"id": "1", "answer": "yes"}])
    with open(path, "ab") as f:
        f.write(b'{"id": "2", "ans')  # another process is mid-write
    size = path.stat().st_size
    assert read_results(path, settings_path, {"k": 1}, key="id", fields=("id", "answer")) == {
        "1": {"id": "1", "answer": "yes"}
    }
    assert path.stat().st_size == size  # not truncated: the file is not ours
    with pytest.raises(ConfigError, match="different settings"):
        read_results(path, settings_path, {"k": 2}, key="id", fields=("id", "answer"))
