"""The healthy recorded world, fresh per test, and a runner for the CLI against it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from sscsi_cli.main import UsageError, parser, run
from sscsi_cli.verdict import EXIT_USAGE

from .world import FakeCluster, healthy_cluster


@dataclass
class World:
    cluster: FakeCluster
    about: dict[str, Any]

    @property
    def pod(self) -> dict[str, Any]:
        return self.cluster.find("Pod", self.about["pod"])

    def doctor(self, *extra: str) -> tuple[int, dict[str, Any]]:
        code, out = self.cli("doctor", self.about["pod"], "-n", self.about["namespace"], "-o", "json", *extra)
        return code, json.loads(out)

    def links(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """Exit code and link name -> link (volume links prefixed with the volume name)."""
        code, report = self.doctor()
        out = {}
        for section in report["sections"]:
            prefix = f"{section['volume']}: " if "volume" in section else ""
            for link in section["links"]:
                out[prefix + link["link"]] = link
        return code, out

    def cli(self, *argv: str) -> tuple[int, str]:
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                code = asyncio.run(run(parser().parse_args(list(argv)), self.cluster))
            except UsageError as err:
                return EXIT_USAGE, str(err)
        return code, buffer.getvalue()


@pytest.fixture
def world() -> World:
    cluster, about = healthy_cluster()
    return World(cluster, about)
