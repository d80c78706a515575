"""The ClusterCSIDriver spec: defaults, every field's parsing, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sscsi_operator.spec import (
    DEFAULT_TOLERATIONS,
    EphemeralVolumeProfile,
    LogLevel,
    ManagementState,
    OperatorSpec,
    SpecError,
    TokenAudience,
    Toleration,
    parse_spec,
)


def store(**fields: Any) -> dict[str, Any]:
    """A spec whose driverConfig.secretsStore holds `fields`."""
    return {"driverConfig": {"driverType": "SecretsStore", "secretsStore": fields}}


def error_of(spec: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    return caught.value


@pytest.mark.parametrize("spec", [None, {}, {"driverConfig": {}}, store()])
def test_an_empty_spec_means_every_default(spec: dict[str, Any] | None) -> None:
    parsed = parse_spec(spec)
    assert parsed == OperatorSpec()
    driver = parsed.driver
    assert parsed.management_state is ManagementState.MANAGED
    assert parsed.log_level is LogLevel.NORMAL and parsed.operator_log_level is LogLevel.NORMAL
    assert (driver.rotation_enabled, driver.rotation_interval_seconds) == (True, 120)
    assert driver.token_requests is None  # Unmanaged: the live CSIDriver keeps its value
    assert driver.ephemeral_volume_profile is EphemeralVolumeProfile.RESTRICTED
    assert driver.sync_secret is True
    assert dict(driver.node_selector) == {}
    assert driver.tolerations == DEFAULT_TOLERATIONS == (Toleration(operator="Exists"),)
    assert (driver.provider_health_check, driver.provider_health_check_interval_seconds) == (False, 120)
    assert driver.max_call_recv_msg_size == 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [
        ({"type": "None"}, (False, 120)),
        ({"type": "Custom"}, (True, 120)),
        ({"type": "Custom", "custom": {}}, (True, 120)),
        ({"type": "Custom", "custom": {"minimumRefreshAge": 90}}, (True, 90)),
        ({"type": "Custom", "custom": {"minimumRefreshAge": 3600}}, (True, 3600)),
    ],
)
def test_secret_rotation(rotation: dict[str, Any], expected: tuple[bool, int]) -> None:
    driver = parse_spec(store(secretRotation=rotation)).driver
    assert (driver.rotation_enabled, driver.rotation_interval_seconds) == expected


@pytest.mark.parametrize(
    ("rotation", "path", "words"),
    [
        ({"type": "Sometimes"}, "secretRotation.type", "None or Custom"),
        ({}, "secretRotation.type", "None or Custom"),
        ({"type": "None", "custom": {"minimumRefreshAge": 5}}, "secretRotation.custom", "only be set"),
        ({"type": "Custom", "custom": {"minimumRefreshAge": 0}}, "minimumRefreshAge", "between 1 and 86400"),
        ({"type": "Custom", "custom": {"minimumRefreshAge": "2m"}}, "minimumRefreshAge", "integer"),
        ({"type": "Custom", "custom": {"minimumRefreshAge": True}}, "minimumRefreshAge", "integer"),
    ],
)
def test_secret_rotation_errors_name_the_field(rotation: dict[str, Any], path: str, words: str) -> None:
    err = error_of(store(secretRotation=rotation))
    assert path in err.path and words in str(err)
    assert str(err).startswith("spec.driverConfig.secretsStore.")


def test_token_requests_managed_unmanaged_and_cleared() -> None:
    managed = {
        "type": "Managed",
        "managed": {"audiences": [{"audience": "vault", "expirationSeconds": 3600}, {"audience": "aws"}]},
    }
    assert parse_spec(store(tokenRequests=managed)).driver.token_requests == (
        TokenAudience("vault", 3600),
        TokenAudience("aws", None),
    )
    assert parse_spec(store(tokenRequests={"type": "Managed"})).driver.token_requests == ()
    cleared = {"type": "Managed", "managed": {"audiences": []}}
    assert parse_spec(store(tokenRequests=cleared)).driver.token_requests == ()
    assert parse_spec(store(tokenRequests={"type": "Unmanaged"})).driver.token_requests is None


@pytest.mark.parametrize(
    ("requests", "words"),
    [
        ({"type": "Sometimes"}, "Managed or Unmanaged"),
        ({"type": "Unmanaged", "managed": {"audiences": []}}, "only be set when type is Managed"),
        ({"type": "Managed", "managed": {"audiences": [{"audience": ""}]}}, "non-empty"),
        ({"type": "Managed", "managed": {"audiences": [{"audience": "a"}, {"audience": "a"}]}}, "duplicate"),
        (
            {"type": "Managed", "managed": {"audiences": [{"audience": "a", "expirationSeconds": 599}]}},
            "between 600",
        ),
        ({"type": "Managed", "managed": {"audiences": {"audience": "a"}}}, "must be a list"),
    ],
)
def test_token_request_errors(requests: dict[str, Any], words: str) -> None:
    err = error_of(store(tokenRequests=requests))
    assert "tokenRequests" in err.path and words in str(err)


@pytest.mark.parametrize(
    ("level", "verbosity"),
    [("Normal", 2), ("Debug", 4), ("Trace", 6), ("TraceAll", 8)],
)
def test_log_levels_map_to_klog_verbosity(level: str, verbosity: int) -> None:
    parsed = parse_spec({"logLevel": level, "operatorLogLevel": level})
    assert parsed.log_level.verbosity == verbosity
    assert parsed.operator_log_level.python_level == (20 if level == "Normal" else 10)


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ({"logLevel": "Loud"}, "logLevel", "Normal, Debug, Trace, TraceAll"),
        ({"operatorLogLevel": 4}, "operatorLogLevel", "is not one of"),
        ({"managementState": "Force"}, "managementState", "Managed, Unmanaged, Removed"),
        ({"driverConfig": {"driverType": "AWS"}}, "driverConfig.driverType", "SecretsStore"),
        ({"driverConfig": []}, "driverConfig", "must be an object"),
        (store(ephemeralVolumeProfile="open"), "ephemeralVolumeProfile", "restricted, baseline, privileged"),
        (store(syncSecret={"enabled": "yes"}), "syncSecret.enabled", "true or false"),
        (store(providerHealthCheck={"intervalSeconds": 0}), "intervalSeconds", "between 1"),
        (store(maxCallRecvMessageSize=1), "maxCallRecvMessageSize", "between 4096"),
    ],
)
def test_field_errors(spec: dict[str, Any], path: str, words: str) -> None:
    err = error_of(spec)
    assert path in err.path and words in str(err)


@pytest.mark.parametrize("state", ["Managed", "Unmanaged", "Removed"])
def test_management_states(state: str) -> None:
    assert parse_spec({"managementState": state}).management_state.value == state


@pytest.mark.parametrize("profile", ["restricted", "baseline", "privileged"])
def test_ephemeral_volume_profiles(profile: str) -> None:
    assert parse_spec(store(ephemeralVolumeProfile=profile)).driver.ephemeral_volume_profile.value == profile


def test_sync_health_check_and_message_size() -> None:
    driver = parse_spec(
        store(
            syncSecret={"enabled": False},
            providerHealthCheck={"enabled": True, "intervalSeconds": 30},
            maxCallRecvMessageSize=8 * 1024 * 1024,
        )
    ).driver
    assert driver.sync_secret is False
    assert (driver.provider_health_check, driver.provider_health_check_interval_seconds) == (True, 30)
    assert driver.max_call_recv_msg_size == 8 * 1024 * 1024


def test_node_selector() -> None:
    selector = {
        "node-role.kubernetes.io/worker": "",
        "example.com/zone": "a_1.b-2",
        "kubernetes.io/os": "linux",
    }
    assert dict(parse_spec(store(nodePlacement={"nodeSelector": selector})).driver.node_selector) == selector


@pytest.mark.parametrize(
    ("selector", "words"),
    [
        ({"kubernetes.io/os": "windows"}, "Linux nodes only"),
        ({"zone": "a b"}, "not a valid label value"),
        ({"zone": "x" * 64}, "not a valid label value"),
        ({"bad key!": "a"}, "not a valid label key"),
        ({"Example.com/zone": "a"}, "not a valid label key"),
        ({"zone": 1}, "not a valid label value"),
    ],
)
def test_node_selector_errors(selector: dict[str, Any], words: str) -> None:
    err = error_of(store(nodePlacement={"nodeSelector": selector}))
    assert "nodeSelector" in err.path and words in str(err)


def test_tolerations_replace_the_default() -> None:
    tolerations = [
        {"key": "dedicated", "operator": "Equal", "value": "secrets", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
    ]
    parsed = parse_spec(store(nodePlacement={"tolerations": tolerations})).driver.tolerations
    assert [t.to_manifest() for t in parsed] == tolerations
    assert parse_spec(store(nodePlacement={"tolerations": []})).driver.tolerations == ()


@pytest.mark.parametrize(
    ("toleration", "words"),
    [
        ({"value": "x"}, "without a key must use operator Exists"),
        ({"key": "a", "operator": "Exists", "value": "b"}, "must be empty when operator is Exists"),
        ({"key": "a", "tolerationSeconds": 5}, "only applies to effect NoExecute"),
        ({"key": "a", "operator": "Near"}, "Exists or Equal"),
        ({"key": "a", "effect": "Sometimes"}, "NoSchedule, PreferNoSchedule or NoExecute"),
    ],
)
def test_toleration_errors(toleration: dict[str, Any], words: str) -> None:
    err = error_of(store(nodePlacement={"tolerations": [toleration]}))
    assert "tolerations[0]" in err.path and words in str(err)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "secretRotation",
        "tokenRequests",
        "ephemeralVolumeProfile",
        "syncSecret",
        "nodePlacement",
        "providerHealthCheck",
        "maxCallRecvMessageSize",
    ]
)


@given(st.dictionaries(field_names, json_values, max_size=4), json_values)
def test_any_input_parses_or_raises_spec_error(fields: dict[str, Any], management_state: Any) -> None:
    """Whatever reaches the operator (e.g. past a stale CRD), it never crashes with another error."""
    try:
        parse_spec({"managementState": management_state, **store(**fields)})
    except SpecError as err:
        assert str(err).startswith("spec.")
