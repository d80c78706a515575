"""The desired Secret (secret_desired): built from the mounted files, merged into what the cluster has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sscsi_driver import atomic_writer
from sscsi_driver.models import MANAGED_LABEL, SecretKeyRef, SecretObject
from sscsi_driver.secret_desired import (
    DesiredSecret,
    SyncError,
    build_all,
    build_secret,
    merge_owners,
    needs_recreate,
    new_object,
    owner_refs,
    up_to_date,
    updated_object,
)

from unit.sscsi_driver.sync_world import PLANTED, World, b64, opaque, ref_of, rs_owner

# ---- building data ----


def test_build_secret_reads_files_and_aliases(tmp_path: Path) -> None:
    World.write(tmp_path, {"foo": b"secret", "certs/alias.pem": b"\x00\xffbinary"})
    files = atomic_writer.read_mounted_files(tmp_path)
    obj = SecretObject(
        " mysecret ",
        " Opaque ",
        labels={"environment": "test"},
        annotations={"team": "a"},
        data=(SecretKeyRef(" foo ", " username "), SecretKeyRef("certs/alias.pem", "blob")),
    )
    desired = build_secret(obj, files)
    assert desired == DesiredSecret(
        name="mysecret",
        type="Opaque",
        data={"username": b64(b"secret"), "blob": b64(b"\x00\xffbinary")},
        labels={"environment": "test", MANAGED_LABEL: "true"},
        annotations={"team": "a"},
    )
    assert b64(b"secret") not in repr(desired)  # data is kept out of reprs


def test_managed_label_cannot_be_overridden(tmp_path: Path) -> None:
    World.write(tmp_path, {"foo": b"x"})
    obj = opaque(labels={MANAGED_LABEL: "false"})
    assert build_secret(obj, atomic_writer.read_mounted_files(tmp_path)).labels[MANAGED_LABEL] == "true"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (opaque(type=""), "type is not set for Secret foosecret"),
        (opaque(type="  "), "type is not set for Secret foosecret"),
        (opaque("s", ("missing", "k")), "file matching objectName missing not found in the pod"),
        (SecretObject("", "Opaque", data=(SecretKeyRef("foo", "k"),)), "secretName is not set"),
        (SecretObject("s", "Opaque"), "data is not set for Secret s"),
        (opaque("s", ("", "k")), "objectName is not set"),
        (opaque("s", ("foo", " ")), "key is not set for objectName foo"),
        (opaque("s", ("foo", "k"), ("foo", "k")), "key k appears more than once"),
        (opaque("s", ("foo", "other"), type="kubernetes.io/tls"), "key other is not allowed"),
        (opaque("s", ("foo", "tls.key"), type="kubernetes.io/tls"), "bad TLS material in objectName foo"),
    ],
)
def test_build_secret_errors(tmp_path: Path, obj: SecretObject, message: str) -> None:
    World.write(tmp_path, {"foo": PLANTED})
    with pytest.raises(SyncError, match=message) as info:
        build_secret(obj, atomic_writer.read_mounted_files(tmp_path))
    assert PLANTED.decode() not in info.value.message


def test_build_tls_secret(tmp_path: Path, pem: tuple[bytes, bytes]) -> None:
    key, cert = pem
    World.write(tmp_path, {"bundle": cert + key})
    obj = opaque("tls", ("bundle", "tls.key"), ("bundle", "tls.crt"), type="kubernetes.io/tls")
    desired = build_secret(obj, atomic_writer.read_mounted_files(tmp_path))
    assert desired.data == {"tls.key": b64(key), "tls.crt": b64(cert)}
    with pytest.raises(SyncError, match=r"needs both tls\.crt and tls\.key"):
        build_secret(
            opaque("tls", ("bundle", "tls.crt"), type="kubernetes.io/tls"),
            atomic_writer.read_mounted_files(tmp_path),
        )


def test_merge_owners_never_drops() -> None:
    existing = [rs_owner("a"), {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "x1"}]
    merged = merge_owners(existing, [ref_of(rs_owner("b")), ref_of(rs_owner("a"))])
    assert merged == [*existing, ref_of(rs_owner("b"))]


def test_build_all_gives_one_result_per_object_in_order(tmp_path: Path) -> None:
    World.write(tmp_path, {"foo": b"x"})
    results = build_all([opaque("a"), opaque("b", ("missing", "k")), opaque("a"), opaque("c")], tmp_path)
    assert [r.name if isinstance(r, DesiredSecret) else r.message for r in results] == [
        "a",
        "file matching objectName missing not found in the pod",
        "secretName a appears more than once in secretObjects",
        "c",
    ]


def test_build_all_without_the_mounted_files_fails_every_object(tmp_path: Path) -> None:
    results = build_all([opaque("a"), opaque("b")], tmp_path / "gone")
    assert len(results) == 2
    assert all(isinstance(r, SyncError) and "cannot read the mounted files" in r.message for r in results)


def test_owner_refs_keep_identity_fields_only() -> None:
    refs = [
        {**rs_owner("web"), "controller": True, "blockOwnerDeletion": True},
        {"apiVersion": "v1", "kind": "Pod", "name": "no-uid"},
    ]
    assert owner_refs(refs) == [ref_of(rs_owner("web"))]


def _desired(**changes: Any) -> DesiredSecret:
    fields: dict[str, Any] = {
        "name": "s",
        "type": "Opaque",
        "data": {"k": b64(b"v")},
        "labels": {MANAGED_LABEL: "true", "ours": "1"},
        "annotations": {"note": "ours"},
    }
    return DesiredSecret(**(fields | changes))


def _existing(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "s",
            "namespace": "app",
            "uid": "u1",
            "resourceVersion": "7",
            "labels": {MANAGED_LABEL: "true", "ours": "1", "theirs": "x"},
            "annotations": {"note": "ours", "other-tool": "y"},
            "ownerReferences": [rs_owner("web")],
            "managedFields": [{"manager": "kubectl"}],
        },
        "type": "Opaque",
        "data": {"k": b64(b"v")},
    }
    return obj | changes


def test_up_to_date_tolerates_other_tools_but_not_missing_owners_or_changed_data() -> None:
    owners = [ref_of(rs_owner("web"))]
    assert up_to_date(_existing(), _desired(), owners)
    assert not up_to_date(_existing(), _desired(), [*owners, ref_of(rs_owner("api"))])
    assert not up_to_date(_existing(data={"k": b64(b"old")}), _desired(), owners)
    assert not up_to_date(_existing(), _desired(labels={MANAGED_LABEL: "true", "ours": "2"}), owners)
    assert not up_to_date(_existing(type="kubernetes.io/basic-auth"), _desired(), owners)


def test_only_a_type_change_or_an_immutable_change_needs_a_recreate() -> None:
    assert not needs_recreate(_existing(), _desired())
    assert not needs_recreate(_existing(data={"k": "old"}), _desired())
    assert needs_recreate(_existing(type="kubernetes.io/tls"), _desired())
    assert needs_recreate({k: v for k, v in _existing().items() if k != "type"}, _desired(type="x/y"))
    assert not needs_recreate(_existing(immutable=True), _desired())
    assert needs_recreate(_existing(immutable=True, data={"k": "old"}), _desired())


def test_updated_object_merges_and_keeps_the_lock() -> None:
    existing = _existing(data={"k": b64(b"old")}, stringData={"plain": "dropped"})
    body = updated_object(
        existing, _desired(labels={MANAGED_LABEL: "true", "ours": "2"}), [ref_of(rs_owner("api"))]
    )
    meta = body["metadata"]
    assert body["data"] == {"k": b64(b"v")} and "stringData" not in body
    assert meta["resourceVersion"] == "7" and meta["uid"] == "u1" and "managedFields" not in meta
    assert meta["labels"] == {MANAGED_LABEL: "true", "ours": "2", "theirs": "x"}
    assert meta["annotations"] == {"note": "ours", "other-tool": "y"}
    assert meta["ownerReferences"] == [rs_owner("web"), ref_of(rs_owner("api"))]
    assert existing["data"] == {"k": b64(b"old")}  # the cached object is not modified


def test_new_object_carries_exactly_the_desired_secret() -> None:
    owners = [ref_of(rs_owner("web"))]
    assert new_object("app", _desired(), owners) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "s",
            "namespace": "app",
            "labels": {MANAGED_LABEL: "true", "ours": "1"},
            "annotations": {"note": "ours"},
            "ownerReferences": owners,
        },
        "type": "Opaque",
        "data": {"k": b64(b"v")},
    }
    bare = new_object("app", _desired(annotations={}), [])
    assert "annotations" not in bare["metadata"] and "ownerReferences" not in bare["metadata"]
