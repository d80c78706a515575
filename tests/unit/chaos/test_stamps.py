"""chaos.stamps: the provider's stamp line is recomputed, parsed strictly, and its digest checked."""

from __future__ import annotations

import hashlib

from chaos import stamps


def test_line_matches_the_contract() -> None:
    want = hashlib.sha256(b"salt/ns/pod-1/foo/42").hexdigest()[:32]
    assert stamps.line("salt", "ns", "pod-1", "foo", 42) == f"ns/pod-1/foo v42 {want}\n"


def test_parse_round_trip_and_genuine() -> None:
    stamp = stamps.parse(stamps.line("s", "ns", "p", "foo", 7))
    assert stamp == stamps.Stamp("ns", "p", "foo", 7, stamps.digest("s", "ns", "p", "foo", 7))
    assert stamps.genuine(stamp, "s")
    assert not stamps.genuine(stamp, "other-salt")


def test_parse_refuses_partial_empty_and_doubled_lines() -> None:
    good = stamps.line("s", "ns", "p", "foo", 7)
    for bad in ("", good[:-1], good[:20], good + good, good.replace(" v7 ", " 7 "), good.upper()):
        assert stamps.parse(bad) is None, bad


def test_version_at_and_possible_digests() -> None:
    assert stamps.version_at(299.9, 3) == 99
    got = dict(stamps.possible_digests("s", "ns", "p", ["a", "b"], 5, 6))
    assert len(got) == 4 and got[stamps.digest("s", "ns", "p", "b", 6)] == "ns/p/b v6"


def test_digest_token_skips_longer_hex_runs() -> None:
    d = stamps.digest("s", "ns", "p", "a", 1)
    text = f"x {d} y {'a' * 64} z{d}\n".encode()
    assert stamps.DIGEST_TOKEN.findall(text) == [d.encode(), d.encode()]
