"""The node plugin's flags as upstream's manifests pass them: durations, booleans, uids, bounds, endpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sscsi_driver.config import (
    DEFAULT_MAX_OBJECTS,
    parse_bool,
    parse_config,
    parse_duration,
    parse_uids,
    positive,
    unix_socket_path,
)
from sscsi_operator.render import go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1h0m30s", 3630.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("90s", 90.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("100ns", 100e-9),
        ("1m1m", 120.0),  # Go adds repeated units too
        (" 30s\n", 30.0),
        ("0", 0.0),
        ("", 0.0),
        ("0s", 0.0),
    ],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    "text", ["5", "m", "1x", "1d", "1h 30m", "h1", "-1s", "+1s", "1.s", ".5s", "1,5s", "1s!", "2M", "1hour"]
)
def test_anything_else_is_refused_with_examples(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"invalid duration .* \(examples: 30s, 2m, 1h30m\)"):
        parse_duration(text)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from(["h", "m", "s", "ms"])),
        min_size=1,
    )
)
def test_a_sum_of_parts_is_the_sum_of_their_seconds(parts: list[tuple[int, str]]) -> None:
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == pytest.approx(sum(n * unit[u] for n, u in parts))


@given(st.integers(min_value=0, max_value=10 * 365 * 86400))
def test_what_the_operator_renders_the_driver_reads_back(seconds: int) -> None:
    assert parse_duration(go_duration(seconds)) == seconds


def test_duration_flags_and_their_upstream_defaults() -> None:
    cfg, _ = parse_config([])
    assert (cfg.rotation_poll_interval, cfg.provider_health_check_interval, cfg.provider_timeout) == (
        120.0,
        120.0,
        60.0,
    )
    cfg, _ = parse_config(
        ["--rotation-poll-interval=1h30m", "--provider-health-check-interval=45s", "--provider-timeout=2.5s"]
    )
    assert (cfg.rotation_poll_interval, cfg.provider_health_check_interval, cfg.provider_timeout) == (
        5400.0,
        45.0,
        2.5,
    )


def test_a_bad_duration_flag_stops_the_driver_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(["--rotation-poll-interval=2 minutes"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --rotation-poll-interval: invalid duration '2 minutes'" in err


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("T", True), ("1", True), ("yes", True), ("false", False), (" F ", False), ("0", False)],
)
def test_booleans_as_go_flags_read_them(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_boolean_flags_stand_alone_or_take_a_value() -> None:
    assert parse_config(["--enable-secret-rotation"])[0].enable_secret_rotation is True
    assert parse_config(["--enable-secret-rotation=false"])[0].enable_secret_rotation is False
    assert parse_config(["--enable-secret-sync=false"])[0].enable_secret_sync is False
    assert parse_config([])[0].enable_secret_sync is True
    with pytest.raises(argparse.ArgumentTypeError, match="invalid boolean 'maybe'"):
        parse_bool("maybe")


def test_uid_lists_and_positive_bounds() -> None:
    assert parse_uids("1000, 1001,,") == frozenset({1000, 1001})
    assert parse_uids("") == frozenset()
    for bad in ("root", "1000;1001", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid uid list"):
            parse_uids(bad)
    assert positive("7") == 7
    for bad in ("0", "-3", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="a positive integer"):
            positive(bad)
    assert parse_config([])[0].max_objects_per_volume == DEFAULT_MAX_OBJECTS


def test_provider_dirs_search_the_additional_paths_first() -> None:
    cfg, _ = parse_config(["--provider-volume=/p", "--additional-provider-volume-paths=/a, /b,"])
    assert cfg.provider_dirs == (Path("/a"), Path("/b"), Path("/p"))


def test_only_the_prometheus_metrics_backend_is_accepted() -> None:
    assert parse_config(["--metrics-backend=prometheus"])[0].metrics_addr == ":8095"
    with pytest.raises(SystemExit, match="unsupported --metrics-backend 'OpenTelemetry'"):
        parse_config(["--metrics-backend=OpenTelemetry"])


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("unix:///csi/csi.sock", "/csi/csi.sock"),
        ("unix://tmp/csi.sock", "/tmp/csi.sock"),  # upstream's examples write it so
        ("unix:/csi/csi.sock", "/csi/csi.sock"),
        ("/csi/csi.sock", "/csi/csi.sock"),
    ],
)
def test_endpoints_name_absolute_socket_paths(endpoint: str, path: str) -> None:
    assert unix_socket_path(endpoint) == path


def test_non_unix_endpoints_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unsupported endpoint 'tcp://0\.0\.0\.0:10000'"):
        unix_socket_path("tcp://0.0.0.0:10000")
