"""The operator's wiring: command line, kopf settings and the handlers it registers."""

from __future__ import annotations

import logging

import kopf
import pytest
from sscsi_operator import handlers
from sscsi_operator.consumers import DriverUsers
from sscsi_operator.main import DEFAULT_LIVENESS, _quiet_child_watchers, build_parser
from sscsi_operator.names import FINALIZER, MANAGED_SELECTOR
from sscsi_operator.reconcile import Outcome
from sscsi_operator.settings import Settings


def test_command_line_defaults_and_flags() -> None:
    defaults = build_parser().parse_args([])
    assert defaults.peering is None  # standalone
    assert defaults.liveness == DEFAULT_LIVENESS
    assert defaults.resync_interval == 30.0
    assert defaults.namespace is None and defaults.kubeconfig is None
    given = build_parser().parse_args(
        ["--peering=sscsi", "--priority=7", "--namespace=ns", "--resync-interval=5", "--liveness=off"]
    )
    assert (given.peering, given.priority, given.namespace, given.resync_interval, given.liveness) == (
        "sscsi",
        7,
        "ns",
        5.0,
        "off",
    )


def test_kopf_settings() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings)
    assert settings.persistence.finalizer == FINALIZER
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.posting.enabled is False
    assert settings.scanning.disabled is True
    assert list(settings.watching.field_selectors.values()) == ["metadata.name=secrets-store.csi.k8s.io"]
    assert set(settings.watching.label_selectors.values()) == {MANAGED_SELECTOR}
    assert len(list(settings.watching.label_selectors)) == len(handlers.WATCHED_KINDS) == 6


def test_registered_handlers() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Settings.from_environment({"OPERAND_NAMESPACE": "ns"}))
    changing = registry._changing.get_all_handlers()
    reconcile = [h for h in changing if h.id == "reconcile"]
    assert {h.reason for h in reconcile} == {kopf.Reason.CREATE, kopf.Reason.UPDATE, None}
    assert [h.initial for h in reconcile if h.reason is None] == [True]  # resume
    [finalize] = [h for h in changing if h.id == "finalize"]
    assert finalize.reason == kopf.Reason.DELETE and finalize.requires_finalizer
    assert [h.id for h in registry._spawning.get_all_handlers()] == ["resync", "restart-on-rotation"]
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert watching == {f"watch-{kind.plural}" for kind in handlers.WATCHED_KINDS} | {"force-removal"}


def test_child_watcher_lines_are_dropped_but_failures_kept() -> None:
    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    assert not _quiet_child_watchers(record(logging.INFO, "Handler 'watch-daemonsets' succeeded."))
    assert _quiet_child_watchers(
        record(logging.ERROR, "Handler 'watch-daemonsets' failed with an exception.")
    )
    assert not _quiet_child_watchers(record(logging.INFO, "Handler 'force-removal' succeeded."))
    assert _quiet_child_watchers(record(logging.INFO, "Handler 'reconcile' succeeded."))


class _FinalizeReturns:
    def __init__(self) -> None:
        self.outcome = Outcome()

    async def finalize(self, body: object) -> Outcome:
        return self.outcome


async def test_the_finalizer_retries_sooner_or_later_depending_on_what_it_waits_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub = _FinalizeReturns()
    monkeypatch.setattr(handlers._Runtime, "reconciler", property(lambda self: stub))
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Settings.from_environment({"OPERAND_NAMESPACE": "ns"}))
    [finalize] = [h for h in registry._changing.get_all_handlers() if h.id == "finalize"]
    cases = [
        (Outcome(error="removal waits for 1 pod", waiting_for=DriverUsers(("app/reader",))), 5),
        (Outcome(error="waiting for Service ns/metrics", pending=True), handlers.FINALIZE_POLL_SECONDS),
        (Outcome(error="delete DaemonSet ns/node: forbidden"), handlers.RETRY_DELAY_SECONDS),
    ]
    for outcome, delay in cases:
        stub.outcome = outcome
        with pytest.raises(kopf.TemporaryError) as raised:
            await finalize.fn(body={})
        assert (str(raised.value), raised.value.delay) == (outcome.error, delay)
    stub.outcome = Outcome()
    await finalize.fn(body={})  # done: kopf releases the finalizer
