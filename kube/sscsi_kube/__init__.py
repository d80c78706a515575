"""The one Kubernetes access layer: resources, errors, client, watch caches, events, discovery.

Only this package talks HTTP to the apiserver (import-linter forbids httpx, httpx2, lightkube and
kubernetes everywhere else); the driver, the operator, the CLI and the tests use it.
"""

from .cache import Informer, NamespacedCache
from .client import Applied, KubeClient, Listing
from .discovery import ResourceMap, discover
from .errors import ApiError
from .events import NORMAL, WARNING, EventRecorder, event_body, involved_object, post_event
from .resources import Obj, Resource, object_key

__all__ = [
    "NORMAL",
    "WARNING",
    "ApiError",
    "Applied",
    "EventRecorder",
    "Informer",
    "KubeClient",
    "Listing",
    "NamespacedCache",
    "Obj",
    "Resource",
    "ResourceMap",
    "discover",
    "event_body",
    "involved_object",
    "object_key",
    "post_event",
]
