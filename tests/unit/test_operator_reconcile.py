"""Reconcile passes against an in-memory apiserver: apply, prune, drift, adoption, failures, removal."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sscsi_operator.apply import ObjectKey
from sscsi_operator.kube import ApiError, Applied, Kind
from sscsi_operator.names import MANAGED_BY_LABEL, OPERATOR_NAME
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

    async def apply(self, manifest: dict[str, Any]) -> Applied:
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

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        obj = self.objects.get(ObjectKey(kind.kind, namespace or "", name))
        return copy.deepcopy(obj) if obj else None

    async def list(self, kind: Kind, namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
        assert label_selector == f"{MANAGED_BY_LABEL}={OPERATOR_NAME}"
        return [
            copy.deepcopy(obj)
            for key, obj in self.objects.items()
            if key.kind == kind.kind
            and (namespace is None or key.namespace == namespace)
            and obj["metadata"].get("labels", {}).get(MANAGED_BY_LABEL) == OPERATOR_NAME
        ]

    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        return self.objects.pop(ObjectKey(kind.kind, namespace or "", name), None) is not None

    async def patch_status(self, kind: Kind, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(copy.deepcopy(status))
        return {}

    async def serves(self, kind: Kind) -> bool:
        return False

    async def post_event(self, regarding: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


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
    result = await reconciler.finalize(cr())
    assert not result.failures and not result.remaining
    assert list(kube.objects) == [SYNC_ROLE]
    # The DaemonSet goes first, the ServiceAccount it runs as goes last.
    deleted = [change.key.kind for change in result.changes]
    assert deleted[0] == "DaemonSet" and deleted[-1] == "ServiceAccount"


async def test_a_pass_never_goes_back_to_an_older_generation(kube: FakeKube, reconciler: Reconciler) -> None:
    off = {"driverConfig": {"secretsStore": {"secretRotation": {"type": "None"}}}}
    await reconciler.reconcile(cr(2, **off), trigger=Trigger.SPEC)
    await reconciler.reconcile(cr(1), trigger=Trigger.RESYNC)  # a stale body, e.g. from a queued event
    assert kube.objects[CSI]["spec"]["requiresRepublish"] is False
    assert kube.statuses[-1]["observedGeneration"] == 2
