"""Admission fair sharing (Kueue's AdmissionFairSharing): decay arithmetic against the closed form, and ordering."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotas.admission_fair_sharing import (
    DEFAULT_SAMPLING_INTERVAL,
    AdmissionFairSharing,
    UsageInterval,
    alpha_rate,
    consumed_from_history,
    decay_consumed,
    decay_factor,
    entry_penalty,
    order_local_queues,
    weighted_usage,
    workload_sort_key,
)
from quotas.api import AdmissionFairSharingConfig

GPU = "nvidia.com/gpu"
HOUR = 3600.0

half_lives = st.floats(min_value=1.0, max_value=30 * 24 * HOUR, allow_nan=False, allow_infinity=False)
durations = st.floats(min_value=0.0, max_value=60 * 24 * HOUR, allow_nan=False, allow_infinity=False)
amounts = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
resource_vectors = st.dictionaries(st.sampled_from([GPU, "cpu", "memory"]), amounts, max_size=3)


def close(a: float, b: float, scale: float = 1.0) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(scale, 1.0))


def close_vectors(a: dict[str, float], b: dict[str, float]) -> bool:
    scale = max([*a.values(), *b.values(), 1.0])
    return all(close(a.get(k, 0.0), b.get(k, 0.0), scale) for k in set(a) | set(b))


# --------------------------------------------------------------------------- closed forms


def test_decay_factor_and_alpha_closed_form() -> None:
    assert decay_factor(HOUR, HOUR) == pytest.approx(0.5)
    assert decay_factor(3 * HOUR, HOUR) == pytest.approx(0.125)
    assert decay_factor(0.0, HOUR) == 1.0
    assert alpha_rate(HOUR, HOUR) == pytest.approx(0.5)
    assert alpha_rate(2 * HOUR, HOUR) == pytest.approx(0.75)
    # Kueue: a half-life of 0 gives alpha 0; tiny steps stay accurate (expm1).
    assert alpha_rate(300.0, 0.0) == 0.0
    assert alpha_rate(1e-6, 168 * HOUR) == pytest.approx(1e-6 * math.log(2) / (168 * HOUR), rel=1e-9)


def test_idle_queue_halves_after_one_half_life() -> None:
    afs = AdmissionFairSharing(HOUR)
    afs.seed("ns/a", consumed={GPU: 8.0, "cpu": 2.0}, at=100.0)
    assert afs.consumed("ns/a", at=100.0 + HOUR) == pytest.approx({GPU: 4.0, "cpu": 1.0})
    assert afs.consumed("ns/a", at=100.0 + 3 * HOUR) == pytest.approx({GPU: 1.0, "cpu": 0.25})


def test_constant_usage_converges_like_kueue() -> None:
    """Kueue's TestCalculateDecayedConsumedConvergesToUsage: 2 CPUs admitted -> 1, 1.5, 1.75 after 1, 2, 3 half-lives."""
    afs = AdmissionFairSharing(168 * HOUR)
    afs.seed("ns/a", consumed={}, admitted={"cpu": 2.0}, at=0.0)
    for n, want in ((1, 1.0), (2, 1.5), (3, 1.75)):
        assert afs.consumed("ns/a", at=n * 168 * HOUR)["cpu"] == pytest.approx(want)
    # and the same sampled every 5 minutes, as Kueue does, while the usage does not change
    consumed: dict[str, float] = {}
    for _ in range(2016):
        consumed = decay_consumed(consumed, 300.0, 168 * HOUR, {"cpu": 2.0})
    assert consumed["cpu"] == pytest.approx(1.0)


def test_entry_penalty_is_one_sampling_interval_of_usage() -> None:
    penalty = entry_penalty({GPU: 8.0, "cpu": 16.0}, HOUR, 300.0)
    a = 1.0 - 0.5 ** (300.0 / HOUR)
    assert penalty == pytest.approx({GPU: 8.0 * a, "cpu": 16.0 * a})
    assert entry_penalty({GPU: 8.0}, 0.0, 300.0) == {}  # half-life 0: no penalty (alpha 0)
    afs = AdmissionFairSharing(HOUR, sampling_interval=300.0)
    charged = afs.admit("ns/a", {GPU: 8.0}, at=0.0)
    assert charged == pytest.approx({GPU: 8.0 * a})
    assert afs.consumed("ns/a", at=0.0) == pytest.approx({GPU: 8.0 * a})  # charged at admission


@settings(max_examples=200, deadline=None)
@given(consumed=resource_vectors, admitted=resource_vectors, t1=durations, t2=durations, half_life=half_lives)
def test_two_decay_steps_equal_one(
    consumed: dict[str, float], admitted: dict[str, float], t1: float, t2: float, half_life: float
) -> None:
    two = decay_consumed(decay_consumed(consumed, t1, half_life, admitted), t2, half_life, admitted)
    one = decay_consumed(consumed, t1 + t2, half_life, admitted)
    assert close_vectors(two, one)


@settings(max_examples=200, deadline=None)
@given(value=amounts, half_life=half_lives, start=st.floats(min_value=0, max_value=1e9))
def test_halving_after_one_half_life(value: float, half_life: float, start: float) -> None:
    afs = AdmissionFairSharing(half_life)
    afs.seed("ns/q", consumed={GPU: value}, at=start)
    # (start + half_life) - start is rounded at epoch magnitudes: about 1e-7 s of error.
    got = afs.consumed("ns/q", at=start + half_life).get(GPU, 0.0)
    assert math.isclose(got, value / 2, rel_tol=1e-6, abs_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(consumed=resource_vectors, admitted=resource_vectors, elapsed=durations, half_life=half_lives)
def test_decay_matches_closed_form(
    consumed: dict[str, float], admitted: dict[str, float], elapsed: float, half_life: float
) -> None:
    """C(t) = C0·2^(-t/h) + U·(1 - 2^(-t/h))."""
    d = 2.0 ** (-elapsed / half_life)
    want = {k: consumed.get(k, 0.0) * d + admitted.get(k, 0.0) * (1 - d) for k in set(consumed) | set(admitted)}
    assert close_vectors(decay_consumed(consumed, elapsed, half_life, admitted), want)


intervals_strategy = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1e5),  # start
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e5)),  # duration (None: still running)
        st.floats(min_value=0, max_value=64),  # GPUs
        st.floats(min_value=0, max_value=512),  # CPUs
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    raw=intervals_strategy,
    half_life=st.floats(min_value=60.0, max_value=1e5),
    sampling=st.floats(min_value=0.0, max_value=3600.0),
    now_after=st.floats(min_value=0, max_value=2e5),
)
def test_event_replay_equals_history_closed_form(
    raw: list[tuple[float, float | None, float, float]], half_life: float, sampling: float, now_after: float
) -> None:
    """Admitting and releasing event by event gives the closed form of consumed_from_history."""
    intervals = [
        UsageInterval({GPU: gpus, "cpu": cpus}, start, None if length is None else start + length)
        for start, length, gpus, cpus in raw
    ]
    now = max([0.0, *(i.start for i in intervals)]) + now_after
    events: list[tuple[float, int, int]] = []  # (time, 0 = admit / 1 = release, index)
    for index, interval in enumerate(intervals):
        events.append((interval.start, 0, index))
        if interval.end is not None and interval.end <= now:
            events.append((interval.end, 1, index))
    afs = AdmissionFairSharing(half_life, sampling_interval=sampling)
    for at, kind, index in sorted(events):
        if kind == 0:
            afs.admit("ns/q", intervals[index].requests, at=at)
        else:
            afs.release("ns/q", intervals[index].requests, at=at)
    replayed = afs.consumed("ns/q", at=now)
    closed = consumed_from_history(intervals, now=now, half_life=half_life, sampling_interval=sampling)
    assert close_vectors(replayed, closed)


def test_history_closed_form_by_hand() -> None:
    # 8 GPUs from 100 to 200, then 8 GPUs from 300 on; h = 100 s, sampling 300 s: a_s = 1 - 2^-3 = 0.875.
    intervals = [UsageInterval({GPU: 8.0}, 100.0, 200.0), UsageInterval({GPU: 8.0}, 300.0, None)]
    got = consumed_from_history(intervals, now=400.0, half_life=100.0, sampling_interval=300.0)
    first = 8 * (2**-2 - 2**-3) + 0.875 * 8 * 2**-3
    second = 8 * (1 - 2**-1) + 0.875 * 8 * 2**-1
    assert got[GPU] == pytest.approx(first + second) == pytest.approx(9.375)
    no_penalty = consumed_from_history(intervals, now=400.0, half_life=100.0, entry_penalties=False)
    assert no_penalty[GPU] == pytest.approx(8 * (2**-2 - 2**-3) + 8 * (1 - 2**-1))
    # intervals in the future of `now` count nothing; half-life 0 disables the history
    assert consumed_from_history([UsageInterval({GPU: 1.0}, 500.0)], now=400.0, half_life=100.0) == {}
    assert consumed_from_history(intervals, now=400.0, half_life=0.0) == {}


# --------------------------------------------------------------------------- usage value and ordering


def test_weighted_usage_follows_kueue() -> None:
    consumed = {GPU: 2.0, "cpu": 10.0}
    assert weighted_usage(consumed) == 12.0  # missing weights count 1
    assert weighted_usage(consumed, resource_weights={"cpu": 0.0, GPU: 3.0}) == 6.0
    assert weighted_usage(consumed, {GPU: 1.0}, resource_weights={"cpu": 0.0}) == 3.0  # + penalty
    assert weighted_usage(consumed, local_queue_weight=2.0) == 6.0
    assert weighted_usage(consumed, local_queue_weight=0.0) == math.inf


def test_order_local_queues_lower_usage_first_ties_fifo() -> None:
    assert order_local_queues({"a/x": 3.0, "b/y": 1.0, "c/z": 2.0}) == ["b/y", "c/z", "a/x"]
    heads = {"a/x": 50.0, "b/y": 10.0, "c/z": 20.0}
    assert order_local_queues({"a/x": 0.0, "b/y": 0.0, "c/z": 0.0}, heads) == ["b/y", "c/z", "a/x"]
    assert order_local_queues({"a/x": 0.0, "b/y": 0.0}, {"a/x": 5.0}) == ["a/x", "b/y"]  # no head: after
    assert order_local_queues({"b/y": 0.0, "a/x": 0.0}) == ["a/x", "b/y"]  # then by key


def test_workload_sort_key_usage_then_priority_then_fifo() -> None:
    pending = [
        ("late-low-usage", workload_sort_key(1.0, priority=0, timestamp=30.0)),
        ("high-usage-high-priority", workload_sort_key(5.0, priority=100, timestamp=0.0)),
        ("early-low-usage", workload_sort_key(1.0, priority=0, timestamp=10.0)),
        ("low-usage-high-priority", workload_sort_key(1.0, priority=10, timestamp=40.0)),
    ]
    assert [name for name, key in sorted(pending, key=lambda p: p[1])] == [
        "low-usage-high-priority",
        "early-low-usage",
        "late-low-usage",
        "high-usage-high-priority",
    ]


def test_heavy_tenant_goes_behind_then_recovers() -> None:
    afs = AdmissionFairSharing(HOUR, resource_weights={"cpu": 0.0})
    afs.admit("team-a/q", {GPU: 8.0, "cpu": 64.0}, at=0.0)
    afs.admit("team-b/q", {GPU: 1.0}, at=0.0)
    heads = {"team-a/q": 0.0, "team-b/q": 5.0}  # team-a's head workload came first
    assert afs.order_local_queues(["team-a/q", "team-b/q"], at=HOUR, head_timestamps=heads) == ["team-b/q", "team-a/q"]
    afs.release("team-a/q", {GPU: 8.0, "cpu": 64.0}, at=HOUR)
    afs.release("team-b/q", {GPU: 1.0}, at=HOUR)
    # Both idle for 60 half-lives: usage below any difference that matters... but still ordered by usage.
    assert afs.usage("team-a/q", at=61 * HOUR) < 1e-15
    assert afs.admitted("team-a/q") == {}
    # An unknown queue has no usage and sorts first.
    assert afs.order_local_queues(["team-a/q", "new/q"], at=2 * HOUR)[0] == "new/q"
    assert afs.sort_key("new/q", at=0.0, priority=3, timestamp=1.0) == (0.0, -3, 1.0, "")


def test_local_queue_weight_halves_the_value() -> None:
    afs = AdmissionFairSharing(HOUR, local_queue_weights={"ns/heavy": 2.0})
    afs.seed("ns/heavy", consumed={GPU: 8.0}, at=0.0)
    afs.seed("ns/light", consumed={GPU: 5.0}, at=0.0)
    assert afs.usage("ns/heavy", at=0.0) == 4.0
    assert afs.order_local_queues(["ns/light", "ns/heavy"], at=0.0) == ["ns/heavy", "ns/light"]


def test_zero_half_life_disables_usage() -> None:
    afs = AdmissionFairSharing(0.0)
    afs.admit("ns/a", {GPU: 8.0}, at=0.0)
    afs.seed("ns/b", consumed={GPU: 3.0}, at=0.0)
    assert afs.usage("ns/a", at=10.0) == 0.0 and afs.usage("ns/b", at=10.0) == 0.0
    assert afs.order_local_queues(["ns/b", "ns/a"], at=10.0, head_timestamps={"ns/a": 1.0, "ns/b": 2.0}) == [
        "ns/a",
        "ns/b",
    ]


def test_time_going_backwards_does_not_decay_negatively() -> None:
    afs = AdmissionFairSharing(HOUR)
    afs.seed("ns/a", consumed={GPU: 4.0}, at=1000.0)
    assert afs.consumed("ns/a", at=500.0) == {GPU: 4.0}
    afs.advance("ns/a", 500.0)
    assert afs.consumed("ns/a", at=1000.0 + HOUR) == pytest.approx({GPU: 2.0})


def test_from_config_and_validation() -> None:
    config = AdmissionFairSharingConfig.model_validate(
        {"usageHalfLifeTime": "168h", "usageSamplingInterval": "5m", "resourceWeights": {"cpu": 2.0}}
    )
    afs = AdmissionFairSharing.from_config(config)
    assert afs.half_life == 168 * HOUR and afs.sampling_interval == DEFAULT_SAMPLING_INTERVAL
    assert afs.resource_weights == {"cpu": 2.0}
    with pytest.raises(ValueError):
        AdmissionFairSharing(-1.0)
    with pytest.raises(ValueError):
        AdmissionFairSharing(math.nan)


class FakeHistory:
    def decayed_usage(self, local_queues=None, *, now, half_life, sampling_interval=DEFAULT_SAMPLING_INTERVAL):  # type: ignore[no-untyped-def]
        assert half_life == HOUR and sampling_interval == 60.0
        return {"ns/a": {GPU: 4.0}, "ns/b": {}}

    def admitted_usage(self, local_queues=None, *, at):  # type: ignore[no-untyped-def]
        return {"ns/a": {GPU: 2.0}}


def test_seed_from_history() -> None:
    afs = AdmissionFairSharing(HOUR, sampling_interval=60.0)
    afs.seed_from_history(FakeHistory(), now=1000.0)
    assert afs.local_queues() == ["ns/a", "ns/b"]
    # 4 decays towards the 2 still admitted: 4·½ + 2·½ = 3 after one half-life
    assert afs.consumed("ns/a", at=1000.0 + HOUR) == pytest.approx({GPU: 3.0})
    assert afs.usage("ns/b", at=1000.0) == 0.0
