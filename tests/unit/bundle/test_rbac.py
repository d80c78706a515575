"""The generated CSV's RBAC is what the operator needs: no rule missing, none unexplained, none dangerous.

The needs are derived from the operator's code (tests/unit/bundle/rbac.py); the CSV's rules come from
config/rbac (which binds assets/operator/rbac.yaml) through `operator-sdk generate bundle`. A change
on either side that makes them diverge fails here; tests/e2e/test_csv_rbac.py proves the same rules
sufficient and minimal against a real apiserver's audit log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sscsi_operator import restart

from unit.bundle.rbac import (
    CsvRbac,
    Grant,
    atoms,
    covers,
    escalation_grants,
    needs,
    operator_grants,
    rendered_objects,
)

ROOT = Path(__file__).resolve().parents[3]
CSV_FILE = ROOT / "bundle" / "manifests" / "secrets-store-csi-py.clusterserviceversion.yaml"
OPERATOR_RBAC = ROOT / "assets" / "operator" / "rbac.yaml"
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate"}


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CSV_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def rbac(csv: dict[str, Any]) -> CsvRbac:
    return CsvRbac.of(csv)


def test_the_csv_rbac_is_assets_operator_rbac_yaml(csv: dict[str, Any], rbac: CsvRbac) -> None:
    """One source: operator-sdk took the rules config/rbac binds, i.e. assets/operator/rbac.yaml."""
    items = yaml.safe_load(OPERATOR_RBAC.read_text())["items"]
    assert rbac.cluster_rules == [r for i in items if i["kind"] == "ClusterRole" for r in i["rules"]]
    assert rbac.namespace_rules == [r for i in items if i["kind"] == "Role" for r in i["rules"]]
    install = csv["spec"]["install"]["spec"]
    [deployment] = install["deployments"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert {e["serviceAccountName"] for e in install["clusterPermissions"] + install["permissions"]} == {
        account
    }


def test_no_wildcards_escalate_bind_or_crd_writes(rbac: CsvRbac) -> None:
    for rule in rbac.cluster_rules + rbac.namespace_rules:
        assert not DANGEROUS_VERBS & set(rule["verbs"]), rule
        assert "*" not in rule["apiGroups"] and "*" not in rule["resources"], rule
        assert "nonResourceURLs" not in rule, rule
        if "apiextensions.k8s.io" in rule["apiGroups"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_the_cluster_rules_hold_every_rule_the_operator_grants_onwards(rbac: CsvRbac) -> None:
    """RBAC escalation prevention: the operator can create its ClusterRoles only with these rules."""
    have = [atom for rule in rbac.cluster_rules for atom in atoms(rule)]
    onwards = escalation_grants(rendered_objects())
    assert onwards, "the operator renders ClusterRoles"
    for grant in onwards:
        for need in atoms(grant.rule()):
            assert any(covers(h, need) for h in have), f"{need} ({grant.reason})"


def test_the_rules_cover_every_call_the_operator_makes(rbac: CsvRbac) -> None:
    cluster, namespaced = needs()
    assert rbac.missing(cluster, namespaced) == [], "the CSV lacks rules: edit assets/operator/rbac.yaml"


def test_every_rule_is_accounted_for_by_a_need(rbac: CsvRbac) -> None:
    """Least privilege, offline: every granted (group, resource, verb) is a call or a rule granted onwards."""
    cluster, namespaced = needs()
    assert rbac.unexplained(cluster, namespaced) == [], "the CSV grants more than the operator needs"


def test_namespaced_children_are_granted_in_the_operators_namespace_only(rbac: CsvRbac) -> None:
    """Least privilege: the driver's namespaced objects live in the operator's namespace (a Role)."""
    _, namespaced = operator_grants()
    namespaced_resources = {r for grant in namespaced for r in grant.resources}
    assert namespaced_resources >= {"daemonsets", "serviceaccounts", "services"}
    # Cluster-wide, a namespaced child's resource appears only with what restart on rotation declares
    # (get and patch of workloads in any namespace; never create, delete, list or watch).
    restart_atoms = {(r, v) for _, r, verbs, _ in restart.REQUIRED_GRANTS for v in verbs}
    for rule in rbac.cluster_rules:
        for atom in atoms(rule):
            if atom.resources[0] in namespaced_resources:
                assert (atom.resources[0], atom.verbs[0]) in restart_atoms, rule


def test_covers_understands_resource_names() -> None:
    any_name = Grant("storage.k8s.io", ("csidrivers",), ("get",), "")
    one_name = Grant("storage.k8s.io", ("csidrivers",), ("get",), "", ("secrets-store.csi.k8s.io",))
    assert covers(any_name, one_name)
    assert not covers(one_name, any_name)
    assert not covers(any_name, Grant("storage.k8s.io", ("csidrivers",), ("list",), ""))


def test_missing_rules_are_reported(rbac: CsvRbac) -> None:
    cluster, namespaced = needs()
    trimmed = CsvRbac(
        [r for r in rbac.cluster_rules if "storage.k8s.io" not in r["apiGroups"]], rbac.namespace_rules
    )
    missing = trimmed.missing(cluster, namespaced)
    assert any("storage.k8s.io/csidrivers" in line for line in missing), missing


def test_extra_rules_are_reported(rbac: CsvRbac) -> None:
    cluster, namespaced = needs()
    extra = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    widened = CsvRbac(rbac.cluster_rules, [*rbac.namespace_rules, extra])
    assert widened.unexplained(cluster, namespaced) == ["permissions: get core/configmaps"]
