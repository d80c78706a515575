"""The ClusterCSIDriver spec as typed values, with every default applied here.

The CRD already validates and defaults most fields; parsing validates again so that a stale CRD,
an edit that bypassed the schema, or a unit test cannot make the operator render nonsense.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

DEFAULT_ROTATION_SECONDS = 120
DEFAULT_HEALTH_CHECK_SECONDS = 120
DEFAULT_MAX_CALL_RECV_MSG_SIZE = 4 * 1024 * 1024
# Restart on rotation (sscsi_operator.restart): a workload is restarted at most once per interval.
DEFAULT_RESTART_MINIMUM_INTERVAL_SECONDS = 300
OS_LABEL = "kubernetes.io/os"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SpecError(ValueError):
    """A spec field has a value the operator cannot act on; `path` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"spec.{path}: {message}")
        self.path = path


class ManagementState(StrEnum):
    MANAGED = "Managed"
    UNMANAGED = "Unmanaged"
    REMOVED = "Removed"


class LogLevel(StrEnum):
    NORMAL = "Normal"
    DEBUG = "Debug"
    TRACE = "Trace"
    TRACE_ALL = "TraceAll"

    @property
    def verbosity(self) -> int:
        """klog -v of the driver and sidecars (the mapping OpenShift operators use)."""
        return {"Normal": 2, "Debug": 4, "Trace": 6, "TraceAll": 8}[self.value]

    @property
    def python_level(self) -> int:
        return logging.INFO if self is LogLevel.NORMAL else logging.DEBUG


class EphemeralVolumeProfile(StrEnum):
    """A pod security level (pod-security.kubernetes.io), from the most to the least restrictive."""

    RESTRICTED = "restricted"
    BASELINE = "baseline"
    PRIVILEGED = "privileged"


@dataclass(frozen=True)
class TokenAudience:
    audience: str
    expiration_seconds: int | None = None


@dataclass(frozen=True)
class Toleration:
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_manifest(self) -> dict[str, Any]:
        fields = {
            "key": self.key,
            "operator": self.operator,
            "value": self.value,
            "effect": self.effect,
            "tolerationSeconds": self.toleration_seconds,
        }
        return {name: value for name, value in fields.items() if value is not None}


# As upstream and OpenShift: the node plugin must run wherever pods may mount secrets.
DEFAULT_TOLERATIONS = (Toleration(operator="Exists"),)


@dataclass(frozen=True)
class DriverConfig:
    rotation_enabled: bool = True
    rotation_interval_seconds: int = DEFAULT_ROTATION_SECONDS
    # None means tokenRequests is Unmanaged: the live CSIDriver's value is kept as it is.
    token_requests: tuple[TokenAudience, ...] | None = None
    ephemeral_volume_profile: EphemeralVolumeProfile = EphemeralVolumeProfile.RESTRICTED
    # The level of namespaces without the pod-security.kubernetes.io/enforce label, as the apiserver's
    # PodSecurity admission defaults it (privileged unless configured); used off OpenShift only.
    default_namespace_level: EphemeralVolumeProfile = EphemeralVolumeProfile.PRIVILEGED
    sync_secret: bool = True
    # Only what the spec asks for; rendering adds kubernetes.io/os: linux.
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = DEFAULT_TOLERATIONS
    provider_health_check: bool = False
    provider_health_check_interval_seconds: int = DEFAULT_HEALTH_CHECK_SECONDS
    max_call_recv_msg_size: int = DEFAULT_MAX_CALL_RECV_MSG_SIZE
    # Opted-in workloads (annotation) get a rolling restart when their mounted secrets rotate.
    restart_on_rotation: bool = True
    restart_minimum_interval_seconds: int = DEFAULT_RESTART_MINIMUM_INTERVAL_SECONDS


@dataclass(frozen=True)
class OperatorSpec:
    management_state: ManagementState = ManagementState.MANAGED
    log_level: LogLevel = LogLevel.NORMAL
    operator_log_level: LogLevel = LogLevel.NORMAL
    driver: DriverConfig = field(default_factory=DriverConfig)


def parse_spec(spec: Mapping[str, Any] | None) -> OperatorSpec:
    """The typed spec of a ClusterCSIDriver; raises SpecError naming the first bad field."""
    spec = _mapping(spec, "") if spec is not None else {}
    driver_config = _mapping(spec.get("driverConfig"), "driverConfig")
    driver_type = driver_config.get("driverType", "SecretsStore")
    if driver_type != "SecretsStore":
        raise SpecError("driverConfig.driverType", f"unsupported value {driver_type!r}: use SecretsStore")
    return OperatorSpec(
        management_state=_enum(ManagementState, spec, "managementState", ManagementState.MANAGED),
        log_level=_enum(LogLevel, spec, "logLevel", LogLevel.NORMAL),
        operator_log_level=_enum(LogLevel, spec, "operatorLogLevel", LogLevel.NORMAL),
        driver=_driver_config(
            _mapping(driver_config.get("secretsStore"), "driverConfig.secretsStore"),
            "driverConfig.secretsStore",
        ),
    )


def _driver_config(store: Mapping[str, Any], path: str) -> DriverConfig:
    rotation_enabled, rotation_seconds = _rotation(store.get("secretRotation"), f"{path}.secretRotation")
    sync = _mapping(store.get("syncSecret"), f"{path}.syncSecret")
    placement = _mapping(store.get("nodePlacement"), f"{path}.nodePlacement")
    health = _mapping(store.get("providerHealthCheck"), f"{path}.providerHealthCheck")
    tolerations = placement.get("tolerations")
    restart = _mapping(store.get("restartOnRotation"), f"{path}.restartOnRotation")
    return DriverConfig(
        rotation_enabled=rotation_enabled,
        rotation_interval_seconds=rotation_seconds,
        token_requests=_token_requests(store.get("tokenRequests"), f"{path}.tokenRequests"),
        ephemeral_volume_profile=_enum(
            EphemeralVolumeProfile, store, "ephemeralVolumeProfile", EphemeralVolumeProfile.RESTRICTED, path
        ),
        default_namespace_level=_enum(
            EphemeralVolumeProfile,
            store,
            "defaultNamespacePodSecurityLevel",
            EphemeralVolumeProfile.PRIVILEGED,
            path,
        ),
        sync_secret=_bool(sync.get("enabled", True), f"{path}.syncSecret.enabled"),
        node_selector=_node_selector(placement.get("nodeSelector"), f"{path}.nodePlacement.nodeSelector"),
        tolerations=(
            DEFAULT_TOLERATIONS
            if tolerations is None
            else _tolerations(tolerations, f"{path}.nodePlacement.tolerations")
        ),
        provider_health_check=_bool(health.get("enabled", False), f"{path}.providerHealthCheck.enabled"),
        provider_health_check_interval_seconds=_int(
            health.get("intervalSeconds", DEFAULT_HEALTH_CHECK_SECONDS),
            f"{path}.providerHealthCheck.intervalSeconds",
            1,
            86400,
        ),
        max_call_recv_msg_size=_int(
            store.get("maxCallRecvMessageSize", DEFAULT_MAX_CALL_RECV_MSG_SIZE),
            f"{path}.maxCallRecvMessageSize",
            4096,
            256 * 1024 * 1024,
        ),
        restart_on_rotation=_bool(restart.get("enabled", True), f"{path}.restartOnRotation.enabled"),
        restart_minimum_interval_seconds=_int(
            restart.get("minimumIntervalSeconds", DEFAULT_RESTART_MINIMUM_INTERVAL_SECONDS),
            f"{path}.restartOnRotation.minimumIntervalSeconds",
            10,
            86400,
        ),
    )


def _rotation(value: Any, path: str) -> tuple[bool, int]:
    if value is None:
        return True, DEFAULT_ROTATION_SECONDS
    rotation = _mapping(value, path)
    kind = rotation.get("type")
    custom = rotation.get("custom")
    if kind == "None":
        if custom is not None:
            raise SpecError(f"{path}.custom", "may only be set when type is Custom")
        return False, DEFAULT_ROTATION_SECONDS
    if kind == "Custom":
        age = _mapping(custom, f"{path}.custom").get("minimumRefreshAge", DEFAULT_ROTATION_SECONDS)
        return True, _int(age, f"{path}.custom.minimumRefreshAge", 1, 86400)
    raise SpecError(f"{path}.type", f"must be None or Custom, not {kind!r}")


def _token_requests(value: Any, path: str) -> tuple[TokenAudience, ...] | None:
    if value is None:
        return None
    requests = _mapping(value, path)
    kind = requests.get("type")
    managed = requests.get("managed")
    if kind == "Unmanaged":
        if managed is not None:
            raise SpecError(f"{path}.managed", "may only be set when type is Managed")
        return None
    if kind != "Managed":
        raise SpecError(f"{path}.type", f"must be Managed or Unmanaged, not {kind!r}")
    audiences_path = f"{path}.managed.audiences"
    items = _mapping(managed, f"{path}.managed").get("audiences") or []
    if not isinstance(items, list):
        raise SpecError(audiences_path, "must be a list")
    audiences: list[TokenAudience] = []
    for index, item in enumerate(items):
        entry = _mapping(item, f"{audiences_path}[{index}]")
        audience = entry.get("audience")
        if not isinstance(audience, str) or not audience:
            raise SpecError(f"{audiences_path}[{index}].audience", "must be a non-empty string")
        if any(known.audience == audience for known in audiences):
            raise SpecError(f"{audiences_path}[{index}].audience", f"duplicate audience {audience!r}")
        expiration = entry.get("expirationSeconds")
        if expiration is not None:
            # The CSIDriver API's own bounds: at least 10 minutes, at most 2^32 seconds.
            expiration = _int(expiration, f"{audiences_path}[{index}].expirationSeconds", 600, 1 << 32)
        audiences.append(TokenAudience(audience, expiration))
    return tuple(audiences)


def _node_selector(value: Any, path: str) -> dict[str, str]:
    selector = _mapping(value, path)
    result: dict[str, str] = {}
    for key, label in selector.items():
        if not isinstance(label, str) or len(label) > 63 or not _LABEL_VALUE.match(label):
            raise SpecError(f"{path}[{key}]", f"{label!r} is not a valid label value")
        if not _is_label_key(key):
            raise SpecError(f"{path}[{key}]", f"{key!r} is not a valid label key")
        result[key] = label
    if result.get(OS_LABEL, "linux") != "linux":
        raise SpecError(f"{path}[{OS_LABEL}]", "the driver runs on Linux nodes only")
    return result


def _is_label_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


_TOLERATION_OPERATORS = ("Exists", "Equal")
_TAINT_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


def _tolerations(value: Any, path: str) -> tuple[Toleration, ...]:
    if not isinstance(value, list):
        raise SpecError(path, "must be a list")
    return tuple(_toleration(_mapping(item, f"{path}[{i}]"), f"{path}[{i}]") for i, item in enumerate(value))


def _toleration(item: Mapping[str, Any], path: str) -> Toleration:
    operator = item.get("operator")
    effect = item.get("effect")
    key, value, seconds = item.get("key"), item.get("value"), item.get("tolerationSeconds")
    if operator is not None and operator not in _TOLERATION_OPERATORS:
        raise SpecError(f"{path}.operator", "must be Exists or Equal")
    if effect is not None and effect not in _TAINT_EFFECTS:
        raise SpecError(f"{path}.effect", "must be NoSchedule, PreferNoSchedule or NoExecute")
    if not key and operator != "Exists":
        raise SpecError(path, "a toleration without a key must use operator Exists")
    if operator == "Exists" and value:
        raise SpecError(f"{path}.value", "must be empty when operator is Exists")
    if seconds is not None:
        seconds = _int(seconds, f"{path}.tolerationSeconds", -(1 << 63), (1 << 63) - 1)
        if effect != "NoExecute":
            raise SpecError(f"{path}.tolerationSeconds", "only applies to effect NoExecute")
    for name, text in (("key", key), ("value", value)):
        if text is not None and not isinstance(text, str):
            raise SpecError(f"{path}.{name}", "must be a string")
    return Toleration(key=key, operator=operator, value=value, effect=effect, toleration_seconds=seconds)


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    return value


E = TypeVar("E", bound=StrEnum)


def _enum(cls: type[E], parent: Mapping[str, Any], name: str, default: E, path: str = "") -> E:
    value = parent.get(name)
    if value is None:
        return default
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(member.value for member in cls)
        full = f"{path}.{name}" if path else name
        raise SpecError(full, f"{value!r} is not one of {allowed}") from None


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, "must be true or false")
    return value


def _int(value: Any, path: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, "must be an integer")
    if not minimum <= value <= maximum:
        raise SpecError(path, f"must be between {minimum} and {maximum}, not {value}")
    return value
