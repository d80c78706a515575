"""Trust in a provider socket: who may have put `<provider>.sock` where the driver looks.

The driver runs as root and hands each provider the pod's service-account tokens and
parameters, so a socket planted in a provider directory by an unexpected user would
receive them. A socket is used only when

- it is a socket (after following a symlink, whose own owner must be trusted too),
- its owner is root, the owner of the directory it lies in (a provider running as a
  non-root user in a directory it owns), or a uid listed in --provider-socket-allowed-uids,
- it is neither group- nor other-writable.

Upstream uses any path that exists.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

ALLOWED_UIDS_FLAG = "--provider-socket-allowed-uids"


class UntrustedSocket(Exception):
    """The socket must not be used; the message says why and what to change."""


def check_socket(path: Path, extra_uids: Iterable[int] = ()) -> None:
    """Raise UntrustedSocket unless `path` is a provider socket the driver may talk to."""
    try:
        link = os.lstat(path)
        directory = os.stat(path.parent)
        target = os.stat(path)
    except OSError as err:
        raise UntrustedSocket(f"provider socket {path} cannot be inspected: {err.strerror}") from None
    allowed = {0, directory.st_uid, *extra_uids}
    allowed_text = (
        f"root, the owner of {path.parent} (uid {directory.st_uid}) or a uid in {ALLOWED_UIDS_FLAG}"
    )
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in allowed:
        raise UntrustedSocket(
            f"provider socket {path} refused: it is a symlink owned by uid {link.st_uid}, not {allowed_text}"
        )
    if not stat.S_ISSOCK(target.st_mode):
        raise UntrustedSocket(f"provider socket {path} refused: it is not a unix socket")
    if target.st_uid not in allowed:
        raise UntrustedSocket(
            f"provider socket {path} refused: owned by uid {target.st_uid}, not {allowed_text}; "
            f"a socket planted by another user is never used (if this provider runs as uid "
            f"{target.st_uid}, add it to {ALLOWED_UIDS_FLAG})"
        )
    if target.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedSocket(
            f"provider socket {path} refused: mode {stat.S_IMODE(target.st_mode):04o} is group- or "
            f"other-writable; the provider should create it with umask 022 (e.g. mode 0755)"
        )
