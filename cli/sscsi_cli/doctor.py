"""`doctor`: the chain from the pod to its secrets, judged link by link from gathered facts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checks_node import check_csidriver, check_csinode, check_driver_pod, check_operator
from .checks_sync import check_secrets
from .checks_volume import check_events, check_mount, check_provider, check_spc
from .facts import PodFacts
from .verdict import Link, Section, Verdict, exit_code, overall, skipped


@dataclass
class DoctorReport:
    pod: str
    node: str
    sections: list[Section]

    @property
    def links(self) -> list[Link]:
        return [link for section in self.sections for link in section.links]

    @property
    def exit_code(self) -> int:
        return exit_code(self.links)

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "node": self.node,
            "verdict": overall(self.exit_code),
            "exitCode": self.exit_code,
            "sections": [
                {"title": s.title, **s.details, "links": [link.to_json() for link in s.links]}
                for s in self.sections
            ],
        }


def diagnose(facts: PodFacts) -> DoctorReport:
    node = facts.node_name
    shared = Section(f"driver for pod {facts.namespace}/{facts.pod_name} on node {node or '(none)'}")
    shared.links += [check_operator(facts.cr), check_csidriver(facts.csidriver, facts.cr)]
    if node:
        shared.links += [check_driver_pod(facts), check_csinode(facts)]
    else:
        shared.links += [
            skipped("driver on the node", "the pod is not scheduled to a node yet"),
            skipped("CSINode registration", "the pod is not scheduled to a node yet"),
        ]
    sections = [shared]
    for volume in facts.volumes:
        section = Section(
            f"volume {volume.name} (SecretProviderClass {volume.spc_name or '?'})",
            details={"volume": volume.name, "secretProviderClass": volume.spc_name},
        )
        spc = check_spc(facts, volume)
        mount = check_mount(facts, volume)
        section.links += [
            spc,
            check_provider(facts, volume),
            mount,
            check_events(facts, volume),
            check_secrets(facts, volume, mounted=mount.verdict is Verdict.OK),
        ]
        sections.append(section)
    return DoctorReport(f"{facts.namespace}/{facts.pod_name}", node, sections)
