"""Per-session coordination across processes: turn locks and turn admission.

``SessionCoordination`` is what the rest of the gateway uses; it runs on Redis when
``SESSIONGATE_REDIS_URL`` is set and on the shared database otherwise.
"""

from .base import Coordinator, HeldLock, LockLease, SessionCoordination
from .database import DatabaseCoordinator
from .redis import RedisCoordinator

__all__ = [
    "Coordinator",
    "DatabaseCoordinator",
    "HeldLock",
    "LockLease",
    "RedisCoordinator",
    "SessionCoordination",
]
