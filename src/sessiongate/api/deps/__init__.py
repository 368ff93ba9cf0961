"""FastAPI dependencies, one module per job: ``state``, ``callers`` (who is calling),
``sessions`` (which session a request acts in), ``cookies``, ``bodies`` (JSON guards)."""

from .bodies import JsonBody, json_body_limit, require_json
from .callers import AdminDep, Caller, CallerDep, caller_address, identify_caller, require_admin
from .cookies import (
    COOKIE_MAX_AGE,
    SessionCookieMiddleware,
    clear_session_cookie,
    issue_session_cookie,
    session_cookie,
)
from .sessions import (
    CurrentSession,
    admit_new_session,
    current_session,
    existing_session,
    named_user_header,
    normalize_user,
    pick_named_user,
    resolve_session,
)
from .state import GatewayState, StateDep, get_state

__all__ = [
    "COOKIE_MAX_AGE",
    "AdminDep",
    "Caller",
    "CallerDep",
    "CurrentSession",
    "GatewayState",
    "JsonBody",
    "SessionCookieMiddleware",
    "StateDep",
    "admit_new_session",
    "caller_address",
    "clear_session_cookie",
    "current_session",
    "existing_session",
    "get_state",
    "identify_caller",
    "issue_session_cookie",
    "json_body_limit",
    "named_user_header",
    "normalize_user",
    "pick_named_user",
    "require_admin",
    "require_json",
    "resolve_session",
    "session_cookie",
]
