"""Mixture sampler: planned shares, realised shares, without-replacement, determinism, sharding, resume."""

from __future__ import annotations

import itertools
import json
import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.mixture import (
    CHUNK,
    MixtureSampler,
    ShareTracker,
    groups_from_sources,
    planned_probabilities,
)
from pipeline.errors import DataError

# disjoint row ranges so a row tells which source it came from
GROUPS = {"a": range(0, 100), "b": range(100, 500), "c": range(500, 507)}


def _source(row: int) -> str:
    return "a" if row < 100 else "b" if row < 500 else "c"


def _take(sampler: MixtureSampler, n: int) -> list[int]:
    return list(itertools.islice(iter(sampler), n))


def _batches(sampler: MixtureSampler, n_batches: int) -> list[list[int]]:
    flat = _take(sampler, n_batches * sampler.batch_size)
    b = sampler.batch_size
    return [flat[i : i + b] for i in range(0, len(flat), b)]


# -- planned shares --------------------------------------------------------------------------


def test_temperature_shares_exact() -> None:
    s = MixtureSampler({"a": range(100), "b": range(100, 500)}, temperature=2.0, batch_size=1)
    # p ∝ sqrt(n): 10 and 20
    assert s.planned_shares() == pytest.approx({"a": 1 / 3, "b": 2 / 3}, abs=1e-15)


def test_proportional_uniform_and_temperature_limits() -> None:
    sizes = {"a": 100, "b": 400, "c": 7}
    prop = planned_probabilities(sizes, strategy="proportional")
    assert prop == pytest.approx({"a": 100 / 507, "b": 400 / 507, "c": 7 / 507}, abs=1e-15)
    t1 = planned_probabilities(sizes, strategy="temperature", temperature=1.0)
    assert t1 == pytest.approx(prop, abs=1e-15)
    assert planned_probabilities(sizes, strategy="uniform") == pytest.approx(dict.fromkeys(sizes, 1 / 3))
    near = planned_probabilities(sizes, strategy="temperature", temperature=1e6)
    # n^(1/T) = exp(ln n / T): within ln(400/7)/1e6 ~ 4e-6 of uniform
    assert near == pytest.approx(dict.fromkeys(sizes, 1 / 3), abs=1e-5)
    inf = planned_probabilities(sizes, strategy="temperature", temperature=math.inf)
    assert inf == pytest.approx(dict.fromkeys(sizes, 1 / 3), abs=1e-15)


def test_weights_normalised_and_zero_excludes() -> None:
    s = MixtureSampler(GROUPS, strategy="weights", weights={"a": 3, "b": 1, "c": 0}, batch_size=8)
    assert s.planned_shares() == {"a": 0.75, "b": 0.25, "c": 0.0}
    assert all(_source(r) != "c" for r in _take(s, 5000))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"a": 1, "b": 1, "c": 1, "zzz": 1}, r"unknown sources \['zzz'\]; known: a, b, c"),
        ({"a": 1, "b": 1}, r"lack sources \['c'\]"),
        ({"a": 1, "b": -1, "c": 1}, r"source 'b' must be a finite number >= 0"),
        ({"a": 0, "b": 0, "c": 0}, "all zero"),
        (None, "needs a weight for every source: a, b, c"),
    ],
)
def test_weights_errors(weights: dict[str, float] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MixtureSampler(GROUPS, strategy="weights", weights=weights, batch_size=1)


def test_config_errors() -> None:
    with pytest.raises(DataError, match="source 'b' has no records"):
        MixtureSampler({"a": [0, 1], "b": []}, batch_size=1)
    with pytest.raises(ValueError, match="unknown mixture strategy 'nope'; known: proportional"):
        MixtureSampler(GROUPS, strategy="nope", batch_size=1)
    with pytest.raises(ValueError, match="strategy is 'temperature'"):
        MixtureSampler(GROUPS, weights={"a": 1, "b": 1, "c": 1}, batch_size=1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MixtureSampler(GROUPS, temperature=0.0, batch_size=1)
    with pytest.raises(ValueError, match="multiple of the global batch size"):
        MixtureSampler(GROUPS, batch_size=4, num_replicas=2, num_samples=12)
    with pytest.raises(ValueError, match="rank must be in"):
        MixtureSampler(GROUPS, batch_size=4, num_replicas=2, rank=2)


def test_planned_shares_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline.data.mixture"):
        MixtureSampler({"a": range(100), "b": range(100, 500)}, batch_size=1)
    assert "33.33%" in caplog.text and "66.67%" in caplog.text


# -- sampling ----------------------------------------------------------------------------------


def test_realised_shares_match_planned() -> None:
    n = 200_000
    s = MixtureSampler(GROUPS, batch_size=1, seed=3)
    tracker = ShareTracker(s.planned_shares())
    tracker.update(_source(r) for r in _take(s, n))
    for name, p in s.planned_shares().items():
        # source draws are iid categorical, so the count is Binomial(n, p): share std sqrt(p(1-p)/n)
        # (<= 0.0011 here); 5 std is a ~1e-6 two-sided miss, and the seed is fixed anyway
        assert abs(tracker.realised()[name] - p) < 5 * math.sqrt(p * (1 - p) / n), name
    table = tracker.table()
    assert table.splitlines()[0].split() == ["source", "planned", "realised", "draws"]
    assert len(table.splitlines()) == 4


def test_without_replacement_within_each_source() -> None:
    s = MixtureSampler(GROUPS, batch_size=1, seed=5)
    per: dict[str, list[int]] = {k: [] for k in GROUPS}
    for r in _take(s, 3000):
        per[_source(r)].append(r)
    for name, rows in GROUPS.items():
        n = len(rows)
        drawn = per[name]
        assert len(drawn) >= 2 * n, name  # enough draws to see two passes
        assert sorted(drawn[:n]) == list(rows), name
        assert sorted(drawn[n : 2 * n]) == list(rows), name
    # each pass is its own shuffle, not the same order again
    assert per["b"][:400] != per["b"][400:800]


def test_determinism() -> None:
    first = _take(MixtureSampler(GROUPS, batch_size=4, seed=11), 2000)
    assert first == _take(MixtureSampler(GROUPS, batch_size=4, seed=11), 2000)
    assert first != _take(MixtureSampler(GROUPS, batch_size=4, seed=12), 2000)
    # the order sources are listed in does not matter
    reordered = {k: GROUPS[k] for k in ("c", "a", "b")}
    assert first == _take(MixtureSampler(reordered, batch_size=4, seed=11), 2000)


def test_groups_from_sources() -> None:
    assert groups_from_sources(["x", "y", "x", "z"]) == {"x": [0, 2], "y": [1], "z": [3]}


# -- distributed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [2, 3])
def test_replicas_partition_the_single_process_sequence(world: int) -> None:
    b, n_batches = 5, 40
    single = _batches(MixtureSampler(GROUPS, batch_size=world * b, seed=2), n_batches)
    per_rank = [
        _batches(MixtureSampler(GROUPS, batch_size=b, num_replicas=world, rank=r, seed=2), n_batches)
        for r in range(world)
    ]
    for step in range(n_batches):
        # rank r takes positions [r*b, (r+1)*b) of each global batch
        assert [row for r in range(world) for row in per_rank[r][step]] == single[step]
    s = MixtureSampler(GROUPS, batch_size=b, num_replicas=world, seed=2)
    assert s.global_rows(0, world * b * n_batches) == [row for batch in single for row in batch]


def test_replicas_draw_disjoint_rows() -> None:
    # sources too big to wrap within the run, so no row may repeat at all, across ranks or steps
    big = {"x": range(0, 1000), "y": range(1000, 3000)}
    rows = [_take(MixtureSampler(big, batch_size=8, num_replicas=2, rank=r, seed=6), 400) for r in (0, 1)]
    for step in range(50):
        assert not set(rows[0][step * 8 : (step + 1) * 8]) & set(rows[1][step * 8 : (step + 1) * 8])
    assert len(set(rows[0]) | set(rows[1])) == 800


def test_len_and_num_samples() -> None:
    with pytest.raises(TypeError, match="infinite"):
        len(MixtureSampler(GROUPS, batch_size=4))
    s = MixtureSampler(GROUPS, batch_size=4, num_replicas=2, rank=1, num_samples=64, seed=1)
    assert len(s) == 32
    assert len(list(s)) == 32
    full = MixtureSampler(GROUPS, batch_size=8, seed=1)
    assert list(s) == [r for i, r in enumerate(_take(full, 64)) if i % 8 >= 4]


def test_dataloader_batches_line_up() -> None:
    data = list(range(507))
    s = MixtureSampler(GROUPS, batch_size=6, num_replicas=2, rank=0, num_samples=120, seed=4)
    loader = torch.utils.data.DataLoader(data, batch_size=6, sampler=s)
    got = [b.tolist() for b in loader]
    assert len(got) == len(loader) == 10
    assert got == _batches(MixtureSampler(GROUPS, batch_size=6, num_replicas=2, rank=0, seed=4), 10)


# -- resume ------------------------------------------------------------------------------------------


def _resume_matches(k: int, b: int, world: int, prefetch: int, total: int) -> None:
    kw = {"batch_size": b, "num_replicas": world, "seed": 9}
    for rank in range(world):
        uninterrupted = _batches(MixtureSampler(GROUPS, rank=rank, **kw), total)
        run = MixtureSampler(GROUPS, rank=rank, **kw)
        # the loader iterates ahead of the training step (prefetch); only k batches are consumed
        seen = _batches(run, k + prefetch)
        assert seen == uninterrupted[: k + prefetch]
        for _ in range(k):
            run.advance()
        state = run.state_dict()
        resumed = MixtureSampler(GROUPS, rank=rank, **kw)
        resumed.load_state_dict(state)
        assert _batches(resumed, total - k) == uninterrupted[k:]


def test_resume_continues_exact_sequence_across_chunks() -> None:
    b, world = 16, 2
    k = CHUNK // (b * world) + 3  # resume point past the first source-choice chunk
    _resume_matches(k=k, b=b, world=world, prefetch=4, total=k + 20)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(0, 60),
    b=st.integers(1, 8),
    world=st.integers(1, 3),
    prefetch=st.integers(0, 5),
)
def test_resume_property(k: int, b: int, world: int, prefetch: int) -> None:
    _resume_matches(k=k, b=b, world=world, prefetch=prefetch, total=k + 10)


def test_set_position_equals_advance_and_can_go_back() -> None:
    a = MixtureSampler(GROUPS, batch_size=4, seed=1)
    for _ in range(37):
        a.advance()
    b = MixtureSampler(GROUPS, batch_size=4, seed=1)
    b.set_position(50)
    b.set_position(37)  # backwards: replayed from the start
    assert a.state_dict() == b.state_dict()
    assert a.position == 37 * 4 and sum(a.consumed_counts().values()) == 37 * 4
    expected = _take(MixtureSampler(GROUPS, batch_size=4, seed=1), 37 * 4 + 40)[-40:]
    assert _take(a, 40) == _take(b, 40) == expected


def test_iter_snapshots_position() -> None:
    s = MixtureSampler(GROUPS, batch_size=2, seed=1)
    it = iter(s)
    s.advance(10)  # an already-created iterator keeps going from where it started
    assert list(itertools.islice(it, 6)) == _take(MixtureSampler(GROUPS, batch_size=2, seed=1), 6)


def test_state_dict_contents() -> None:
    s = MixtureSampler(GROUPS, batch_size=50, seed=1)
    s.advance(5)
    st_ = s.state_dict()
    assert st_["global_draws"] == 250
    assert sum(st_["source_counts"].values()) == 250
    for name, rows in GROUPS.items():
        count = st_["source_counts"][name]
        assert (st_["source_epochs"][name], st_["source_offsets"][name]) == divmod(count, len(rows))
    # plain data: goes into a JSON or weights_only torch checkpoint unchanged
    assert json.loads(json.dumps(st_)) == st_


def test_load_refuses_a_different_mixture() -> None:
    s = MixtureSampler(GROUPS, batch_size=4, seed=1)
    s.advance(3)
    state = s.state_dict()
    with pytest.raises(ValueError, match="seed"):
        MixtureSampler(GROUPS, batch_size=4, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="probabilities"):
        MixtureSampler(GROUPS, strategy="uniform", batch_size=4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="groups_digest"):
        other = {"a": range(1, 101), "b": GROUPS["b"], "c": GROUPS["c"]}
        MixtureSampler(other, batch_size=4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="whole number of global batches"):
        MixtureSampler(GROUPS, batch_size=5, seed=1).load_state_dict(state)
    # same global batch, different world size: allowed, and the same global sequence continues
    two = MixtureSampler(GROUPS, batch_size=2, num_replicas=2, rank=0, seed=1)
    two.load_state_dict(state)
    assert two.position == 12


# -- length-aware bucketing --------------------------------------------------------------------------

# a length per row of GROUPS: source-typical lengths with spread, so sorting has work to do
LENGTHS = [3 + (r * 7) % 11 if r < 100 else 20 + (r * 13) % 40 if r < 500 else 1 + r % 3 for r in range(507)]


def _bucketed(**kw) -> MixtureSampler:
    return MixtureSampler(GROUPS, lengths=LENGTHS, bucket_batches=4, **{"batch_size": 8, "seed": 3, **kw})


def test_bucket_windows_hold_the_same_draws_sorted_into_batches() -> None:
    plain, bucketed = MixtureSampler(GROUPS, batch_size=8, seed=3), _bucketed()
    window = 4 * 8
    a, b = _take(plain, 10 * window), _take(bucketed, 10 * window)
    for w in range(10):
        mine, theirs = b[w * window : (w + 1) * window], a[w * window : (w + 1) * window]
        assert sorted(mine) == sorted(theirs)  # the same draws: the mixture's shares are kept
        batches = [mine[i : i + 8] for i in range(0, window, 8)]
        # each batch is a run of the window's sorted lengths (rows of similar length together)
        runs = sorted(sorted(LENGTHS[r] for r in batch) for batch in batches)
        assert [x for run in runs for x in run] == sorted(LENGTHS[r] for r in theirs)
    assert b != a


def test_bucketing_cuts_padding() -> None:
    def waste(rows: list[int]) -> int:
        batches = [rows[i : i + 8] for i in range(0, len(rows), 8)]
        return sum(8 * max(LENGTHS[r] for r in bt) - sum(LENGTHS[r] for r in bt) for bt in batches)

    plain = _take(MixtureSampler(GROUPS, batch_size=8, seed=3), 800)
    assert waste(_take(_bucketed(), 800)) < waste(plain) / 3


@pytest.mark.parametrize("k", [0, 1, 3, 4, 5, 17])  # within, at and across window boundaries
def test_bucketed_resume_and_replicas(k: int) -> None:
    uninterrupted = _batches(_bucketed(), 30)
    run = _bucketed()
    _take(run, (k + 3) * 8)  # the loader reads ahead
    run.advance(k)
    resumed = _bucketed()
    resumed.load_state_dict(run.state_dict())
    assert _batches(resumed, 30 - k) == uninterrupted[k:]
    assert sum(resumed.consumed_counts().values()) == k * 8
    # two processes of batch 4 see what one of batch 8 does (rank r: positions [4r, 4r+4))
    ranks = [_batches(_bucketed(batch_size=4, num_replicas=2, rank=r), 30) for r in (0, 1)]
    assert [ranks[0][i] + ranks[1][i] for i in range(30)] == uninterrupted


def test_bucketed_counts_follow_the_consumed_rows() -> None:
    s = _bucketed()
    rows = _take(_bucketed(), 6 * 8)
    s.set_position(6)  # mid-window: the counts are those of the rows actually trained on
    assert s.consumed_counts() == {n: sum(1 for r in rows if _source(r) == n) for n in GROUPS}


def test_bucketed_state_is_refused_by_another_setting() -> None:
    s = _bucketed()
    s.advance(2)
    state = s.state_dict()
    with pytest.raises(ValueError, match="bucket_batches"):
        MixtureSampler(GROUPS, batch_size=8, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="groups_digest"):  # other lengths: another sequence
        MixtureSampler(GROUPS, lengths=[1] * 507, bucket_batches=4, batch_size=8, seed=3).load_state_dict(
            state
        )
    with pytest.raises(ValueError, match="global batch of 8"):
        _bucketed(batch_size=4).load_state_dict(
            {**state, "global_draws": 16, "source_counts": state["source_counts"]}
        )
    with pytest.raises(ValueError, match="lengths has 10 entries"):
        MixtureSampler(GROUPS, lengths=[1] * 10, bucket_batches=4, batch_size=8)
