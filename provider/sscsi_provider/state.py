"""Process-wide toggles shared by the gRPC servicer and the HTTP control server.

Every accessor takes the same lock, so the control server (its own threads) and the
gRPC worker threads always see a consistent view.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_ERROR_CODE = "E2EProviderInjectedError"
MAX_FAULT_SECONDS = 3600.0
# How often a hung Mount looks whether its caller is still there (a mode change wakes it at once).
HANG_CHECK_SECONDS = 0.2


class FaultMode(enum.StrEnum):
    """How later Mount calls misbehave (see the `service` module docstring)."""

    NONE = "none"
    ERROR_CODE = "error-code"
    UNAVAILABLE = "unavailable"
    SLOW = "slow"
    NO_VERSIONS = "no-versions"
    BAD_PATH = "bad-path"
    HANG = "hang"
    GARBAGE = "garbage"


@dataclass(frozen=True)
class Fault:
    mode: FaultMode = FaultMode.NONE
    code: str = ""
    seconds: float = 0.0

    @classmethod
    def build(cls, mode: str, *, code: str = "", seconds: str | float = 0.0) -> Fault:
        """Validate raw (HTTP query) values; raises ValueError with a readable message."""
        try:
            fault_mode = FaultMode(mode.strip().lower())
        except ValueError:
            allowed = ", ".join(m.value for m in FaultMode)
            raise ValueError(f"unknown fault mode {mode!r}; expected one of: {allowed}") from None
        try:
            secs = float(seconds) if seconds != "" else 0.0
        except ValueError:
            raise ValueError(f"seconds must be a number, got {seconds!r}") from None
        if not math.isfinite(secs) or secs < 0 or secs > MAX_FAULT_SECONDS:
            raise ValueError(f"seconds must be between 0 and {MAX_FAULT_SECONDS:g}")
        if fault_mode is FaultMode.SLOW and secs <= 0:
            raise ValueError("mode slow needs seconds > 0")
        code = code.strip()
        if fault_mode is FaultMode.ERROR_CODE and not code:
            code = DEFAULT_ERROR_CODE
        if fault_mode is not FaultMode.ERROR_CODE:
            code = ""
        if fault_mode is not FaultMode.SLOW:
            secs = 0.0
        return cls(mode=fault_mode, code=code, seconds=secs)


class ProviderState:
    """Thread-safe holder of the rotation flag, token audiences, fault and counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault_changed = threading.Condition(self._lock)
        self._hung = 0
        self._rotation = False
        self._audiences: tuple[str, ...] = ()
        self._fault = Fault()
        self._pods_seen: set[str] = set()
        self._mount_calls = 0

    # rotation -----------------------------------------------------------------
    def set_rotation(self, enabled: bool) -> None:
        with self._lock:
            self._rotation = enabled

    @property
    def rotation(self) -> bool:
        with self._lock:
            return self._rotation

    # token audiences ------------------------------------------------------------
    def set_required_audiences(self, audiences: list[str] | tuple[str, ...]) -> None:
        cleaned = tuple(dict.fromkeys(a.strip() for a in audiences if a.strip()))
        with self._lock:
            self._audiences = cleaned

    @property
    def required_audiences(self) -> tuple[str, ...]:
        with self._lock:
            return self._audiences

    # fault injection --------------------------------------------------------------
    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            self._fault = fault
            self._fault_changed.notify_all()

    def wait_while(
        self, mode: FaultMode, is_active: Callable[[], bool], *, check_seconds: float = HANG_CHECK_SECONDS
    ) -> Fault | None:
        """Block while the fault is `mode`; the fault then in force, or None once `is_active()` is false."""
        with self._fault_changed:
            self._hung += 1
            try:
                while self._fault.mode is mode:
                    if not is_active():
                        return None
                    self._fault_changed.wait(check_seconds)
                return self._fault
            finally:
                self._hung -= 1

    @property
    def hung_mounts(self) -> int:
        with self._lock:
            return self._hung

    @property
    def fault(self) -> Fault:
        with self._lock:
            return self._fault

    # pods and counters --------------------------------------------------------------
    def pod_seen(self, pod_uid: str) -> bool:
        with self._lock:
            return pod_uid in self._pods_seen

    def record_pod(self, pod_uid: str) -> None:
        with self._lock:
            self._pods_seen.add(pod_uid)

    def count_mount(self) -> int:
        with self._lock:
            self._mount_calls += 1
            return self._mount_calls

    @property
    def mount_calls(self) -> int:
        with self._lock:
            return self._mount_calls

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of every toggle (served by GET /state)."""
        with self._lock:
            return {
                "rotation": self._rotation,
                "required_audiences": list(self._audiences),
                "fault": {
                    "mode": self._fault.mode.value,
                    "code": self._fault.code,
                    "seconds": self._fault.seconds,
                },
                "mount_calls": self._mount_calls,
                "hung_mounts": self._hung,
                "pods_seen": len(self._pods_seen),
            }
