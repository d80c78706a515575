"""`python -m chaos --duration 60m --seed 7` (PYTHONPATH=tests:hack): the chaos soak on the real node.

`make chaos DURATION=60m SEED=7` runs it under `flock /run/sscsi-node.lock`. Brings the node up as
the real-node tier does (bringup.py), runs the load and the seeded faults (run.py), prints the summary
line and writes chaos-results/<timestamp>/{history.json,timeline.png}. Exit 1 on any violation, with
the seed to replay it; exit 2 when this machine cannot run the real node.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

from .bringup import NodeUnavailable, bring_up, save_pod_logs, tier_lock
from .run import Settings, run


def seconds(text: str) -> float:
    """`90`, `90s`, `15m`, `1h` -> seconds."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h)")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--duration", type=seconds, default=seconds("60m"), help="fault window (default 60m)")
    parser.add_argument(
        "--seed", type=int, default=None, help="replays a run (default: a random one, printed)"
    )
    parser.add_argument(
        "--every-kind", action="store_true", help="each fault kind once before repeats (the short version)"
    )
    parser.add_argument("--mean-gap", type=seconds, default=20.0, help="mean seconds between fault starts")
    parser.add_argument("--pool", type=int, default=8, help="pods kept running")
    parser.add_argument("--out", type=Path, default=None, help="results dir (default chaos-results/<ts>)")
    opts = parser.parse_args(argv)
    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    settings = Settings(
        seed=seed, duration=opts.duration, every_kind=opts.every_kind, mean_gap=opts.mean_gap, pool=opts.pool
    )
    with tier_lock():
        try:
            kubeconfig = bring_up()
        except NodeUnavailable as err:
            print(f"chaos: this machine cannot run the real node: {err}", file=sys.stderr)
            return 2
        try:
            outcome = run(settings, kubeconfig, opts.out)
        finally:
            save_pod_logs(kubeconfig)
    print(outcome.summary.line())
    print(f"chaos: history and timeline in {outcome.results}")
    if outcome.violations:
        for line in outcome.violations[:30]:
            print(f"chaos: {line}", file=sys.stderr)
        print(
            f"chaos: FAILED with {len(outcome.violations)} violation(s); replay: make chaos "
            f"DURATION={opts.duration:.0f}s SEED={seed}" + (" EVERY_KIND=1" if opts.every_kind else ""),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
