"""One error for every failed API call: the apiserver's status, or 503 when it could not be reached."""

from __future__ import annotations

import json


class ApiError(Exception):
    """An apiserver answer >= 400, or a transport failure mapped to 503 ServiceUnavailable.

    `message` is the apiserver's message (or "<status> <reason>" when it gave none);
    `str(err)` adds the status and reason.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{message} ({status} {reason})" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message or f"{status} {reason}"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def unavailable(self) -> bool:
        return self.status == 503

    @property
    def immutable_field(self) -> bool:
        return self.status == 422 and "field is immutable" in self.message


def from_reply(status: int, reason_phrase: str, body: bytes) -> ApiError:
    """The error an apiserver answer carries (a Status document, or whatever text came back)."""
    try:
        doc = json.loads(body)
        return ApiError(status, str(doc.get("reason", "")), str(doc.get("message", "")))
    except (ValueError, AttributeError):
        return ApiError(status, reason_phrase, body[:300].decode("utf-8", "replace"))


def from_transport(err: BaseException) -> ApiError:
    """Refused or reset, TLS failure, timeout, a broken answer: the apiserver is unavailable to us."""
    return ApiError(503, "ServiceUnavailable", f"apiserver unreachable: {err!r}")
