"""Reconcile passes against an in-memory apiserver: apply, prune, drift, adoption, failures, removal
(which waits for the pods that use the driver unless forced)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sscsi_kube import ApiError, Applied, Listing
from sscsi_kube import Resource as Kind
from sscsi_operator.apply import ObjectKey
from sscsi_operator.consumers import ACTIVE_PODS_SELECTOR
from sscsi_operator.kinds import kind_of
from sscsi_operator.names import DRIVER_NAME, FORCE_REMOVAL_ANNOTATION, MANAGED_BY_LABEL, OPERATOR_NAME
from sscsi_operator.reconcile import Reconciler, Trigger
from sscsi_operator.render import NAMES
from sscsi_operator.settings import Settings

NAMESPACE = "sscsi-system"
SETTINGS = Settings.from_environment({"OPERAND_NAMESPACE": NAMESPACE})
DS = ObjectKey("DaemonSet", NAMESPACE, NAMES.daemonset)
CSI = ObjectKey("CSIDriver", "", NAMES.csidriver)
SYNC_ROLE = ObjectKey("ClusterRole", "", "secretprovidersyncing-role")
SYNC_BINDING = ObjectKey("ClusterRoleBinding", "", "secretprovidersyncing-rolebinding")
# Fields a real apiserver refuses to change in place.
IMMUTABLE = {"CSIDriver": ("attachRequired", "volumeLifecycleModes")}


class FakeKube:
    """Just enough of KubeClient: objects by key, resourceVersions, label-selected lists."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.version = 0
        self.events: list[tuple[str, str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self.refuse: dict[str, str] = {}  # kind -> message of a rejected apply
        self.status_writes: set[str] = set()  # kinds whose controller writes status at every apply
        self.applies = 0
        self.pods: list[dict[str, Any]] = []
        self.pod_lists = 0
        self.refuse_pod_list: str | None = None
        self.deleted: list[ObjectKey] = []

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(obj)
        before = self.objects.get(ObjectKey.of(obj), {"metadata": {}})
        stored["metadata"]["resourceVersion"] = str(self.version)
        stored["metadata"]["generation"] = before["metadata"].get("generation", 0) + 1
        if "status" in before:  # like server-side apply: the status is not the applier's
            stored.setdefault("status", before["status"])
        self.objects[ObjectKey.of(stored)] = stored
        return stored

    async def apply(
        self, kind: Kind, manifest: dict[str, Any], *, field_manager: str, force: bool
    ) -> Applied:
        assert kind == kind_of(manifest) and field_manager == OPERATOR_NAME and force
        self.applies += 1
        key = ObjectKey.of(manifest)
        if key.kind in self.refuse:
            raise ApiError(422, "Invalid", self.refuse[key.kind])
        existing = self.objects.get(key)
        if existing is None:
            return Applied(self.put(manifest), created=True)
        if key.kind in self.status_writes:  # e.g. the DaemonSet controller, racing with this pass
            self.version += 1
            existing["metadata"]["resourceVersion"] = str(self.version)
            existing["status"] = {
                "observedGeneration": existing["metadata"]["generation"],
                "numberAvailable": 1,
            }
        for field in IMMUTABLE.get(key.kind, ()):
            if existing["spec"].get(field) != manifest["spec"].get(field):
                raise ApiError(422, "Invalid", f"spec.{field}: Invalid value: field is immutable")
        merged = copy.deepcopy(manifest)
        for field in ("resourceVersion", "generation"):
            merged["metadata"][field] = existing["metadata"][field]
        if "status" in existing:
            merged["status"] = existing["status"]
        if merged == existing:
            return Applied(existing, created=False)
        return Applied(self.put(manifest), created=False)

    async def find(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        obj = self.objects.get(ObjectKey(kind.kind, namespace or "", name))
        return copy.deepcopy(obj) if obj else None

    async def list_all(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> Listing:
        if kind.kind == "Pod":
            return Listing(await self._list_pods(kind, namespace, fields or ""), "1")
        assert labels == f"{MANAGED_BY_LABEL}={OPERATOR_NAME}"
        return Listing(self._list_managed(kind, namespace), str(self.version))

    def _list_managed(self, kind: Kind, namespace: str | None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for key, obj in self.objects.items()
            if key.kind == kind.kind
            and (namespace is None or key.namespace == namespace)
            and obj["metadata"].get("labels", {}).get(MANAGED_BY_LABEL) == OPERATOR_NAME
        ]

    async def _list_pods(
        self, kind: Kind, namespace: str | None, field_selector: str
    ) -> list[dict[str, Any]]:
        assert (kind.kind, namespace, field_selector) == ("Pod", None, ACTIVE_PODS_SELECTOR)
        self.pod_lists += 1
        if self.refuse_pod_list is not None:
            raise ApiError(403, "Forbidden", self.refuse_pod_list)
        # The field selector, as the apiserver applies it.
        return [copy.deepcopy(p) for p in self.pods if p["status"]["phase"] not in ("Succeeded", "Failed")]

    async def delete(
        self, kind: Kind, name: str, namespace: str | None = None, *, propagation: str, missing_ok: bool
    ) -> bool:
        assert propagation == "Background" and missing_ok
        key = ObjectKey(kind.kind, namespace or "", name)
        if key in self.objects:
            self.deleted.append(key)
        return self.objects.pop(key, None) is not None

    async def merge_patch(
        self, kind: Kind, name: str, patch: dict[str, Any], namespace: str | None = None, *, sub: str
    ) -> dict[str, Any]:
        assert (kind.kind, sub) == ("ClusterCSIDriver", "status")
        self.statuses.append(copy.deepcopy(patch["status"]))
        return {}

    async def serves(self, kind: Kind) -> bool:
        return False

    async def create(self, kind: Kind, event: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        assert kind.kind == "Event" and namespace == "default"
        self.events.append((event["type"], event["reason"], event["message"]))
        return event


def cr(generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "operator.secrets-store.csi.x-k8s.io/v1",
        "kind": "ClusterCSIDriver",
        "metadata": {"name": "secrets-store.csi.k8s.io", "uid": "uid-1", "generation": generation},
        "spec": spec,
    }


def conditions(kube: FakeKube) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in kube.statuses[-1]["conditions"]}


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, SETTINGS)  # type: ignore[arg-type]


async def test_first_pass_creates_everything_then_passes_are_quiet(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    outcome = await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    assert outcome.ok
    assert {DS, CSI, SYNC_ROLE, SYNC_BINDING} <= set(kube.objects)
    assert len(kube.objects) == 11
    [(type_, reason, message)] = kube.events
    assert (type_, reason) == ("Normal", "Applied") and "created DaemonSet" in message
    assert kube.statuses[-1]["observedGeneration"] == 1
    assert conditions(kube)["Progressing"] == ("True", "Deploying")  # no pods yet
    versions = {key: obj["metadata"]["resourceVersion"] for key, obj in kube.objects.items()}
    seen = cr() | {"status": kube.statuses[-1]}  # the body, as the next watch event brings it
    await reconciler.reconcile(seen, trigger=Trigger.RESYNC)
    assert len(kube.events) == 1 and len(kube.statuses) == 1  # nothing changed, nothing written
    assert {key: obj["metadata"]["resourceVersion"] for key, obj in kube.objects.items()} == versions


async def test_a_status_update_by_a_controller_is_not_a_change(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    kube.status_writes.add("DaemonSet")
    events = len(kube.events)
    await reconciler.reconcile(cr(), trigger=Trigger.RESYNC)
    assert len(kube.events) == events  # no "DriftRepaired: updated DaemonSet"


async def test_sync_off_prunes_the_sync_rbac(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    spec = {"driverConfig": {"secretsStore": {"syncSecret": {"enabled": False}}}}
    assert (await reconciler.reconcile(cr(2, **spec), trigger=Trigger.SPEC)).ok
    assert SYNC_ROLE not in kube.objects and SYNC_BINDING not in kube.objects
    args = kube.objects[DS]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-secret-sync=false" in args
    message = kube.events[-1][2]
    assert f"deleted {SYNC_ROLE}" in message and f"deleted {SYNC_BINDING}" in message


async def test_a_deleted_child_is_restored_as_drift(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    del kube.objects[DS]
    kube.objects[CSI]["spec"]["requiresRepublish"] = False
    await reconciler.reconcile(cr(), trigger=Trigger.RESYNC)
    assert DS in kube.objects and kube.objects[CSI]["spec"]["requiresRepublish"] is True
    assert kube.events[-1][:2] == ("Normal", "DriftRepaired")
    assert f"created {DS}" in kube.events[-1][2] and f"updated {CSI}" in kube.events[-1][2]


async def test_a_foreign_csidriver_is_adopted_keeping_its_token_requests(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    """Installed by hand (no label, immutable fields differ): replaced, its tokenRequests kept."""
    kube.put(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSIDriver",
            "metadata": {"name": NAMES.csidriver},
            "spec": {"attachRequired": True, "tokenRequests": [{"audience": "vault"}]},
        }
    )
    assert (await reconciler.reconcile(cr(), trigger=Trigger.SPEC)).ok
    adopted = kube.objects[CSI]
    assert adopted["spec"]["attachRequired"] is False
    assert adopted["spec"]["tokenRequests"] == [{"audience": "vault"}]
    assert adopted["metadata"]["labels"][MANAGED_BY_LABEL] == OPERATOR_NAME
    assert f"recreated {CSI}" in kube.events[-1][2]


async def test_an_apply_failure_degrades_and_warns_once(kube: FakeKube, reconciler: Reconciler) -> None:
    kube.refuse["DaemonSet"] = 'admission webhook "no-ds" denied the request'
    for _ in range(3):
        outcome = await reconciler.reconcile(cr(), trigger=Trigger.RESYNC)
        assert not outcome.ok and not outcome.permanent
        assert 'admission webhook "no-ds" denied the request' in (outcome.error or "")
    assert conditions(kube)["Degraded"] == ("True", "ApplyFailed")
    assert conditions(kube)["NodeServiceDegraded"] == ("True", "ApplyFailed")
    assert CSI in kube.objects  # the rest is applied anyway
    warnings = [event for event in kube.events if event[0] == "Warning"]
    assert len(warnings) == 1 and "no-ds" in warnings[0][2]
    del kube.refuse["DaemonSet"]
    assert (await reconciler.reconcile(cr(), trigger=Trigger.RESYNC)).ok
    assert conditions(kube)["Degraded"] == ("False", "AsExpected")


async def test_an_invalid_spec_is_permanent_and_reported(kube: FakeKube, reconciler: Reconciler) -> None:
    outcome = await reconciler.reconcile(cr(logLevel="Loud"), trigger=Trigger.SPEC)
    assert outcome.permanent and "spec.logLevel" in (outcome.error or "")
    assert conditions(kube)["Degraded"] == ("True", "InvalidSpec")
    assert kube.objects == {} and kube.events[-1][:2] == ("Warning", "InvalidSpec")


async def test_unmanaged_touches_nothing(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    kube.objects[DS]["spec"]["template"]["spec"]["containers"][0]["args"].append("--edited")
    del kube.objects[CSI]
    applies = kube.applies
    await reconciler.reconcile(cr(2, managementState="Unmanaged"), trigger=Trigger.SPEC)
    await reconciler.reconcile(cr(2, managementState="Unmanaged"), trigger=Trigger.RESYNC)
    assert kube.applies == applies
    assert "--edited" in kube.objects[DS]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert CSI not in kube.objects
    assert conditions(kube)["Upgradeable"] == ("False", "Unmanaged")


async def test_removed_deletes_everything(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    assert (await reconciler.reconcile(cr(2, managementState="Removed"), trigger=Trigger.SPEC)).ok
    assert kube.objects == {}
    assert conditions(kube)["Available"] == ("False", "Removed")
    assert kube.events[-1][1] == "Removed"


async def test_finalize_also_finds_children_that_lost_the_label(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    del kube.objects[CSI]["metadata"]["labels"][MANAGED_BY_LABEL]  # still owned by the CR
    foreign_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "secretprovidersyncing-role"},  # same name, not ours
        "rules": [],
    }
    kube.put(foreign_role)
    outcome = await reconciler.finalize(deleting(cr()))
    assert outcome.ok
    assert list(kube.objects) == [SYNC_ROLE]
    # The DaemonSet goes first, the ServiceAccount it runs as goes last.
    deleted = [key.kind for key in kube.deleted]
    assert deleted[0] == "DaemonSet" and deleted[-1] == "ServiceAccount"
    assert CSI in kube.deleted


async def test_a_pass_never_goes_back_to_an_older_generation(kube: FakeKube, reconciler: Reconciler) -> None:
    off = {"driverConfig": {"secretsStore": {"secretRotation": {"type": "None"}}}}
    await reconciler.reconcile(cr(2, **off), trigger=Trigger.SPEC)
    await reconciler.reconcile(cr(1), trigger=Trigger.RESYNC)  # a stale body, e.g. from a queued event
    assert kube.objects[CSI]["spec"]["requiresRepublish"] is False
    assert kube.statuses[-1]["observedGeneration"] == 2


def deleting(body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    return body


def pod(name: str, *, driver: str = DRIVER_NAME, phase: str = "Running", ns: str = "app") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "volumes": [{"name": "secrets", "csi": {"driver": driver}}, {"name": "tmp", "emptyDir": {}}]
        },
        "status": {"phase": phase},
    }


def forced(body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["annotations"] = {FORCE_REMOVAL_ANNOTATION: "true"}
    return body


def warnings(kube: FakeKube, reason: str) -> list[str]:
    return [message for type_, why, message in kube.events if type_ == "Warning" and why == reason]


async def test_removed_waits_while_pods_use_the_driver(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    kube.pods = [
        pod("reader"),
        pod("done", phase="Succeeded"),  # finished: its volumes are already torn down
        pod("other", driver="ebs.csi.aws.com"),
    ]
    children = set(kube.objects)
    for _ in range(3):  # the spec handler, then periodic passes: one Warning, not one per pass
        outcome = await reconciler.reconcile(cr(2, managementState="Removed"), trigger=Trigger.RESYNC)
        assert outcome.ok and outcome.waiting_for.pods == ("app/reader",)
    assert set(kube.objects) == children  # nothing removed
    assert conditions(kube)["Progressing"] == ("True", "WaitingForPods")
    assert conditions(kube)["Degraded"] == ("False", "AsExpected")
    message = {c["type"]: c for c in kube.statuses[-1]["conditions"]}["Progressing"]["message"]
    assert "1 pod using the driver: app/reader" in message and FORCE_REMOVAL_ANNOTATION in message
    [warning] = warnings(kube, "WaitingForPods")
    assert "app/reader" in warning and "app/done" not in warning and "app/other" not in warning

    kube.pods[0]["status"]["phase"] = "Failed"  # the last user is gone: removal proceeds
    assert (await reconciler.reconcile(cr(2, managementState="Removed"), trigger=Trigger.RESYNC)).ok
    assert kube.objects == {}
    assert conditions(kube)["Progressing"] == ("False", "Removed")
    assert kube.events[-1][:2] == ("Normal", "Removed")


async def test_the_warning_names_ten_pods_and_counts_the_rest(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    kube.pods = [pod(f"reader-{i:02d}") for i in range(13)]
    await reconciler.reconcile(cr(2, managementState="Removed"), trigger=Trigger.SPEC)
    [warning] = warnings(kube, "WaitingForPods")
    assert "13 pods" in warning and "app/reader-09 and 3 more" in warning and "reader-10" not in warning
    kube.pods.pop()  # a different set of pods: reported again
    await reconciler.reconcile(cr(2, managementState="Removed"), trigger=Trigger.RESYNC)
    assert len(warnings(kube, "WaitingForPods")) == 2 and "12 pods" in warnings(kube, "WaitingForPods")[1]


async def test_the_force_annotation_removes_anyway_and_names_the_pods(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    kube.pods = [pod("reader", ns="team-a")]
    await reconciler.reconcile(cr(2, managementState="Removed"), trigger=Trigger.SPEC)
    assert DS in kube.objects
    outcome = await reconciler.reconcile(forced(cr(2, managementState="Removed")), trigger=Trigger.RESYNC)
    assert outcome.ok and not outcome.waiting_for
    assert kube.objects == {}
    [warning] = warnings(kube, "RemovalForced")
    assert "team-a/reader" in warning
    assert conditions(kube)["Progressing"] == ("False", "Removed")


async def test_the_finalizer_waits_for_pods_then_removes(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    kube.pods = [pod("reader")]
    waiting = await reconciler.finalize(deleting(cr(2)))
    assert not waiting.ok and waiting.waiting_for.pods == ("app/reader",)
    assert "app/reader" in (waiting.error or "")
    assert DS in kube.objects and CSI in kube.objects
    assert conditions(kube)["Progressing"] == ("True", "WaitingForPods")
    assert conditions(kube)["Available"] == ("False", "Deploying")  # as the DaemonSet says (no pods here)
    kube.pods = []
    assert (await reconciler.finalize(deleting(cr(2)))).ok
    assert kube.objects == {}


async def test_pods_do_not_hold_a_removal_once_the_node_plugin_is_gone(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    """The DaemonSet went first in an earlier pass: the pods are cut off already, the rest must go."""
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    del kube.objects[DS]
    kube.pods = [pod("reader")]
    assert (await reconciler.finalize(deleting(cr(2)))).ok
    assert kube.objects == {} and kube.pod_lists == 0


async def test_a_pod_list_that_fails_holds_removal_unless_forced(
    kube: FakeKube, reconciler: Reconciler
) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    kube.refuse_pod_list = 'pods is forbidden: cannot list resource "pods"'
    outcome = await reconciler.finalize(deleting(cr(2)))
    assert not outcome.ok and not outcome.pending and "forbidden" in (outcome.error or "")
    assert DS in kube.objects
    assert conditions(kube)["Degraded"][0] == "True"
    assert (await reconciler.finalize(forced(deleting(cr(2))))).ok
    assert kube.objects == {}


async def test_an_invalid_spec_does_not_stop_the_finalizer(kube: FakeKube, reconciler: Reconciler) -> None:
    await reconciler.reconcile(cr(), trigger=Trigger.SPEC)
    assert (await reconciler.finalize(deleting(cr(2, logLevel="Loud")))).ok
    assert kube.objects == {}
