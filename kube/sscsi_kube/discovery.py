"""What the apiserver serves, by the names kubectl accepts: `pods`, `pod`, `po`, `Pod`, `csv`,
`deployments.apps`, `operators.operators.coreos.com`.

One map per client, built from discovery (the core group, then each group's preferred version);
a group whose aggregated API is down (503) is left out rather than failing the lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .client import KubeClient
from .errors import ApiError
from .resources import Obj, Resource


def _resources(document: Obj, group: str, version: str) -> list[tuple[Resource, list[str]]]:
    found = []
    for item in document.get("resources") or []:
        plural = str(item.get("name", ""))
        if not plural or "/" in plural:  # subresources such as pods/log
            continue
        res = Resource(group, version, plural, str(item.get("kind", "")), bool(item.get("namespaced")))
        aliases = [
            plural,
            str(item.get("singularName") or ""),
            res.kind.lower(),
            *(item.get("shortNames") or []),
        ]
        found.append((res, [a for a in aliases if a]))
    return found


@dataclass
class ResourceMap:
    """Names -> Resource; the core group wins a bare name, as with kubectl (`events` is core/v1)."""

    by_name: dict[str, Resource] = field(default_factory=dict)

    def add(self, res: Resource, aliases: list[str]) -> None:
        for alias in aliases:
            self.by_name.setdefault(alias.lower(), res)
            if res.group:
                self.by_name.setdefault(f"{alias.lower()}.{res.group}", res)

    def resolve(self, name: str) -> Resource:
        try:
            return self.by_name[name.lower()]
        except KeyError:
            raise ApiError(404, "NotFound", f'the server doesn\'t have a resource type "{name}"') from None


async def discover(client: KubeClient) -> ResourceMap:
    found = ResourceMap()
    for res, aliases in _resources(await client.request("GET", "/api/v1"), "", "v1"):
        found.add(res, aliases)
    groups = (await client.request("GET", "/apis")).get("groups") or []
    for group in groups:
        # Every served version, the preferred one first: a kind may exist only in another version
        # (OLM's Subscription is v1alpha1 while operators.coreos.com prefers v2), and the first seen wins.
        preferred = (group.get("preferredVersion") or {}).get("version")
        served = [str(v.get("version")) for v in group.get("versions") or [] if v.get("version")]
        versions = ([preferred] if preferred else []) + [v for v in served if v != preferred]
        for version in versions:
            try:
                document = await client.request("GET", f"/apis/{group['name']}/{version}")
            except ApiError as err:
                if err.not_found or err.unavailable or err.status == 503:
                    continue  # e.g. an aggregated API whose server is not up
                raise
            for res, aliases in _resources(document, str(group["name"]), str(version)):
                found.add(res, aliases)
    return found
