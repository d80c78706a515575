"""One reconcile pass for the ClusterCSIDriver: spec -> desired objects -> cluster -> status.

Every entry point (spec handlers, the resync loop, the finalizer) goes through one lock, so two
passes never interleave their writes; each pass is idempotent, so a pass cut short by a restart
is simply done again.

Removal (managementState Removed, or the ClusterCSIDriver deleted) waits while application pods
still use the driver, unless the ClusterCSIDriver carries the force-removal annotation.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from sscsi_kube import ApiError, KubeClient, Resource, event_body, involved_object, post_event

from .apply import ApplyResult, Failure, ObjectKey, apply_all, child_kinds, observe, prune, remove_all
from .consumers import DriverUsers, find_driver_users, removal_forced
from .kinds import (
    CLUSTER_CSI_DRIVER,
    CSI_DRIVER,
    DAEMON_SET,
    PROMETHEUS_RULE,
    SECURITY_CONTEXT_CONSTRAINTS,
    SERVICE_MONITOR,
    VALIDATING_ADMISSION_POLICY,
)
from .names import OPERATOR_NAME
from .render import NAMES, ClusterFacts, Owner, render
from .settings import Settings
from .spec import ManagementState, OperatorSpec, SpecError, parse_spec
from .status import Observation, build_status
from .volume_profile import ProfileEnforcement, profile_enforcement

log = logging.getLogger(__name__)

# Child events often come in bursts (a rollout updates the DaemonSet status many times).
WAKE_DEBOUNCE_SECONDS = 0.5


class Trigger(StrEnum):
    """Why a pass runs; it names the Event that reports what the pass changed."""

    SPEC = "spec"  # created, updated or resumed ClusterCSIDriver
    RESYNC = "resync"  # periodic, or a child changed: whatever it fixes is drift
    REMOVAL = "removal"

    @property
    def event_reason(self) -> str:
        return {"spec": "Applied", "resync": "DriftRepaired", "removal": "Removed"}[self.value]


@dataclass(frozen=True)
class Outcome:
    error: str | None = None
    # The spec itself is wrong: retrying before it changes cannot help.
    permanent: bool = False
    # Removal is held back by these pods (an error only for the finalizer, which must not finish).
    waiting_for: DriverUsers = field(default_factory=DriverUsers)
    # Removal is done but objects are still going away (e.g. held by someone else's finalizer).
    pending: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class Reconciler:
    def __init__(
        self,
        client: KubeClient,
        settings: Settings,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._newest: dict[str, Any] | None = None
        self._written_status: tuple[str, dict[str, Any]] | None = None
        self._last_warning: str | None = None
        self._last_waiting: str | None = None
        self._log_level: int | None = None

    def wake(self) -> None:
        """Ask for a pass soon (a child changed or disappeared)."""
        self._wake.set()

    async def wait_for_wake(self, timeout: float, stopped: Awaitable[object] | None = None) -> None:
        """Return after `timeout` seconds, shortly after wake(), or as soon as `stopped` completes."""
        waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(self._wake.wait())}
        if stopped is not None:
            waiters.add(asyncio.ensure_future(stopped))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._wake.is_set():
            await asyncio.sleep(WAKE_DEBOUNCE_SECONDS)
            self._wake.clear()

    async def reconcile(self, body: Mapping[str, Any], *, trigger: Trigger) -> Outcome:
        async with self._lock:
            current = self._freshest(body)
            if current["metadata"].get("deletionTimestamp"):
                return Outcome()  # the finalizer takes it from here
            try:
                spec = parse_spec(current.get("spec"))
            except SpecError as err:
                await self._invalid_spec(current, err)
                return Outcome(error=str(err), permanent=True)
            self._set_operator_log_level(spec)
            log.log(
                logging.DEBUG if trigger is Trigger.RESYNC else logging.INFO,
                "Reconciling generation %s (%s, %s)",
                current["metadata"].get("generation"),
                spec.management_state.value,
                trigger.value,
            )
            return await self._pass(current, spec, trigger)

    async def finalize(self, body: Mapping[str, Any]) -> Outcome:
        """Delete every child of a ClusterCSIDriver being deleted: ok once nothing is left.

        Whatever the spec says (even an invalid one), a deleted ClusterCSIDriver means Removed.
        """
        async with self._lock:
            current = copy.deepcopy(dict(body))
            log.info("The ClusterCSIDriver is being deleted: removing the driver")
            removed = OperatorSpec(management_state=ManagementState.REMOVED)
            outcome = await self._pass(current, removed, Trigger.REMOVAL)
            if outcome.ok and outcome.waiting_for:
                return replace(outcome, error=outcome.waiting_for.waiting_message())
            return outcome

    async def _pass(self, body: Mapping[str, Any], spec: OperatorSpec, trigger: Trigger) -> Outcome:
        state = spec.management_state
        generation = int(body["metadata"].get("generation", 0))
        waiting = DriverUsers()
        enforcement: ProfileEnforcement | None = None
        try:
            if state is ManagementState.UNMANAGED:
                result = ApplyResult()
            elif state is ManagementState.REMOVED:
                trigger = Trigger.REMOVAL
                waiting = await self._users_holding_removal(body)
                result = ApplyResult() if waiting else await self._remove(body)
            else:
                result, facts = await self._apply(spec, body)
                enforcement = profile_enforcement(spec, facts, result.failures)
            daemonset = await self._client.find(DAEMON_SET, NAMES.daemonset, self._settings.namespace)
        except ApiError as err:
            key = ObjectKey(CLUSTER_CSI_DRIVER.kind, "", body["metadata"]["name"])
            result, daemonset = ApplyResult(failures=[Failure(key, "reconcile", err.message)]), None
        await self._report(body, result, trigger)
        await self._report_waiting(body, waiting)
        observation = Observation(
            generation=generation,
            management_state=state,
            failures=result.failures,
            daemonset=daemonset,
            removal_pending=result.remaining,
            waiting_for=waiting,
            profile_enforcement=enforcement,
        )
        await self._write_status(body, observation)
        if result.failures:
            return Outcome(error="; ".join(map(str, result.failures)))
        if result.remaining:
            return Outcome(error="waiting for " + ", ".join(map(str, result.remaining)), pending=True)
        return Outcome(waiting_for=waiting)

    async def _users_holding_removal(self, body: Mapping[str, Any]) -> DriverUsers:
        """The pods removal must wait for: none once the node plugin is gone (nothing left to protect)
        or when the removal is forced (they are named in a Warning, then removal goes ahead)."""
        if await self._client.find(DAEMON_SET, NAMES.daemonset, self._settings.namespace) is None:
            return DriverUsers()
        forced = removal_forced(body)
        try:
            users = await find_driver_users(self._client)
        except ApiError as err:
            if not forced:
                raise
            log.warning("Could not list the pods using the driver (removal is forced): %s", err)
            return DriverUsers()
        if users and forced:
            await self._warn_once(body, "RemovalForced", users.forced_message())
            return DriverUsers()
        return users

    async def _report_waiting(self, body: Mapping[str, Any], waiting: DriverUsers) -> None:
        """A Warning naming the pods removal waits for, again only when they change."""
        if not waiting:
            self._last_waiting = None
            return
        message = waiting.waiting_message()
        if message != self._last_waiting:
            log.warning("WaitingForPods: %s", message)
            await self._post_event(body, "Warning", "WaitingForPods", message)
        else:
            log.debug("WaitingForPods: %s", message)
        self._last_waiting = message

    async def _child_kinds(self) -> tuple[Resource, ...]:
        """The children's kinds; the optional ones (monitoring CRDs, admission policies) while served."""
        serves = self._client.serves
        return child_kinds(
            await serves(SERVICE_MONITOR),
            await serves(PROMETHEUS_RULE),
            await serves(VALIDATING_ADMISSION_POLICY),
        )

    async def _apply(self, spec: OperatorSpec, body: Mapping[str, Any]) -> tuple[ApplyResult, ClusterFacts]:
        kinds = await self._child_kinds()
        live = await observe(self._client, self._settings.namespace, kinds)
        csidriver = live.get(ObjectKey(CSI_DRIVER.kind, "", NAMES.csidriver))
        if csidriver is None:  # possibly created by someone else: adopt it, keeping its tokenRequests
            csidriver = await self._client.find(CSI_DRIVER, NAMES.csidriver)
        facts = ClusterFacts(
            service_monitor_crd=SERVICE_MONITOR in kinds,
            prometheus_rule_crd=PROMETHEUS_RULE in kinds,
            admission_policies=VALIDATING_ADMISSION_POLICY in kinds,
            openshift=await self._client.serves(SECURITY_CONTEXT_CONSTRAINTS),
            live_token_requests=_token_requests_of(csidriver),
        )
        desired = render(spec, self._settings, owner=_owner(body), facts=facts)
        result = await apply_all(self._client, desired, live)
        result.extend(await prune(self._client, desired, live))
        return result, facts

    async def _remove(self, body: Mapping[str, Any]) -> ApplyResult:
        kinds = await self._child_kinds()
        # Every name the operator could have rendered, so a child that lost its label is found too.
        everything = render(
            OperatorSpec(),
            self._settings,
            facts=ClusterFacts(service_monitor_crd=True, prometheus_rule_crd=True, admission_policies=True),
        )
        owner = _owner(body)
        return await remove_all(self._client, self._settings.namespace, kinds, everything, owner.uid)

    async def _invalid_spec(self, body: Mapping[str, Any], err: SpecError) -> None:
        await self._warn_once(body, "InvalidSpec", str(err))
        try:
            daemonset = await self._client.find(DAEMON_SET, NAMES.daemonset, self._settings.namespace)
            observation = Observation(
                generation=int(body["metadata"].get("generation", 0)),
                management_state=None,
                spec_error=str(err),
                daemonset=daemonset,
            )
            await self._write_status(body, observation)
        except ApiError as status_err:
            log.warning("Could not report the invalid spec in the status: %s", status_err)

    async def _report(self, body: Mapping[str, Any], result: ApplyResult, trigger: Trigger) -> None:
        if result.changes:
            message = "; ".join(map(str, result.changes))
            log.info("%s: %s", trigger.event_reason, message)
            await self._post_event(body, "Normal", trigger.event_reason, message)
        if result.failures:
            await self._warn_once(body, "ReconcileFailed", "; ".join(map(str, result.failures)))
        else:
            self._last_warning = None

    async def _warn_once(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        """Log and post a warning, but not again every resync while it stays the same."""
        log.warning("%s: %s", reason, message)
        if message != self._last_warning:
            await self._post_event(body, "Warning", reason, message)
        self._last_warning = message

    async def _post_event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Best effort: a lost event must not fail the pass."""
        try:
            event = event_body(involved_object(body), type_, reason, message, component=OPERATOR_NAME)
            await post_event(self._client, event)
        except ApiError as err:
            log.warning("Could not post the %s event: %s", reason, err)

    async def _write_status(self, body: Mapping[str, Any], observation: Observation) -> None:
        uid = str(body["metadata"].get("uid"))
        previous = body.get("status")
        if self._written_status is not None and self._written_status[0] == uid:
            previous = self._written_status[1]
        status = build_status(
            observation, previous=previous, version=self._settings.version, now=self._clock()
        )
        if status == previous and status == body.get("status"):
            return  # (the body may be older than what was written last: then write again, harmlessly)
        try:
            name = body["metadata"]["name"]
            await self._client.merge_patch(CLUSTER_CSI_DRIVER, name, {"status": status}, sub="status")
        except ApiError as err:
            if err.not_found:
                return
            raise
        self._written_status = (uid, status)

    def _set_operator_log_level(self, spec: OperatorSpec) -> None:
        level = spec.operator_log_level.python_level
        if level != self._log_level:
            logging.getLogger().setLevel(level)
            self._log_level = level

    def _freshest(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The given body, unless an earlier caller already saw a newer generation of the same object."""
        given = copy.deepcopy(dict(body))
        newest = self._newest
        if (
            newest is not None
            and newest["metadata"].get("uid") == given["metadata"].get("uid")
            and _generation(newest) > _generation(given)
            and not given["metadata"].get("deletionTimestamp")
        ):
            return newest
        self._newest = given
        return given


def _generation(body: Mapping[str, Any]) -> int:
    return int(body["metadata"].get("generation", 0))


def _owner(body: Mapping[str, Any]) -> Owner:
    return Owner(name=body["metadata"]["name"], uid=str(body["metadata"]["uid"]))


def _token_requests_of(csidriver: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], ...] | None:
    if csidriver is None:
        return None
    requests = csidriver.get("spec", {}).get("tokenRequests")
    return None if requests is None else tuple(requests)
