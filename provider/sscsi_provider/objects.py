"""The `objects` SecretProviderClass parameter and the values the provider serves.

Format (same as the upstream e2e provider)::

    objects: |
      array:
        - |
          objectName: foo
          objectVersion: v1
        - |
          objectName: fookey

The outer document is a mapping with the key ``array``; every item is itself a YAML
string that decodes to a mapping with a required ``objectName``.

Built-in values: ``foo`` is ``secret``, ``fookey`` is a small PEM public-key block,
any other name has empty contents.

Extensions (not in upstream; all optional, per object):

``objectVersion``
    Version string reported while not rotated (default ``v1``).
``objectAlias``
    File path used instead of ``objectName``. The version id stays
    ``secret/<objectName>``. The path is passed through unchecked; validating it
    is the driver's job.
``objectContent``
    Literal string used as the contents (UTF-8).
``objectSize``
    Integer; the contents become that many bytes generated deterministically by
    repeating ``<objectName>\\n``. Mutually exclusive with ``objectContent``.
``objectMode``
    File mode: an integer (YAML ``0644`` is already octal, ``420`` is decimal) or an
    octal string such as ``"0644"``/``"0o644"``/``"644"``. Default 0, as upstream.

Unknown keys are ignored, as upstream does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

DEFAULT_VERSION = "v1"
ROTATED_VERSION = "v2"
ROTATED_CONTENTS = b"rotated"
MAX_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MODE = 0o777

MOCK_PUBLIC_KEY = b"-----BEGIN PUBLIC KEY-----\nThis is mock key\n-----END PUBLIC KEY-----\n"

BUILTIN_VALUES: dict[str, bytes] = {
    "foo": b"secret",
    "fookey": MOCK_PUBLIC_KEY,
}


class ObjectsError(ValueError):
    """The `objects` parameter is missing or malformed; the message names the problem."""


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    version: str | None = None
    alias: str | None = None
    content: str | None = None
    size: int | None = None
    mode: int | None = None

    @property
    def path(self) -> str:
        return self.alias if self.alias is not None else self.name

    @property
    def version_id(self) -> str:
        return f"secret/{self.name}"

    def contents(self) -> bytes:
        """The unrotated value of this object."""
        if self.content is not None:
            return self.content.encode()
        if self.size is not None:
            return generated_contents(self.name, self.size)
        return BUILTIN_VALUES.get(self.name, b"")


def generated_contents(name: str, size: int) -> bytes:
    """`size` bytes made by repeating ``name + "\\n"``; the same inputs give the same bytes."""
    if size <= 0:
        return b""
    unit = (name + "\n").encode()
    repeats = size // len(unit) + 1
    return (unit * repeats)[:size]


def parse_mode(value: object) -> int:
    """An int (already decoded) or an octal string -> permission bits (0..0o777)."""
    if isinstance(value, bool):
        raise ValueError("must be an integer or an octal string, not a boolean")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower()
        text = text.removeprefix("0o")
        if not text or any(c not in "01234567" for c in text):
            raise ValueError(f"{value!r} is not an octal mode")
        mode = int(text, 8)
    else:
        raise ValueError(f"must be an integer or an octal string, got {type(value).__name__}")
    if not 0 <= mode <= MAX_MODE:
        raise ValueError(f"{mode:#o} is outside 0..0o777")
    return mode


def _optional_str(item: dict[str, Any], key: str, where: str) -> str | None:
    if key not in item or item[key] is None:
        return None
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ObjectsError(f"{where}: {key} must be a string")
    return str(value)


def _parse_item(raw: object, index: int) -> ObjectSpec:
    where = f"objects item {index}"
    if not isinstance(raw, str):
        raise ObjectsError(f"{where}: expected a YAML string, got {type(raw).__name__}")
    try:
        item = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ObjectsError(f"{where}: invalid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(item, dict):
        raise ObjectsError(f"{where}: expected a mapping with objectName")
    # Other keys are ignored, as upstream does, so manifests written for other providers still parse.
    name = item.get("objectName")
    if not isinstance(name, str) or not name.strip():
        raise ObjectsError(f"{where}: objectName is required and must be a non-empty string")
    where = f"object {name!r}"

    version = _optional_str(item, "objectVersion", where)
    alias = _optional_str(item, "objectAlias", where)
    if alias is not None and not alias:
        raise ObjectsError(f"{where}: objectAlias must not be empty")
    content = _optional_str(item, "objectContent", where)

    size: int | None = None
    if item.get("objectSize") is not None:
        raw_size = item["objectSize"]
        if isinstance(raw_size, bool) or not isinstance(raw_size, (int, str)):
            raise ObjectsError(f"{where}: objectSize must be an integer")
        try:
            size = int(raw_size)
        except ValueError:
            raise ObjectsError(f"{where}: objectSize must be an integer") from None
        if not 0 <= size <= MAX_OBJECT_SIZE:
            raise ObjectsError(f"{where}: objectSize must be between 0 and {MAX_OBJECT_SIZE}")
    if size is not None and content is not None:
        raise ObjectsError(f"{where}: objectContent and objectSize are mutually exclusive")

    mode: int | None = None
    if item.get("objectMode") is not None:
        try:
            mode = parse_mode(item["objectMode"])
        except ValueError as exc:
            raise ObjectsError(f"{where}: objectMode {exc}") from None

    return ObjectSpec(name=name, version=version, alias=alias, content=content, size=size, mode=mode)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Only the problem and its position: never echo the document itself.
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "syntax error"
        mark = exc.problem_mark
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem
    return type(exc).__name__


def parse_objects(raw: str | None) -> list[ObjectSpec]:
    """Decode the `objects` attribute; raises ObjectsError naming what is wrong."""
    if raw is None or not raw.strip():
        raise ObjectsError("objects is not set")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ObjectsError(f"objects is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(doc, dict) or "array" not in doc:
        raise ObjectsError("objects must be a mapping with the key 'array'")
    items = doc["array"]
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ObjectsError("objects.array must be a list of YAML strings")
    return [_parse_item(item, i) for i, item in enumerate(items)]
