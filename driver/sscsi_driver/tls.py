"""PEM handling for `kubernetes.io/tls` Secrets: split one mounted bundle into `tls.key` and `tls.crt`.

Only the PEM framing is checked (BEGIN/END pairs, strict base64, a well-formed outer
DER SEQUENCE); nothing is decrypted or re-encoded into another key format, so the
driver needs no cryptography library. Error messages name block labels and positions,
never any of the material itself.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

CERTIFICATE = "CERTIFICATE"
# Labels Kubernetes, Go's crypto/tls and the common ingress controllers all load.
PRIVATE_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"})

_BEGIN = re.compile(r"-----BEGIN ([\x20-\x7e]*?)-----")
_END = re.compile(r"-----END ([\x20-\x7e]*?)-----")
_MAX_LABEL_SHOWN = 40


class TlsError(ValueError):
    """Unusable TLS material; the message is safe to log and to put in an Event."""


@dataclass(frozen=True, slots=True)
class PemBlock:
    label: str
    der: bytes = field(repr=False)
    encrypted: bool = False  # RFC 1421 `Proc-Type: 4,ENCRYPTED` header

    def encode(self) -> bytes:
        """Canonical PEM (RFC 7468): 64-column base64 body, LF line ends, no headers."""
        body = base64.b64encode(self.der)
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        label = self.label.encode()
        return (
            b"\n".join([b"-----BEGIN " + label + b"-----", *lines, b"-----END " + label + b"-----"]) + b"\n"
        )


def _shown(label: str) -> str:
    return repr(label if len(label) <= _MAX_LABEL_SHOWN else label[:_MAX_LABEL_SHOWN] + "...")


def _der_sequence_ok(der: bytes) -> bool:
    """True when `der` is exactly one DER SEQUENCE (tag 0x30) whose length covers all of it."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return 2 + first == len(der)
    count = first & 0x7F
    if count == 0 or count > 4 or len(der) < 2 + count or der[2] == 0:
        return False  # indefinite length, absurd sizes and non-minimal encodings are not DER
    length = int.from_bytes(der[2 : 2 + count], "big")
    return length >= 0x80 and 2 + count + length == len(der)


def parse_pem(data: bytes) -> list[PemBlock]:
    """Every PEM block in `data`, in order; text outside blocks is ignored (RFC 7468 allows it).

    Raises TlsError for broken framing: END without BEGIN, mismatched or missing END,
    a body that is not strict base64, or a body that is not one DER structure.
    """
    text = data.decode("ascii", errors="replace")
    blocks: list[PemBlock] = []
    label: str | None = None
    body: list[str] = []
    headers_allowed = False
    encrypted = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if label is None:
            begin = _BEGIN.fullmatch(line)
            if begin is not None:
                label, body, headers_allowed, encrypted = begin.group(1), [], True, False
            elif _END.fullmatch(line):
                raise TlsError(f"line {number}: END line without a matching BEGIN line")
            continue
        end = _END.fullmatch(line)
        if end is not None:
            if end.group(1) != label:
                raise TlsError(
                    f"line {number}: BEGIN {_shown(label)} block closed by END {_shown(end.group(1))}"
                )
            blocks.append(_decode_block(label, "".join(body), encrypted, len(blocks) + 1))
            label = None
            continue
        if _BEGIN.fullmatch(line):
            raise TlsError(f"line {number}: BEGIN line inside the unterminated {_shown(label)} block")
        if headers_allowed and ":" in line:  # RFC 1421 encapsulated headers precede the body
            name, _, value = line.partition(":")
            if name.strip().lower() == "proc-type" and "ENCRYPTED" in value.upper():
                encrypted = True
            continue
        headers_allowed = False  # a blank line ends the headers; a body line means there are none
        if line:
            body.append(line)
    if label is not None:
        raise TlsError(f"the {_shown(label)} block has no END line")
    return blocks


def _decode_block(label: str, body: str, encrypted: bool, index: int) -> PemBlock:
    where = f"PEM block {index} ({_shown(label)})"
    if not body:
        raise TlsError(f"{where} is empty")
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise TlsError(f"{where} is not valid base64") from None
    if not encrypted and not _der_sequence_ok(der):
        raise TlsError(f"{where} does not hold a DER structure")
    return PemBlock(label, der, encrypted)


def _blocks(data: bytes) -> list[PemBlock]:
    blocks = parse_pem(data)
    if not blocks:
        raise TlsError(
            "no PEM blocks found (PKCS#12/PFX and DER files are not supported: store the key and "
            "certificate as PEM)"
        )
    return blocks


def private_key_pem(data: bytes) -> bytes:
    """The private key of a PEM bundle, as one canonical PEM block.

    Upstream re-encodes PKCS#8 keys as PKCS#1/SEC 1. We pass the key block through in
    its own format instead (no cryptography dependency): `PRIVATE KEY` (PKCS#8),
    `RSA PRIVATE KEY` and `EC PRIVATE KEY` are all accepted by Kubernetes and by ingress
    controllers. As upstream, the first private key of the bundle is used.
    """
    for block in _blocks(data):
        if block.label == "ENCRYPTED PRIVATE KEY" or (
            block.encrypted and block.label.endswith("PRIVATE KEY")
        ):
            raise TlsError(f"the private key ({_shown(block.label)}) is encrypted; store it unencrypted")
        if block.label in PRIVATE_KEY_LABELS:
            return block.encode()
        if block.label.endswith("PRIVATE KEY"):
            raise TlsError(
                f"unsupported private key type {_shown(block.label)} "
                f"(use one of {', '.join(sorted(PRIVATE_KEY_LABELS))})"
            )
    raise TlsError("no private key found (expected a PEM block such as 'PRIVATE KEY')")


def certificates_pem(data: bytes) -> bytes:
    """Only the CERTIFICATE blocks of a PEM bundle, in order, as canonical PEM."""
    certs = [block for block in _blocks(data) if block.label == CERTIFICATE]
    if not certs:
        raise TlsError("no certificate found (expected a 'CERTIFICATE' PEM block)")
    for block in certs:
        if block.encrypted:
            raise TlsError("a CERTIFICATE block carries encryption headers")
    return b"".join(block.encode() for block in certs)
