"""What RBAC the operator needs, derived from its own code, and how to compare that with a CSV.

Two sources of need:
- the operator's own API calls: the kinds it manages and watches (sscsi_operator.kinds, .handlers),
  the ClusterCSIDriver and its status, Events, the cluster-wide pod listing before removal;
- every rule of every ClusterRole it creates, from its own rendering of assets/templates: RBAC lets a
  subject create or bind a role only with rules it holds itself (the CSV grants no escalate/bind).

tests/unit/bundle/test_bundle.py holds the generated CSV's clusterPermissions and permissions against these
needs both ways (nothing missing, nothing unexplained); tests/e2e/test_csv_rbac.py proves the same on
a real apiserver with its audit log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sscsi_operator import handlers, kinds, names, render, restart, settings
from sscsi_operator.spec import OperatorSpec

ROOT = Path(__file__).resolve().parents[3]
Obj = dict[str, Any]


@dataclass(frozen=True)
class Grant:
    """Verbs on some resources of one API group, and why the operator holds them."""

    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str
    resource_names: tuple[str, ...] = ()

    def rule(self) -> Obj:
        rule: Obj = {
            "apiGroups": [self.group],
            "resources": sorted(self.resources),
            "verbs": sorted(self.verbs),
        }
        if self.resource_names:
            rule["resourceNames"] = sorted(self.resource_names)
        return rule


# What the operator does with every child kind (sscsi_operator.apply / reconcile):
#  list: observe() finds its children by label; get: remove_all() checks what is left, the reconciler
#  reads the DaemonSet and the CSIDriver; patch: server-side apply; create: a server-side apply that
#  creates the object is authorized as create too; delete: prune and removal.
CHILD_VERBS = ("create", "delete", "get", "list", "patch")
# kopf's event watchers on the children (drift repair) add watch.
WATCH = "watch"


def operator_grants() -> tuple[list[Grant], list[Grant]]:
    """(cluster-wide, operator-namespace) grants for the operator's own API calls."""
    watched = set(handlers.WATCHED_KINDS)
    cluster: list[Grant] = [
        Grant(
            names.GROUP,
            (names.PLURAL,),
            ("list", "watch", "patch"),
            "kopf watches the ClusterCSIDriver and patches its finalizer and handler-state annotations",
        ),
        Grant(
            names.GROUP,
            (f"{names.PLURAL}/status",),
            ("patch",),
            "the reconciler writes conditions, generations and readyReplicas",
        ),
        Grant(
            "",
            ("events",),
            ("create",),
            "the reconciler posts Events about the ClusterCSIDriver (in namespace default)",
        ),
        Grant(
            kinds.POD.group,
            (kinds.POD.plural,),
            ("list",),
            "removal waits while pods use the driver: active pods listed in every namespace",
        ),
    ]
    # Restart on rotation: the calls sscsi_operator.restart makes, as it declares them.
    cluster += [
        Grant(group, (resource,), verbs, why) for group, resource, verbs, why in restart.REQUIRED_GRANTS
    ]
    namespaced: list[Grant] = []
    for kind in kinds.CHILD_KINDS:
        verbs = CHILD_VERBS + ((WATCH,) if kind in watched else ())
        if kind.namespaced:
            reason = f"the driver's {kind.kind} in the operator's namespace: apply, prune, remove"
            namespaced.append(Grant(kind.group, (kind.plural,), verbs, reason))
        else:
            reason = f"the driver's cluster-scoped {kind.kind}: apply, prune, remove"
            cluster.append(Grant(kind.group, (kind.plural,), verbs, reason))
    return cluster, namespaced


def rendered_objects() -> list[Obj]:
    """Everything the operator can render: defaults plus every optional object switched on."""
    operator_settings = settings.Settings(
        images=settings.Images("driver", "livenessprobe"),
        namespace="secrets-store-csi-driver",
        templates_dir=ROOT / "assets" / "templates",
        version="0.0.0",
    )
    spec = OperatorSpec()
    assert spec.driver.sync_secret, "the sync role is rendered only with syncSecret on"
    facts = render.ClusterFacts(service_monitor_crd=True, prometheus_rule_crd=True, admission_policies=True)
    return render.render(spec, operator_settings, facts=facts)


def escalation_grants(objects: Iterable[Obj]) -> list[Grant]:
    """Every rule of every ClusterRole the operator creates (it must hold them cluster-wide)."""
    objects = list(objects)
    roles = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "ClusterRole"}
    for obj in objects:
        assert obj["kind"] not in ("Role", "RoleBinding"), f"the operator renders a {obj['kind']}: scope it"
        if obj["kind"] == "ClusterRoleBinding":
            assert obj["roleRef"]["name"] in roles, f"{obj['metadata']['name']} binds a role not rendered"
    grants: list[Grant] = []
    for obj in objects:
        if obj["kind"] != "ClusterRole":
            continue
        for rule in obj.get("rules") or []:
            for group in rule["apiGroups"]:
                grants.append(
                    Grant(
                        group,
                        tuple(rule["resources"]),
                        tuple(rule["verbs"]),
                        f"granted onwards in ClusterRole {obj['metadata']['name']}",
                        tuple(rule.get("resourceNames") or ()),
                    )
                )
    return grants


def covers(big: Grant, small: Grant) -> bool:
    """Whether `big` allows everything `small` does (a rule without resourceNames allows every name)."""
    if big.resource_names and not (
        small.resource_names and set(small.resource_names) <= set(big.resource_names)
    ):
        return False
    return (
        big.group == small.group
        and set(small.resources) <= set(big.resources)
        and set(small.verbs) <= set(big.verbs)
    )


def atoms(rule: Mapping[str, Any]) -> list[Grant]:
    """A rule split into one Grant per (group, resource, verb)."""
    names_ = tuple(sorted(rule.get("resourceNames") or ()))
    return [
        Grant(group, (resource,), (verb,), "", names_)
        for group in rule.get("apiGroups") or ()
        for resource in rule.get("resources") or ()
        for verb in rule.get("verbs") or ()
    ]


def describe(atom: Grant) -> str:
    where = f"{atom.group or 'core'}/{atom.resources[0]}"
    if atom.resource_names:
        where += f" {list(atom.resource_names)}"
    return f"{atom.verbs[0]} {where}"


@dataclass(frozen=True)
class CsvRbac:
    """A CSV's rules: clusterPermissions (a ClusterRole) and permissions (a Role in its namespace)."""

    cluster_rules: list[Obj]
    namespace_rules: list[Obj]

    @classmethod
    def of(cls, csv: Mapping[str, Any]) -> CsvRbac:
        install = csv["spec"]["install"]["spec"]

        def rules(key: str) -> list[Obj]:
            return [rule for entry in install.get(key) or [] for rule in entry["rules"]]

        return cls(rules("clusterPermissions"), rules("permissions"))

    def missing(self, cluster: Sequence[Grant], namespaced: Sequence[Grant]) -> list[str]:
        """Required grants no rule allows: cluster-wide ones need a clusterPermissions rule."""
        cluster_atoms = [a for rule in self.cluster_rules for a in atoms(rule)]
        namespace_atoms = cluster_atoms + [a for rule in self.namespace_rules for a in atoms(rule)]
        out: list[str] = []
        for grants, available, scope in (
            (cluster, cluster_atoms, "cluster-wide"),
            (namespaced, namespace_atoms, "in the operator's namespace"),
        ):
            for grant in grants:
                for need in atoms(grant.rule()):
                    if not any(covers(have, need) for have in available):
                        out.append(f"{scope}: {describe(need)} ({grant.reason})")
        return out

    def unexplained(self, cluster: Sequence[Grant], namespaced: Sequence[Grant]) -> list[str]:
        """Granted atoms that no derived need accounts for."""
        out: list[str] = []
        for rules, needs, scope in (
            (self.cluster_rules, cluster, "clusterPermissions"),
            (self.namespace_rules, namespaced, "permissions"),
        ):
            need_atoms = [a for grant in needs for a in atoms(grant.rule())]
            for rule in rules:
                out += [
                    f"{scope}: {describe(a)}"
                    for a in atoms(rule)
                    if not any(covers(a, n) for n in need_atoms)
                ]
        return out


def needs() -> tuple[list[Grant], list[Grant]]:
    """(cluster-wide, operator-namespace) grants the operator needs: its calls and what it grants onwards."""
    cluster, namespaced = operator_grants()
    return cluster + escalation_grants(rendered_objects()), namespaced
