"""Rendering: every spec field that changes the manifests, the fixed parts, and the environment's images."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sscsi_driver.config import parse_config
from sscsi_operator.names import CONFIG_HASH_ANNOTATION, MANAGED_BY_LABEL, OPERATOR_NAME
from sscsi_operator.render import NAMES, ClusterFacts, Owner, config_hash, go_duration, render
from sscsi_operator.settings import (
    DEFAULT_LIVENESS_PROBE_IMAGE,
    DEFAULT_NAMESPACE,
    Settings,
)
from sscsi_operator.spec import parse_spec

NAMESPACE = "sscsi-system"
SETTINGS = Settings.from_environment(
    {
        "OPERAND_NAMESPACE": NAMESPACE,
        "DRIVER_IMAGE": "example.com/driver@sha256:abc",
        "LIVENESS_PROBE_IMAGE": "example.com/liveness:v9",
    }
)
# The driver registers itself with kubelet (no node-driver-registrar): the CSI socket as kubelet sees
# it, and the plugin watcher directory it serves its registration socket in.
REGISTRATION_ARGS = [
    "--kubelet-registration-path=/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
    "--plugin-registration-dir=/registration",
]
OWNER = Owner(name="secrets-store.csi.k8s.io", uid="0b7e2f52-0000-4000-8000-000000000001")


def store(**fields: Any) -> dict[str, Any]:
    return {"driverConfig": {"secretsStore": fields}}


def manifests(spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[tuple[str, str], dict[str, Any]]:
    rendered = render(parse_spec(spec or {}), kwargs.pop("settings", SETTINGS), owner=OWNER, **kwargs)
    return {(m["kind"], m["metadata"]["name"]): m for m in rendered}


def csidriver(spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return manifests(spec, **kwargs)["CSIDriver", NAMES.csidriver]


def daemonset(spec: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return manifests(spec, **kwargs)["DaemonSet", NAMES.daemonset]


def containers(spec: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in daemonset(spec)["spec"]["template"]["spec"]["containers"]}


def driver_args(spec: dict[str, Any] | None = None) -> list[str]:
    args: list[str] = containers(spec)["csi-driver"]["args"]
    return args


def test_default_objects_in_apply_order() -> None:
    rendered = render(parse_spec({}), SETTINGS, owner=OWNER)
    assert [(m["kind"], m["metadata"]["name"]) for m in rendered] == [
        ("ServiceAccount", "secrets-store-csi-driver-node-sa"),
        ("ClusterRole", "secretproviderclasses-role"),
        ("ClusterRoleBinding", "secretproviderclasses-rolebinding"),
        ("ClusterRole", "secretprovidersyncing-role"),
        ("ClusterRoleBinding", "secretprovidersyncing-rolebinding"),
        ("ClusterRole", "secretproviderclasses-admin-role"),
        ("ClusterRole", "secretproviderclasses-viewer-role"),
        ("ClusterRole", "secretproviderclasspodstatuses-viewer-role"),
        ("CSIDriver", "secrets-store.csi.k8s.io"),
        ("Service", "secrets-store-csi-driver-node-metrics"),
        ("DaemonSet", "secrets-store-csi-driver-node"),
    ]


def test_every_object_is_labelled_owned_and_placed() -> None:
    for manifest in render(parse_spec({}), SETTINGS, owner=OWNER):
        metadata = manifest["metadata"]
        assert metadata["labels"][MANAGED_BY_LABEL] == OPERATOR_NAME
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "operator.secrets-store.csi.x-k8s.io/v1",
                "kind": "ClusterCSIDriver",
                "name": OWNER.name,
                "uid": OWNER.uid,
                "controller": True,
            }
        ]
        namespaced = manifest["kind"] in {"ServiceAccount", "Service", "DaemonSet", "ServiceMonitor"}
        assert metadata.get("namespace") == (NAMESPACE if namespaced else None)


def test_without_owner_there_are_no_owner_references() -> None:
    assert all("ownerReferences" not in m["metadata"] for m in render(parse_spec({}), SETTINGS))


def test_csidriver_defaults() -> None:
    driver = csidriver()
    assert driver["apiVersion"] == "storage.k8s.io/v1"
    assert driver["spec"] == {
        "attachRequired": False,
        "podInfoOnMount": True,
        "volumeLifecycleModes": ["Ephemeral"],
        "requiresRepublish": True,
    }
    assert driver["metadata"]["labels"]["security.openshift.io/csi-ephemeral-volume-profile"] == "restricted"


@pytest.mark.parametrize("profile", ["restricted", "baseline", "privileged"])
def test_ephemeral_volume_profile_label(profile: str) -> None:
    labels = csidriver(store(ephemeralVolumeProfile=profile))["metadata"]["labels"]
    assert labels["security.openshift.io/csi-ephemeral-volume-profile"] == profile


@pytest.mark.parametrize(
    ("rotation", "republish", "enabled", "interval"),
    [
        (None, True, "true", "2m"),
        ({"type": "None"}, False, "false", "2m"),
        ({"type": "Custom"}, True, "true", "2m"),
        ({"type": "Custom", "custom": {"minimumRefreshAge": 90}}, True, "true", "90s"),
        ({"type": "Custom", "custom": {"minimumRefreshAge": 600}}, True, "true", "10m"),
        ({"type": "Custom", "custom": {"minimumRefreshAge": 7200}}, True, "true", "2h"),
    ],
)
def test_rotation_sets_republish_and_driver_flags(
    rotation: dict[str, Any] | None, republish: bool, enabled: str, interval: str
) -> None:
    spec = store(secretRotation=rotation) if rotation else {}
    assert csidriver(spec)["spec"]["requiresRepublish"] is republish
    args = driver_args(spec)
    assert f"--enable-secret-rotation={enabled}" in args
    assert f"--rotation-poll-interval={interval}" in args


def test_token_requests_managed() -> None:
    audiences = [{"audience": "vault"}, {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600}]
    spec = store(tokenRequests={"type": "Managed", "managed": {"audiences": audiences}})
    assert csidriver(spec)["spec"]["tokenRequests"] == audiences
    live = ClusterFacts(live_token_requests=({"audience": "old"},))
    assert csidriver(spec, facts=live)["spec"]["tokenRequests"] == audiences


def test_token_requests_managed_empty_clears_them() -> None:
    spec = store(tokenRequests={"type": "Managed", "managed": {"audiences": []}})
    live = ClusterFacts(live_token_requests=({"audience": "old"},))
    assert csidriver(spec, facts=live)["spec"]["tokenRequests"] == []


@pytest.mark.parametrize("spec", [{}, store(tokenRequests={"type": "Unmanaged"})])
def test_token_requests_unmanaged_keep_the_live_value(spec: dict[str, Any]) -> None:
    assert "tokenRequests" not in csidriver(spec)["spec"]
    live = ({"audience": "set-by-admin", "expirationSeconds": 7200},)
    assert csidriver(spec, facts=ClusterFacts(live_token_requests=live))["spec"]["tokenRequests"] == list(
        live
    )


def test_audiences_are_quoted_whatever_they_contain() -> None:
    tricky = 'a: b\n- c {{ x }} "q" #'
    spec = store(tokenRequests={"type": "Managed", "managed": {"audiences": [{"audience": tricky}]}})
    assert csidriver(spec)["spec"]["tokenRequests"] == [{"audience": tricky}]


@pytest.mark.parametrize("enabled", [True, False])
def test_sync_secret_toggles_the_sync_rbac_and_flag(enabled: bool) -> None:
    rendered = manifests(store(syncSecret={"enabled": enabled}))
    assert (("ClusterRole", "secretprovidersyncing-role") in rendered) is enabled
    assert (("ClusterRoleBinding", "secretprovidersyncing-rolebinding") in rendered) is enabled
    assert f"--enable-secret-sync={'true' if enabled else 'false'}" in driver_args(
        store(syncSecret={"enabled": enabled})
    )
    if enabled:
        assert rendered["ClusterRole", "secretprovidersyncing-role"]["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["create", "delete", "get", "list", "update", "watch"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        ]


def test_base_role_is_least_privilege_and_never_touches_secrets() -> None:
    """What the driver uses (tests/e2e/test_driver_rbac.py proves it by audit log), not upstream's."""
    role = manifests()["ClusterRole", "secretproviderclasses-role"]
    rules = {(rule["apiGroups"][0], rule["resources"][0]): rule for rule in role["rules"]}
    assert {key: rule["verbs"] for key, rule in rules.items()} == {
        ("", "events"): ["create"],
        ("secrets-store.csi.x-k8s.io", "secretproviderclasses"): ["get", "list", "watch"],
        ("secrets-store.csi.x-k8s.io", "secretproviderclasspodstatuses"): [
            "create",
            "get",
            "list",
            "update",
            "watch",
        ],
        ("", "pods"): ["list", "watch"],
    }


def test_bindings_name_the_node_service_account() -> None:
    rendered = manifests()
    for name in ("secretproviderclasses-rolebinding", "secretprovidersyncing-rolebinding"):
        assert rendered["ClusterRoleBinding", name]["subjects"] == [
            {"kind": "ServiceAccount", "name": NAMES.service_account, "namespace": NAMESPACE}
        ]


def test_user_facing_roles_aggregate_and_the_status_viewer_is_read_only() -> None:
    rendered = manifests()
    admin = rendered["ClusterRole", "secretproviderclasses-admin-role"]
    assert admin["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert admin["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    for name in ("secretproviderclasses-viewer-role", "secretproviderclasspodstatuses-viewer-role"):
        role = rendered["ClusterRole", name]
        assert role["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
            assert not any("/" in resource for resource in rule["resources"])


def test_daemonset_fixed_parts() -> None:
    ds = daemonset()
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"] == {"app": NAMES.app} == spec["template"]["metadata"]["labels"]
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}
    assert pod["serviceAccountName"] == NAMES.service_account
    assert pod["priorityClassName"] == "system-node-critical"
    by_name = containers()
    assert list(by_name) == ["csi-driver", "csi-liveness-probe"]
    driver = by_name["csi-driver"]
    assert driver["securityContext"]["privileged"] is True
    mounts = {m["name"]: m for m in driver["volumeMounts"]}
    assert mounts["mountpoint-dir"] == {
        "name": "mountpoint-dir",
        "mountPath": "/var/lib/kubelet/pods",
        "mountPropagation": "Bidirectional",
    }
    assert {p["name"]: p["containerPort"] for p in driver["ports"]} == {"healthz": 9808, "metrics": 8095}
    assert driver["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    # Ready only once kubelet confirmed the registration: an unregistered driver counts as unavailable.
    assert driver["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert mounts["registration-dir"] == {"name": "registration-dir", "mountPath": "/registration"}
    assert all("requests" in c["resources"] for c in by_name.values())
    assert "privileged" not in by_name["csi-liveness-probe"]["securityContext"]
    volumes = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    assert volumes == {
        "mountpoint-dir": {"path": "/var/lib/kubelet/pods", "type": "DirectoryOrCreate"},
        "registration-dir": {"path": "/var/lib/kubelet/plugins_registry/", "type": "Directory"},
        "plugin-dir": {"path": "/var/lib/kubelet/plugins/csi-secrets-store/", "type": "DirectoryOrCreate"},
        "providers-dir": {"path": "/etc/kubernetes/secrets-store-csi-providers", "type": "DirectoryOrCreate"},
        "providers-dir-0": {"path": "/var/run/secrets-store-csi-providers", "type": "DirectoryOrCreate"},
    }
    for arg in REGISTRATION_ARGS:
        assert arg in driver["args"]


def test_default_driver_args_are_upstreams_plus_registration() -> None:
    upstreams = [arg for arg in driver_args() if arg not in REGISTRATION_ARGS]
    assert sorted(driver_args()) == sorted(upstreams + REGISTRATION_ARGS)
    assert upstreams == [
        "--endpoint=unix:///csi/csi.sock",
        "--nodeid=$(KUBE_NODE_NAME)",
        "--provider-volume=/var/run/secrets-store-csi-providers",
        "--additional-provider-volume-paths=/etc/kubernetes/secrets-store-csi-providers",
        "--metrics-addr=:8095",
        "--enable-secret-rotation=true",
        "--rotation-poll-interval=2m",
        "--provider-health-check=false",
        "--provider-health-check-interval=2m",
        "--max-call-recv-msg-size=4194304",
        "--enable-secret-sync=true",
        "-v=2",
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {},
        store(secretRotation={"type": "None"}, syncSecret={"enabled": False}),
        store(
            secretRotation={"type": "Custom", "custom": {"minimumRefreshAge": 45}},
            providerHealthCheck={"enabled": True, "intervalSeconds": 30},
            maxCallRecvMessageSize=16 * 1024 * 1024,
        ),
    ],
)
def test_the_driver_accepts_its_rendered_args(spec: dict[str, Any]) -> None:
    """The flags exist in the driver and parse to what the spec says."""
    args = [arg.replace("$(KUBE_NODE_NAME)", "node-1") for arg in driver_args(spec)]
    config, namespace = parse_config(args)
    parsed = parse_spec(spec).driver
    assert config.node_id == "node-1"
    assert namespace.enable_secret_rotation is parsed.rotation_enabled
    assert namespace.rotation_poll_interval == parsed.rotation_interval_seconds
    assert namespace.enable_secret_sync is parsed.sync_secret
    assert namespace.provider_health_check is parsed.provider_health_check
    assert namespace.max_call_recv_msg_size == parsed.max_call_recv_msg_size


def test_provider_health_check_and_message_size_flags() -> None:
    args = driver_args(
        store(providerHealthCheck={"enabled": True, "intervalSeconds": 30}, maxCallRecvMessageSize=8388608)
    )
    assert "--provider-health-check=true" in args
    assert "--provider-health-check-interval=30s" in args
    assert "--max-call-recv-msg-size=8388608" in args


@pytest.mark.parametrize(("level", "verbosity"), [("Normal", 2), ("Debug", 4), ("Trace", 6), ("TraceAll", 8)])
def test_log_level_sets_every_containers_verbosity(level: str, verbosity: int) -> None:
    for container in containers({"logLevel": level}).values():
        assert f"-v={verbosity}" in container["args"]


def test_node_selector_is_merged_with_linux() -> None:
    pod = daemonset(store(nodePlacement={"nodeSelector": {"example.com/pool": "secrets"}}))["spec"][
        "template"
    ]
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux", "example.com/pool": "secrets"}
    assert daemonset()["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_tolerations_default_to_everything_and_can_be_replaced() -> None:
    assert daemonset()["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]
    mine = [{"key": "dedicated", "operator": "Equal", "value": "secrets", "effect": "NoSchedule"}]
    pod = daemonset(store(nodePlacement={"tolerations": mine}))["spec"]["template"]["spec"]
    assert pod["tolerations"] == mine


def test_images_come_from_the_environment() -> None:
    images = {name: c["image"] for name, c in containers().items()}
    assert images == {
        "csi-driver": "example.com/driver@sha256:abc",
        "csi-liveness-probe": "example.com/liveness:v9",
    }


def test_images_and_namespace_defaults() -> None:
    settings = Settings.from_environment({}, namespace_file=Path("/nonexistent"))
    assert settings.namespace == DEFAULT_NAMESPACE
    assert [field.name for field in dataclasses.fields(settings.images)] == ["driver", "liveness_probe"]
    assert settings.images.liveness_probe == DEFAULT_LIVENESS_PROBE_IMAGE
    assert settings.images.driver.endswith(f":v{settings.version}")


def test_operand_namespace_precedence(tmp_path: Path) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("from-service-account\n")
    env = {"OPERAND_NAMESPACE": "operand", "OPERATOR_NAMESPACE": "operator", "POD_NAMESPACE": "pod"}
    assert Settings.from_environment(env, namespace_file=namespace_file).namespace == "operand"
    env.pop("OPERAND_NAMESPACE")
    assert Settings.from_environment(env, namespace_file=namespace_file).namespace == "operator"
    assert Settings.from_environment({}, namespace_file=namespace_file).namespace == "from-service-account"


def test_templates_dir_from_environment_or_a_clear_error(tmp_path: Path) -> None:
    env = {"SSCSI_OPERATOR_TEMPLATES": str(tmp_path)}
    assert Settings.from_environment(env).templates_dir == tmp_path
    assets = {"SSCSI_ASSETS_DIR": str(tmp_path)}
    assert Settings.from_environment(assets).templates_dir == tmp_path / "templates"
    with pytest.raises(FileNotFoundError, match="SSCSI_OPERATOR_TEMPLATES"):
        Settings.from_environment({}, template_dirs=(tmp_path / "missing",))


def test_metrics_service_and_service_monitor_only_with_its_crd() -> None:
    rendered = manifests()
    service = rendered["Service", NAMES.metrics_service]
    assert service["spec"]["selector"] == {"app": NAMES.app}
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8095, "protocol": "TCP", "targetPort": "metrics"}
    ]
    assert ("ServiceMonitor", NAMES.metrics_service) not in rendered
    monitor = manifests(facts=ClusterFacts(service_monitor_crd=True))["ServiceMonitor", NAMES.metrics_service]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector == {"app": NAMES.app} and selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_config_hash_rolls_pods_only_for_node_relevant_changes() -> None:
    base = config_hash(parse_spec({}), SETTINGS)
    template_hash = daemonset()["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    assert template_hash == base and len(base) == 16
    node_relevant = [
        store(secretRotation={"type": "None"}),
        store(syncSecret={"enabled": False}),
        store(nodePlacement={"nodeSelector": {"a": "b"}}),
        {"logLevel": "Debug"},
    ]
    for spec in node_relevant:
        assert config_hash(parse_spec(spec), SETTINGS) != base, spec
    other_image = dataclasses.replace(SETTINGS, images=dataclasses.replace(SETTINGS.images, driver="x/y:z"))
    assert config_hash(parse_spec({}), other_image) != base
    node_irrelevant = [
        store(ephemeralVolumeProfile="privileged"),
        store(tokenRequests={"type": "Managed"}),
        {"operatorLogLevel": "Debug"},
        {"managementState": "Unmanaged"},
    ]
    for spec in node_irrelevant:
        assert config_hash(parse_spec(spec), SETTINGS) == base, spec


@pytest.mark.parametrize(
    ("seconds", "text"), [(1, "1s"), (59, "59s"), (60, "1m"), (120, "2m"), (90, "90s"), (3600, "1h")]
)
def test_go_duration(seconds: int, text: str) -> None:
    assert go_duration(seconds) == text
