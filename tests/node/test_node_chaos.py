"""The short chaos soak (issue 18) inside `make test`: a committed seed, every fault kind this machine can
produce at least once (overlapping, under pod churn and rotation every few seconds), then convergence
and cleanup; any broken invariant fails the test with the seed to replay it.

About 3 minutes: 15 s warm-up, 100 s of faults, the convergence and cleanup phases. Another seed:
SSCSI_CHAOS_SEED=<n> pytest tests/node/test_node_chaos.py; the long run is `make chaos` (docs/chaos.md).
The summary line, history.json and timeline.png go to chaos-results/<timestamp>/.
"""

from __future__ import annotations

import os

import pytest
from chaos.run import Settings, run
from harness.summary import add_summary_line
from nodesetup import ROTATION_SECONDS, Installation

SEED = int(os.environ.get("SSCSI_CHAOS_SEED", "18"))
FAULT_SECONDS = 100.0
WARMUP_SECONDS = 15.0


@pytest.mark.timeout(900)
def test_chaos_short(
    installation: Installation, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(
        seed=SEED,
        duration=FAULT_SECONDS,
        every_kind=True,
        warmup=WARMUP_SECONDS,
        rotation_seconds=ROTATION_SECONDS,
    )
    outcome = run(settings, installation.kube.kubeconfig)
    line = outcome.summary.line()
    add_summary_line(request.config, line)
    with capsys.disabled():  # printed whatever the outcome, like the fault matrix's line
        print(f"\n{line}  ({outcome.results})")
    replay = (
        f"replay: SSCSI_CHAOS_SEED={SEED} pytest tests/node/test_node_chaos.py; history in {outcome.results}"
    )
    assert not outcome.violations, "\n".join([*outcome.violations[:20], replay])
    assert set(outcome.summary.faults) == set(outcome.usable), f"every usable fault kind once; {replay}"
