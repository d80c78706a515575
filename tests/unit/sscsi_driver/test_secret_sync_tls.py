"""PEM framing and the tls.key / tls.crt split of `kubernetes.io/tls` Secrets, with real openssl material."""

from __future__ import annotations

import base64
import contextlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sscsi_driver import tls


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A self-signed RSA cert + PKCS#8 key, a second cert, and traditional RSA/EC and encrypted keys."""
    d: Path = tmp_path_factory.mktemp("tls")
    for name in ("a", "b"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}.test",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt"),
        )  # fmt: skip
    rsa_pkcs8 = (d / "a.key").read_bytes()
    ec_pkcs8 = openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    return {
        "cert": (d / "a.crt").read_bytes(),
        "cert2": (d / "b.crt").read_bytes(),
        "key": rsa_pkcs8,
        "rsa_traditional": openssl("pkey", "-traditional", stdin=rsa_pkcs8),
        "ec_traditional": openssl("pkey", "-traditional", stdin=ec_pkcs8),
        "encrypted_pkcs8": openssl("pkey", "-aes256", "-passout", "pass:x", stdin=rsa_pkcs8),
        "encrypted_traditional": openssl(
            "pkey", "-traditional", "-aes256", "-passout", "pass:x", stdin=rsa_pkcs8
        ),
    }


def test_split_key_and_certificates(material: dict[str, bytes]) -> None:
    bundle = b"subject=CN = a.test\n" + material["cert"] + material["key"] + material["cert2"]
    assert tls.private_key_pem(bundle) == material["key"]
    crt = tls.certificates_pem(bundle)
    assert crt == material["cert"] + material["cert2"]
    assert b"PRIVATE" not in crt


def test_output_is_a_valid_pem_for_openssl(material: dict[str, bytes], tmp_path: Path) -> None:
    bundle = material["key"].replace(b"\n", b"\r\n") + b"\n\n" + material["cert"]
    (tmp_path / "k").write_bytes(tls.private_key_pem(bundle))
    (tmp_path / "c").write_bytes(tls.certificates_pem(bundle))
    key_mod = openssl("rsa", "-noout", "-modulus", "-in", str(tmp_path / "k"))
    crt_mod = openssl("x509", "-noout", "-modulus", "-in", str(tmp_path / "c"))
    assert key_mod == crt_mod  # the key still matches the certificate


@pytest.mark.parametrize("kind", ["rsa_traditional", "ec_traditional", "key"])
def test_key_formats_pass_through_unchanged(material: dict[str, bytes], kind: str) -> None:
    key = material[kind]
    assert tls.private_key_pem(material["cert"] + key) == key


def test_first_private_key_wins(material: dict[str, bytes]) -> None:
    bundle = material["ec_traditional"] + material["key"] + material["cert"]
    assert tls.private_key_pem(bundle) == material["ec_traditional"]


@pytest.mark.parametrize("kind", ["encrypted_pkcs8", "encrypted_traditional"])
def test_encrypted_keys_are_refused(material: dict[str, bytes], kind: str) -> None:
    with pytest.raises(tls.TlsError, match="encrypted"):
        tls.private_key_pem(material[kind] + material["cert"])


def test_missing_parts(material: dict[str, bytes]) -> None:
    with pytest.raises(tls.TlsError, match="no private key found"):
        tls.private_key_pem(material["cert"])
    with pytest.raises(tls.TlsError, match="no certificate found"):
        tls.certificates_pem(material["key"])
    with pytest.raises(tls.TlsError, match=r"no PEM blocks found.*PKCS#12"):
        tls.private_key_pem(b"\x30\x82\x01\x00 binary pfx")


def test_unsupported_key_type() -> None:
    block = tls.PemBlock("DSA PRIVATE KEY", b"\x30\x00").encode()
    with pytest.raises(tls.TlsError, match="unsupported private key type 'DSA PRIVATE KEY'"):
        tls.private_key_pem(block)


def _block(label: str, body: str) -> bytes:
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


GOOD_BODY = base64.b64encode(b"\x30\x03\x02\x01\x05").decode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"-----END CERTIFICATE-----\n", "END line without a matching BEGIN"),
        (
            f"-----BEGIN CERTIFICATE-----\n{GOOD_BODY}\n-----END PRIVATE KEY-----\n".encode(),
            "BEGIN 'CERTIFICATE' block closed by END 'PRIVATE KEY'",
        ),
        (f"-----BEGIN CERTIFICATE-----\n{GOOD_BODY}\n".encode(), "has no END line"),
        (
            b"-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n",
            "BEGIN line inside the unterminated",
        ),
        (_block("CERTIFICATE", "not*base64!"), "not valid base64"),
        (_block("CERTIFICATE", GOOD_BODY[:-2]), "not valid base64"),  # missing padding
        (_block("CERTIFICATE", ""), "is empty"),
        (_block("CERTIFICATE", base64.b64encode(b"hello world").decode()), "does not hold a DER"),
        (_block("CERTIFICATE", base64.b64encode(b"\x30\x05\x02\x01").decode()), "does not hold a DER"),
    ],
)
def test_broken_framing(data: bytes, message: str) -> None:
    with pytest.raises(tls.TlsError, match=message):
        tls.parse_pem(data)


def test_der_length_forms() -> None:
    long_der = b"\x30\x81\x80" + b"\x00" * 0x80
    assert tls.parse_pem(tls.PemBlock("CERTIFICATE", long_der).encode())[0].der == long_der
    with pytest.raises(tls.TlsError, match="DER"):  # long form for a short length is not DER
        tls.parse_pem(_block("CERTIFICATE", base64.b64encode(b"\x30\x81\x01\x00").decode()))


def test_errors_never_contain_material(material: dict[str, bytes]) -> None:
    body_line = material["key"].splitlines()[1].decode()
    broken = material["key"].replace(body_line.encode(), body_line[:-1].encode() + b"*")
    with pytest.raises(tls.TlsError) as info:
        tls.private_key_pem(broken)
    assert body_line[:20] not in str(info.value)


@settings(max_examples=200)
@given(st.binary(min_size=0, max_size=300))
def test_canonical_encoding_round_trips(payload: bytes) -> None:
    der = _sequence(payload)
    [block] = tls.parse_pem(tls.PemBlock("CERTIFICATE", der).encode())
    assert block.der == der


@settings(max_examples=300)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_arbitrary_input_only_raises_tls_error(data: bytes) -> None:
    with contextlib.suppress(tls.TlsError):
        tls.parse_pem(b"-----BEGIN CERTIFICATE-----\n" + data + b"\n-----END CERTIFICATE-----\n")


def _sequence(payload: bytes) -> bytes:
    n = len(payload)
    if n < 0x80:
        return b"\x30" + bytes([n]) + payload
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x30" + bytes([0x80 | len(size)]) + size + payload
