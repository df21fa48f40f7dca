"""The shared resampler: hold/asof/drop alignment, no look-ahead, and live/offline parity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from koch_common.resample import (
    SAME_INSTANT_S,
    Align,
    FrameAssembler,
    StreamBuffer,
    StreamSpec,
    grid,
    resample_streams,
)


def buffer(
    align: Align, stamps: list[float], staleness: float = 0.05, maxlen: int | None = None
) -> StreamBuffer:
    buf = StreamBuffer(StreamSpec("s", align, staleness), maxlen=maxlen)
    for i, stamp in enumerate(stamps):
        assert buf.push(stamp, f"v{i}")
    return buf


def test_hold_returns_latest_sample_at_or_before_t_and_flags_staleness() -> None:
    buf = buffer(Align.HOLD, [0.0, 0.1, 0.2])
    assert buf.sample(-0.001) is None, "nothing at or before t"
    first = buf.sample(0.0)
    assert first is not None and (first.value, first.age_s, first.stale) == ("v0", 0.0, False)
    assert buf.sample(0.05).stale is False, "age equal to max_staleness_s is still fresh"
    held = buf.sample(0.07)
    assert held.value == "v0" and held.stale and held.age_s == pytest.approx(0.07)
    assert buf.sample(0.0999).value == "v0", "never the sample stamped after t"
    assert buf.sample(0.1).value == "v1"
    assert buf.sample(0.1 - 1e-9).value == "v1", "ns rounding of a stamp does not count as the future"
    late = buf.sample(5.0)
    assert late.value == "v2" and late.stale and late.stamp_s == 0.2


def test_asof_is_missing_beyond_its_tolerance() -> None:
    buf = buffer(Align.ASOF, [0.0, 0.1, 0.2])
    assert buf.sample(0.04).value == "v0"
    assert buf.sample(0.07) is None
    assert buf.sample(0.12).value == "v1"
    assert buf.sample(0.3) is None


def test_out_of_order_pushes_are_refused_and_counted() -> None:
    buf = buffer(Align.HOLD, [0.0, 0.2])
    assert buf.push(0.15, "late") is False
    assert buf.out_of_order == 1 and len(buf) == 2
    assert buf.sample(0.17).value == "v0", "a refused sample never shows up"
    assert buf.push(0.2, "same stamp") is True
    assert buf.sample(0.2).value == "same stamp", "equal stamps: the later push wins"


def test_maxlen_bounds_memory_keeping_newest() -> None:
    buf = buffer(Align.HOLD, [0.0, 0.1, 0.2, 0.3], maxlen=2)
    assert len(buf) == 2 and buf.first_stamp == 0.2
    assert buf.sample(0.35).value == "v3"


def test_bad_specs_are_rejected() -> None:
    with pytest.raises(ValueError, match="align 'nearest' is unknown"):
        StreamSpec("s", "nearest", 0.1)  # a text that is no Align
    with pytest.raises(ValueError, match="max_staleness_s must be > 0"):
        StreamSpec("s", Align.HOLD, 0.0)
    assert StreamSpec("s", "asof", 0.1).align is Align.ASOF  # a YAML text becomes the Align


def test_grid_is_exact_frame_times() -> None:
    times = grid(0.5, 1.0, 30)
    assert len(times) == 16
    np.testing.assert_array_equal(times, 0.5 + np.arange(16) / 30)
    assert grid(0.0, 1.0, 30)[-1] == 1.0, "a frame landing exactly on the end is kept"
    assert len(grid(0.0, 0.9999, 30)) == 30
    assert len(grid(1.0, 0.5, 30)) == 0


def test_common_window_starts_when_every_stream_is_fresh() -> None:
    fast = buffer(Align.HOLD, [0.0, 0.5, 1.0, 1.02, 1.04, 1.06, 1.5], staleness=0.1)
    slow = buffer(Align.HOLD, [0.9, 1.05, 1.3], staleness=0.3)
    # At 0.9 the fast stream's newest sample (0.5) is stale; it is fresh again at 1.0.
    assembler = FrameAssembler({"fast": fast, "slow": slow}, 30)
    assembler.finish()
    assert assembler.start == 1.0
    assert assembler.window == (1.0, 1.3)
    no_data = FrameAssembler({"fast": fast, "empty": buffer(Align.HOLD, [])}, 30)
    assert no_data.finish() == [] and no_data.window is None


@settings(max_examples=200, deadline=None)
@given(
    stamps=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=30),
    t=st.floats(-1, 11, allow_nan=False),
    align=st.sampled_from([Align.HOLD, Align.ASOF]),
)
def test_never_uses_a_sample_from_the_future(stamps: list[float], t: float, align: Align) -> None:
    stamps = sorted(stamps)
    buf = buffer(align, stamps, staleness=0.5)
    sample = buf.sample(t)
    past = [s for s in stamps if s <= t + SAME_INSTANT_S]
    if not past or (align is Align.ASOF and t - past[-1] > 0.5):
        assert sample is None
    else:
        assert sample is not None and sample.stamp_s == past[-1] <= t + SAME_INSTANT_S
        assert sample.stale == (t - past[-1] > 0.5)
        assert sample.age_s >= 0.0


@settings(max_examples=300, deadline=None)
@given(
    stamps=st.lists(st.floats(0, 2, allow_nan=False), min_size=0, max_size=20),
    t=st.floats(-0.5, 3, allow_nan=False),
    align=st.sampled_from(list(Align)),
    staleness=st.sampled_from([0.05, 0.5]),
    tolerance=st.sampled_from([None, 0.02, 1.0]),
)
def test_fresh_at_agrees_with_sample(stamps: list[float], t: float, align: Align, staleness: float,
                                     tolerance: float | None) -> None:
    """The policy node's per-tick staleness check is `sample`'s verdict, without the Sample."""
    buf = StreamBuffer(StreamSpec("s", align, staleness, tolerance))
    for stamp in sorted(stamps):
        buf.push(stamp, stamp)
    sample = buf.sample(t)
    assert buf.fresh_at(t) == (sample is not None and not sample.stale)


def test_live_path_equals_offline_resampling() -> None:
    """The policy node pushes messages as they arrive and samples at each control tick; the
    converter pushes everything then resamples. Same messages, same frames."""
    rng = np.random.default_rng(7)
    specs = {"state": StreamSpec("state", Align.HOLD, 0.1), "image": StreamSpec("image", Align.ASOF, 0.05)}
    messages = {
        "state": np.cumsum(rng.uniform(0.015, 0.025, 150)),
        "image": np.cumsum(rng.uniform(0.025, 0.045, 80)),
    }
    # A 0.2 s camera dropout, so the asof stream goes missing and the hold stream goes stale.
    messages["image"] = messages["image"][(messages["image"] < 1.0) | (messages["image"] > 1.2)]
    messages["state"] = messages["state"][(messages["state"] < 1.5) | (messages["state"] > 1.7)]
    ticks = grid(0.1, 2.5, 30)

    offline_buffers = {name: StreamBuffer(spec) for name, spec in specs.items()}
    for name, stamps in messages.items():
        for stamp in stamps:
            offline_buffers[name].push(stamp, ("msg", name, stamp))
    offline, report = resample_streams(offline_buffers, ticks)

    live_buffers = {name: StreamBuffer(spec, maxlen=4) for name, spec in specs.items()}
    events = sorted((stamp, name) for name, stamps in messages.items() for stamp in stamps)
    live: list[dict] = []
    next_event = 0
    for tick in ticks:
        while next_event < len(events) and events[next_event][0] <= tick:
            stamp, name = events[next_event]
            live_buffers[name].push(stamp, ("msg", name, stamp))
            next_event += 1
        live.append({name: buf.sample(tick) for name, buf in live_buffers.items()})

    assert live == offline
    assert report.streams["image"].missing > 0 and report.streams["state"].stale > 0
    assert not report.complete


def test_asof_tolerance_and_align_drop() -> None:
    # asof with a tolerance tighter than the staleness limit: usable only within 0.02 s
    tight = StreamBuffer(StreamSpec("s", Align.ASOF, 0.1, tolerance_s=0.02))
    tight.push(1.0, "a")
    assert tight.sample(1.015).value == "a"
    assert tight.sample(1.03) is None
    # drop samples like asof (missing when too old); the converter then leaves the frame out
    drop = buffer(Align.DROP, [1.0, 1.2], staleness=0.05)
    assert drop.sample(1.04).value == "v0" and drop.sample(1.1) is None and drop.sample(1.2).value == "v1"
    with pytest.raises(ValueError, match="tolerance_s must be > 0"):
        StreamSpec("s", Align.ASOF, 0.1, tolerance_s=0.0)


def test_report_counts_input_gaps() -> None:
    buf = buffer(Align.HOLD, [0.0, 0.02, 0.04, 0.5, 0.52], staleness=0.1)
    _, report = resample_streams({"s": buf}, grid(0.0, 0.52, 30))
    assert report.streams["s"].gaps == 1
    assert report.streams["s"].max_gap_s == pytest.approx(0.46)
    assert report.streams["s"].stale > 0


@settings(max_examples=150, deadline=None)
@given(
    streams=st.lists(
        st.tuples(
            st.sampled_from(list(Align)),
            st.lists(st.floats(0, 3, allow_nan=False), min_size=0, max_size=40),
            st.floats(0.02, 0.5),
        ),
        min_size=1,
        max_size=4,
    ),
    fps=st.sampled_from([10.0, 30.0, 50.0]),
    seed=st.integers(0, 2**16),
)
def test_frame_assembler_fed_message_by_message_equals_the_batch_resampler(
    streams: list[tuple[Align, list[float], float]], fps: float, seed: int
) -> None:
    """The converter streams a bag through FrameAssembler (frames final while it still reads) and the
    batch path finishes it with everything pushed: both equal the window defined below + grid +
    resample_streams."""
    specs = {f"s{i}": StreamSpec(f"s{i}", align, staleness) for i, (align, _, staleness) in enumerate(streams)}
    stamps = {f"s{i}": sorted(s) for i, (_, s, _) in enumerate(streams)}

    def filled() -> dict[str, StreamBuffer]:
        buffers = {name: StreamBuffer(spec) for name, spec in specs.items()}
        for name, values in stamps.items():
            for stamp in values:
                buffers[name].push(stamp, (name, stamp))
        return buffers

    def common_window(buffers: dict[str, StreamBuffer]) -> tuple[float, float] | None:
        """The definition: from the first stamp at which every stream is fresh to the shortest's end."""
        if any(len(b) == 0 for b in buffers.values()):
            return None
        earliest = max(b.first_stamp for b in buffers.values())
        candidates = sorted({t for b in buffers.values() for t in b.stamps if t >= earliest})
        fresh = [t for t in candidates
                 if all((x := b.sample(t)) is not None and not x.stale for b in buffers.values())]
        end = min(b.last_stamp for b in buffers.values())
        return (fresh[0], end) if fresh and end >= fresh[0] else None

    batch_buffers = filled()
    window = common_window(batch_buffers)
    times = grid(*window, fps) if window else np.empty(0)
    expected, expected_report = resample_streams(batch_buffers, times)

    whole = FrameAssembler(filled(), fps)
    finished = whole.finish()
    assert whole.window == window

    # streamed: every stream in stamp order, the streams interleaved at random (as a bag's topics are)
    live_buffers = {name: StreamBuffer(spec) for name, spec in specs.items()}
    streamed = FrameAssembler(live_buffers, fps)
    rng = np.random.default_rng(seed)
    order = [name for name, values in stamps.items() for _ in values]
    rng.shuffle(order)
    cursor = dict.fromkeys(stamps, 0)
    frames = []
    for name in order:
        stamp = stamps[name][cursor[name]]
        cursor[name] += 1
        live_buffers[name].push(stamp, (name, stamp))
        frames += streamed.ready()
    frames += streamed.finish()

    for got, assembler in ((finished, whole), (frames, streamed)):
        if window is None:
            assert assembler.window is None
            continue  # the converter refuses the episode; frames streamed before are discarded
        assert [t for t, _ in got] == list(times)
        assert [frame for _, frame in got] == expected
        assert assembler.report() == expected_report
