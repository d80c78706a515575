"""The operator's API and output against the real apiserver's schemas (server-side dry runs only)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cluster import Cluster
from operator_fixtures import CR_RESOURCE, operator_crds
from sscsi_operator.render import ClusterFacts, Owner, render
from sscsi_operator.settings import Settings
from sscsi_operator.spec import parse_spec

__all__ = ["operator_crds"]  # a fixture, imported for pytest


def store(**fields: Any) -> dict[str, Any]:
    return {"driverConfig": {"secretsStore": fields}}


FULL_SPEC = {
    "managementState": "Managed",
    "logLevel": "TraceAll",
    "operatorLogLevel": "Debug",
    "driverConfig": {
        "driverType": "SecretsStore",
        "secretsStore": {
            "secretRotation": {"type": "Custom", "custom": {"minimumRefreshAge": 90}},
            "tokenRequests": {
                "type": "Managed",
                "managed": {
                    "audiences": [
                        {"audience": "api://AzureADTokenExchange", "expirationSeconds": 3600},
                        {"audience": "sts.amazonaws.com"},
                    ]
                },
            },
            "ephemeralVolumeProfile": "baseline",
            "syncSecret": {"enabled": False},
            "nodePlacement": {
                "nodeSelector": {"node-role.kubernetes.io/worker": ""},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "secrets", "effect": "NoSchedule"},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                ],
            },
            "providerHealthCheck": {"enabled": True, "intervalSeconds": 30},
            "maxCallRecvMessageSize": 8388608,
        },
    },
}

SPECS = {
    "defaults": {},
    "full": FULL_SPEC,
    "rotation-none": store(secretRotation={"type": "None"}),
    "tokens-cleared": store(tokenRequests={"type": "Managed", "managed": {"audiences": []}}),
    "privileged-profile": store(ephemeralVolumeProfile="privileged"),
    "no-tolerations": store(nodePlacement={"tolerations": []}),
}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_rendered_manifest_passes_server_side_validation(
    cluster: Cluster, namespace: str, spec: dict[str, Any]
) -> None:
    settings = Settings.from_environment({"OPERAND_NAMESPACE": namespace})
    facts = ClusterFacts(live_token_requests=({"audience": "kept", "expirationSeconds": 600},))
    manifests = render(parse_spec(spec), settings, owner=None, facts=facts)
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    out = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=sscsi-e2e-dry-run",
        "-f",
        "-",
        input=listing,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("(server dry run)") == len(manifests)


def test_owner_references_to_the_cluster_csi_driver_are_accepted(cluster: Cluster, namespace: str) -> None:
    settings = Settings.from_environment({"OPERAND_NAMESPACE": namespace})
    owner = Owner(name="secrets-store.csi.k8s.io", uid="6f1f6bd4-9d0e-4c52-9c7e-2b2d8d7b0c11")
    manifests = render(parse_spec({}), settings, owner=owner)
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    out = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=sscsi-e2e-dry-run",
        "-f",
        "-",
        input=listing,
    )
    assert out.returncode == 0, out.stderr


def create_dry_run(cluster: Cluster, name: str, spec: dict[str, Any]) -> Any:
    cr = {
        "apiVersion": "operator.secrets-store.csi.x-k8s.io/v1",
        "kind": "ClusterCSIDriver",
        "metadata": {"name": name},
        "spec": spec,
    }
    return cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(cr))


def test_the_crd_defaults_and_accepts_a_full_spec(cluster: Cluster, operator_crds: None) -> None:
    out = create_dry_run(cluster, "secrets-store.csi.k8s.io", FULL_SPEC)
    assert out.returncode == 0, out.stderr
    assert parse_spec(json.loads(out.stdout)["spec"]) == parse_spec(FULL_SPEC)
    defaulted = create_dry_run(cluster, "secrets-store.csi.k8s.io", {})
    assert defaulted.returncode == 0, defaulted.stderr
    assert json.loads(defaulted.stdout)["spec"] == {
        "managementState": "Managed",
        "logLevel": "Normal",
        "operatorLogLevel": "Normal",
    }
    nested = create_dry_run(cluster, "secrets-store.csi.k8s.io", store(syncSecret={}, providerHealthCheck={}))
    secrets_store = json.loads(nested.stdout)["spec"]["driverConfig"]["secretsStore"]
    assert secrets_store["syncSecret"] == {"enabled": True}
    assert secrets_store["providerHealthCheck"] == {"enabled": False, "intervalSeconds": 120}
    assert secrets_store["ephemeralVolumeProfile"] == "restricted"


REJECTED = {
    "another-name": ("my-driver", {}, "must be named secrets-store.csi.k8s.io"),
    "custom-without-custom-type": (
        None,
        store(secretRotation={"type": "None", "custom": {"minimumRefreshAge": 60}}),
        "custom may only be set when type is Custom",
    ),
    "zero-refresh-age": (
        None,
        store(secretRotation={"type": "Custom", "custom": {"minimumRefreshAge": 0}}),
        "should be greater than or equal to 1",
    ),
    "unknown-rotation-type": (None, store(secretRotation={"type": "Sometimes"}), "Unsupported value"),
    "managed-audiences-when-unmanaged": (
        None,
        store(tokenRequests={"type": "Unmanaged", "managed": {"audiences": []}}),
        "managed may only be set when type is Managed",
    ),
    "short-token": (
        None,
        store(
            tokenRequests={
                "type": "Managed",
                "managed": {"audiences": [{"audience": "a", "expirationSeconds": 60}]},
            }
        ),
        "should be greater than or equal to 600",
    ),
    "duplicate-audience": (
        None,
        store(
            tokenRequests={
                "type": "Managed",
                "managed": {"audiences": [{"audience": "a"}, {"audience": "a"}]},
            }
        ),
        "Duplicate value",
    ),
    "windows": (
        None,
        store(nodePlacement={"nodeSelector": {"kubernetes.io/os": "windows"}}),
        "kubernetes.io/os must be linux",
    ),
    "bad-label-value": (None, store(nodePlacement={"nodeSelector": {"zone": "a b"}}), "should match"),
    "keyless-equal-toleration": (
        None,
        store(nodePlacement={"tolerations": [{"operator": "Equal", "value": "x"}]}),
        "a toleration without a key must use operator Exists",
    ),
    "profile": (None, store(ephemeralVolumeProfile="anything"), "Unsupported value"),
    "state": (None, {"managementState": "Force"}, "Unsupported value"),
    "log-level": (None, {"logLevel": "Verbose"}, "Unsupported value"),
    "message-size": (None, store(maxCallRecvMessageSize=10), "should be greater than or equal to 4096"),
}


@pytest.mark.parametrize(("name", "spec", "message"), REJECTED.values(), ids=REJECTED.keys())
def test_the_crd_rejects_nonsense_with_a_clear_message(
    cluster: Cluster, operator_crds: None, name: str | None, spec: dict[str, Any], message: str
) -> None:
    out = create_dry_run(cluster, name or "secrets-store.csi.k8s.io", spec)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


def test_the_status_subresource_and_printer_columns(cluster: Cluster, operator_crds: None) -> None:
    crd = json.loads(cluster.kubectl("get", "crd", CR_RESOURCE, "-o", "json").stdout)
    [version] = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Management",
        "Available",
        "Progressing",
        "Degraded",
        "Ready",
        "Age",
    ]
    assert crd["spec"]["scope"] == "Cluster"
