"""chaos.verdicts: what invariant 1 and 2 find wrong in a volume or a synced Secret."""

from __future__ import annotations

import base64

from chaos import stamps
from chaos.load import SpcSpec
from chaos.verdicts import Lingering, VolumeVerdict, judge_secret, judge_volume

SPEC = SpcSpec("chaos-plain", ("alpha", "beta"), "salt")
NOW = 3000.0  # version 1000 with a 3 s period


def files(version: int, pod: str = "p", **override: bytes) -> dict[str, bytes]:
    out = {o: stamps.line("salt", "ns", pod, o, version).encode() for o in SPEC.objects}
    out.update(override)
    return out


def judge(got: dict[str, bytes], allowed: float = 30.0) -> VolumeVerdict:
    return judge_volume(got, SPEC, "ns", "p", NOW, 3, allowed)


def test_a_current_volume_is_fine() -> None:
    verdict = judge(files(999))
    assert verdict.problems == [] and verdict.version == 999 and verdict.lost_bytes == 0
    assert len(verdict.digests) == 2


def test_missing_empty_partial_and_foreign_files_are_lost_bytes() -> None:
    good = files(999)
    for broken in (
        {"alpha": good["alpha"]},
        files(999, alpha=b""),
        files(999, alpha=good["alpha"][:30]),
        files(999, alpha=stamps.line("salt", "ns", "q", "alpha", 999).encode()),
        files(999, alpha=stamps.line("salt", "ns", "p", "beta", 999).encode()),
        files(999, alpha=stamps.line("other", "ns", "p", "alpha", 999).encode()),
    ):
        verdict = judge(broken)
        assert len(verdict.problems) == 1 and verdict.lost_bytes > 0, verdict


def test_mixed_versions_stale_and_extra_files() -> None:
    assert any("mix" in p for p in judge(files(999, beta=files(998)["beta"])).problems)
    stale = judge(files(980))
    assert stale.lost_bytes == 0 and any("stale" in p for p in stale.problems)
    assert judge(files(980), allowed=100.0).problems == []
    assert any("not in the SPC" in p for p in judge({**files(999), "x": b"y"}).problems)


def test_secret_from_a_pod_that_mounted_it() -> None:
    spec = SpcSpec("chaos-sync-b", ("bravo",), "salt", secret="chaos-b")
    data = {"bravo": base64.b64encode(stamps.line("salt", "ns", "p", "bravo", 5).encode()).decode()}
    assert judge_secret(data, spec, "ns", ["p"])[0] == []
    assert "never mounted" in judge_secret(data, spec, "ns", ["q"])[0][0]
    assert judge_secret(data, spec, "other", ["p"])[0]
    assert judge_secret({"bravo": base64.b64encode(b"junk").decode()}, spec, "ns", ["p"])[0]


def test_lingering_reports_past_grace_and_forgets_what_went() -> None:
    lingering = Lingering()

    def ten(since: float) -> float:
        return 10.0

    assert lingering.observe(["a", "b"], 0.0, ten) == []
    assert lingering.observe(["a", "b"], 11.0, ten) == [("a", 11.0), ("b", 11.0)]
    assert lingering.observe(["b"], 12.0, ten) == [("b", 12.0)]
    assert lingering.observe(["a"], 13.0, ten) == []  # a came back: counted from now
    assert lingering.observe(["a"], 30.0, lambda since: 20.0 if since == 13.0 else 0.0) == []
