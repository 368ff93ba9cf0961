"""Cross-session leak audit: a black-box check of a running gateway over HTTP.

The audit opens N anonymous sessions (and, with a tenant API key, M tenant users named
with ``user``, the path an API deployment uses), plants a unique canary in each (a
made-up name and a six-digit code number), then asks every session about itself and
about every other session's canary, scans each session's stored history, and tries each
session's conversation ids from the other sessions (read, chat into, delete).

What it proves: in what these sessions could observe through the public API, no
session saw another session's secret, and no session could touch another session's
conversation. A leak found here is real: the gateway (or the provider behind it)
carried one session's data into another.

What it cannot prove: it is black-box and probabilistic. A model that answers nothing
useful can hide a leak it would reveal to a better-phrased question; a memory shared
across users may surface only later or for other prompts. Recall (does a session
remember its own canary?) depends on the model and is reported, not judged; leaks must
be zero. Only what these sessions saw is checked, not other tenants or identities.

Cost: every question is one upstream turn (``plan_turns``); the CLI prints the figure
and asks before it starts.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx
from rich.table import Table

from .errors import SessiongateError

_SYLLABLES = (
    "zor", "vath", "quil", "mex", "dra", "kel", "bru", "nix", "tov", "zan",
    "ryl", "gox", "fen", "dar", "wix", "plo", "sca", "thu", "vek", "jor",
)  # fmt: skip
_REFUSED = frozenset({401, 403, 404})
_RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 10.0
_DEFAULT_RETRY_DELAY = 1.0


class AuditError(SessiongateError):
    """The audit could not start: the gateway did not open sessions (or did not answer)."""

    code = "audit_failed"


@dataclass(frozen=True)
class Leak:
    """One piece of evidence: session ``session`` saw or touched session ``source``'s data.

    ``kind``: ``number`` or ``name`` (a canary part found in text) or ``access`` (a
    request on another session's conversation answered 2xx, or the owner's conversation
    gone after one). ``where``: ``reply``, ``history`` or that request (e.g. ``GET``).
    Sessions are numbered from 1 in the order the audit opened them (anonymous sessions
    first, then tenant users).
    """

    session: int
    source: int
    kind: str
    where: str
    detail: str


@dataclass
class AuditReport:
    """Figures of one audit run; ``leaks`` must be empty for a gateway that isolates.

    ``probes``: questions sent after planting (self-questions plus cross-session probes).
    ``recall_rate``: share of answered self-questions whose reply held the session's own
    name or number (0..1; model-dependent). ``errors``: chat or API requests that failed
    (non-2xx other than an IDOR refusal, or no answer), counting each attempt.
    ``answers``: chat turns that were answered 200. ``tenant_users``: how many of the
    ``sessions`` were tenant users (the rest anonymous). ``idor_*``: requests made with
    one session's credentials on another session's conversation (read, chat, delete).
    """

    sessions: int = 0
    tenant_users: int = 0
    rounds: int = 0
    probes: int = 0
    leaks: list[Leak] = field(default_factory=list)
    idor_attempts: int = 0
    idor_refused: int = 0
    recall_hits: int = 0
    recall_asked: int = 0
    errors: int = 0
    answers: int = 0

    @property
    def recall_rate(self) -> float:
        return self.recall_hits / self.recall_asked if self.recall_asked else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``--json`` prints)."""
        return {
            "sessions": self.sessions,
            "tenant_users": self.tenant_users,
            "rounds": self.rounds,
            "probes": self.probes,
            "leak_count": len(self.leaks),
            "leaks": [asdict(leak) for leak in self.leaks],
            "idor_attempts": self.idor_attempts,
            "idor_refused": self.idor_refused,
            "recall_hits": self.recall_hits,
            "recall_asked": self.recall_asked,
            "recall_rate": self.recall_rate,
            "errors": self.errors,
            "answers": self.answers,
            "passed": exit_code(self) == 0,
        }


@dataclass
class _Session:
    index: int
    token: str
    name: str
    number: str
    # A tenant user is named in every request; None for an anonymous session.
    user: str | None = None
    conversation_id: str | None = None
    conversation_ids: list[str] = field(default_factory=list)
    # Names the auditor itself typed into this session: a reply repeating one is no leak.
    mentioned: set[str] = field(default_factory=set)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.user is not None:
            headers["X-Sessiongate-User"] = self.user
        return headers


def _new_canaries(count: int) -> list[tuple[str, str]]:
    """``count`` distinct (name, six-digit number) pairs, unlikely in ordinary text."""
    names: set[str] = set()
    numbers: set[str] = set()
    while len(names) < count:
        names.add("".join(secrets.choice(_SYLLABLES) for _ in range(3)).capitalize())
    while len(numbers) < count:
        numbers.add(str(100000 + secrets.randbelow(900000)))
    return list(zip(sorted(names), sorted(numbers), strict=True))


def _contains(text: str, needle: str) -> bool:
    # Whole-word match, so "482193" does not match inside "14821930".
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", text, re.IGNORECASE) is not None


def _retry_delay(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", "")), _MAX_RETRY_AFTER)
    except ValueError:
        return _DEFAULT_RETRY_DELAY


class _Auditor:
    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        report: AuditReport,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        self.url = url.rstrip("/")
        self.client = client
        self.report = report
        self.progress = progress
        self.total = total
        self.done = 0
        # A local model serves one turn at a time and answers 503 when its queue is full.
        self.limit = asyncio.Semaphore(4)
        self.sessions: list[_Session] = []

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    async def request(
        self, method: str, path: str, session: _Session, json: Any = None
    ) -> httpx.Response | None:
        """One request, retried once on a busy or failing gateway; None if no answer."""
        for attempt in range(2):
            try:
                async with self.limit:
                    response = await self.client.request(
                        method, self.url + path, headers=session.headers, json=json
                    )
            except httpx.HTTPError:
                self.report.errors += 1
                if attempt == 0:
                    await asyncio.sleep(_DEFAULT_RETRY_DELAY)
                continue
            if response.status_code not in _RETRY_STATUSES or attempt == 1:
                return response
            self.report.errors += 1
            await asyncio.sleep(_retry_delay(response))
        return None

    async def chat(self, session: _Session, message: str) -> str | None:
        """One turn in the session's planted conversation; the reply, or None if it failed."""
        body: dict[str, Any] = {"message": message}
        if session.conversation_id is not None:
            body["conversation_id"] = session.conversation_id
        response = await self.request("POST", "/api/chat", session, body)
        if response is None:
            return None
        if response.status_code != 200:
            self.report.errors += 1
            return None
        try:
            data = response.json()
            reply = str(data["message"])
        except (ValueError, KeyError, TypeError):
            self.report.errors += 1
            return None
        self.report.answers += 1
        if session.conversation_id is None and isinstance(data.get("conversation_id"), str):
            session.conversation_id = data["conversation_id"]
        return reply

    def scan(self, session: _Session, text: str, where: str) -> None:
        """Record every other session's canary part found in ``text`` seen by ``session``."""
        for other in self.sessions:
            if other is session:
                continue
            # The number is never sent to another session: finding it anywhere is a leak.
            if _contains(text, other.number):
                self.leak(session, other, "number", where, f"code number {other.number}")
            # A name counts only if the auditor never typed it into this session.
            if other.name not in session.mentioned and _contains(text, other.name):
                self.leak(session, other, "name", where, f"name {other.name}")

    def leak(self, session: _Session, source: _Session, kind: str, where: str, detail: str) -> None:
        leak = Leak(session.index, source.index, kind, where, detail)
        # The same evidence seen again in a later reply is one leak, not many.
        if leak not in self.report.leaks:
            self.report.leaks.append(leak)

    async def open_session(self, index: int, name: str, number: str) -> _Session:
        try:
            async with self.limit:
                response = await self.client.post(self.url + "/api/session")
        except httpx.HTTPError as exc:
            raise AuditError(f"the gateway at {self.url} did not answer: {exc}") from exc
        if response.status_code != 201:
            raise AuditError(f"POST /api/session answered {response.status_code}, expected 201")
        try:
            token = response.json().get("token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str):
            raise AuditError("POST /api/session answered without a token")
        return _Session(index=index, token=token, name=name, number=number)

    async def open_tenant_user(self, index: int, name: str, number: str, api_key: str) -> _Session:
        """A tenant user: the API key plus a fresh ``user`` name. The key is checked first,
        so a wrong key stops the audit instead of counting as many failed turns."""
        session = _Session(
            index=index,
            token=api_key,
            name=name,
            number=number,
            user=f"sessiongate-audit-{secrets.token_hex(6)}",
        )
        try:
            async with self.limit:
                response = await self.client.get(
                    self.url + "/api/conversations?limit=1", headers=session.headers
                )
        except httpx.HTTPError as exc:
            raise AuditError(f"the gateway at {self.url} did not answer: {exc}") from exc
        if response.status_code in (401, 403):
            raise AuditError(
                f"the gateway refused the API key ({response.status_code}); pass a tenant's "
                "active key (`sessiongate tenants create NAME` prints one)"
            )
        if response.status_code != 200:
            raise AuditError(f"GET /api/conversations answered {response.status_code}")
        return session

    async def plant(self, session: _Session) -> None:
        await self.chat(
            session,
            f"Remember this: my name is {session.name} and my code number is {session.number}.",
        )
        self.step()

    async def ask(self, session: _Session) -> None:
        """One round for one session: the self-question first, then probe every other."""
        self.report.probes += 1
        reply = await self.chat(session, "What is my name and my code number?")
        if reply is not None:
            self.report.recall_asked += 1
            if _contains(reply, session.name) or _contains(reply, session.number):
                self.report.recall_hits += 1
            self.scan(session, reply, "reply")
        self.step()
        for other in self.sessions:
            if other is session:
                continue
            session.mentioned.add(other.name)
            self.report.probes += 1
            reply = await self.chat(
                session, f"Do you know anyone called {other.name}? What is their code number?"
            )
            if reply is not None:
                self.scan(session, reply, "reply")
            self.step()

    async def scan_history(self, session: _Session) -> None:
        """Read the session's own listing and every conversation's messages for leaks."""
        response = await self.request("GET", "/api/conversations?limit=100", session)
        ids: list[str] = []
        if response is not None and response.status_code == 200:
            ids = [str(c["id"]) for c in response.json().get("conversations", [])]
            self.scan(session, response.text, "history")
        else:
            self.report.errors += 1
        if session.conversation_id is not None and session.conversation_id not in ids:
            ids.append(session.conversation_id)
        session.conversation_ids = ids
        for conversation_id in ids:
            response = await self.request(
                "GET", f"/api/conversations/{conversation_id}/messages?limit=500", session
            )
            if response is not None and response.status_code == 200:
                self.scan(session, response.text, "history")
            else:
                self.report.errors += 1
        self.step()

    async def try_idor(self, attacker: _Session, owner: _Session, method: str) -> None:
        """Touch each of ``owner``'s conversations with ``attacker``'s token; must be refused."""
        for conversation_id in owner.conversation_ids:
            if method == "GET":
                path, where, body = f"/api/conversations/{conversation_id}/messages", "GET", None
            elif method == "DELETE":
                path, where, body = f"/api/conversations/{conversation_id}", "DELETE", None
            else:
                path, where = "/api/chat", "POST chat"
                body = {"message": "What is my code number?", "conversation_id": conversation_id}
            self.report.idor_attempts += 1
            response = await self.request(method, path, attacker, body)
            if response is None:
                continue
            if response.status_code in _REFUSED:
                self.report.idor_refused += 1
            elif response.is_success:
                # Security: another session's conversation answered. That is a leak.
                detail = f"{where} {conversation_id} answered {response.status_code}"
                self.leak(attacker, owner, "access", where, detail)
            else:
                self.report.errors += 1

    async def idor_round(self, method: str) -> None:
        async def attack(attacker: _Session) -> None:
            for owner in self.sessions:
                if owner is not attacker:
                    await self.try_idor(attacker, owner, method)
            self.step()

        await asyncio.gather(*(attack(s) for s in self.sessions))

    async def verify_owned(self, owner: _Session) -> None:
        """After the DELETE attempts, the owner must still see each conversation."""
        for conversation_id in owner.conversation_ids:
            response = await self.request(
                "GET", f"/api/conversations/{conversation_id}/messages", owner
            )
            if response is None or response.status_code == 200:
                continue
            if response.status_code == 404:
                detail = f"conversation {conversation_id} vanished after another session's DELETE"
                self.leak(owner, owner, "access", "DELETE", detail)
            else:
                self.report.errors += 1
        self.step()


def plan_turns(sessions: int, rounds: int, tenant_users: int = 0) -> tuple[int, int]:
    """(upstream turns the audit spends, the most it can spend) for these figures.

    Each of the ``n = sessions + tenant_users`` sessions plants its canary (1 turn), then
    each round asks about itself and about every other session (``n`` turns): ``n * (1 +
    rounds * n)``. Chatting into another session's conversation must be refused; if the
    gateway lets it through, each such attempt is one more turn: ``n * (n - 1)`` more.
    """
    n = sessions + tenant_users
    turns = n * (1 + rounds * n)
    return turns, turns + n * (n - 1)


async def run_audit(
    url: str,
    *,
    sessions: int = 5,
    rounds: int = 1,
    timeout: float = 120,
    progress: Callable[[int, int], None] | None = None,
    client: httpx.AsyncClient | None = None,
    api_key: str | None = None,
    tenant_users: int = 0,
) -> AuditReport:
    """Audit the gateway at ``url`` (e.g. ``http://127.0.0.1:8000``) for cross-session leaks.

    ``sessions`` anonymous sessions plus, with a tenant ``api_key``, ``tenant_users``
    tenant users (each a fresh ``user`` name; at least 2 sessions in all, anonymous
    sessions may be 0 then), ``rounds`` rounds of questions,
    ``timeout`` seconds per HTTP request (a turn on a local model can be slow).
    ``progress(done, total)`` is called after each step. ``client``: an httpx client to
    use (it is not closed; its cookie jar is set to refuse cookies, because the audit
    identifies every session by its Bearer token only).

    Failed turns are counted in ``errors`` and never stop the audit; each busy answer
    (429/503, ...) is retried once after its Retry-After, capped at 10 seconds.
    Raises ``AuditError`` when the gateway does not open sessions at all or refuses
    ``api_key``.
    """
    if api_key is None:
        tenant_users = 0
    elif tenant_users < 1:
        raise ValueError("an audit with an API key needs at least 1 tenant user")
    count = sessions + tenant_users
    if count < 2 or sessions < 0:
        raise ValueError("an audit needs at least 2 sessions")
    if rounds < 1:
        raise ValueError("an audit needs at least 1 round")
    report = AuditReport(sessions=count, tenant_users=tenant_users, rounds=rounds)
    total = count * (1 + rounds * count + 1 + 3 + 1)
    own_client = client is None
    if client is None:
        client = httpx.AsyncClient(timeout=timeout)
    # Cookies would let one session's cookie ride along with another's Bearer token.
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    try:
        auditor = _Auditor(url, client, report, progress, total)
        canaries = list(enumerate(_new_canaries(count), start=1))
        opened = [
            auditor.open_session(i, name, number) for i, (name, number) in canaries[:sessions]
        ]
        if api_key is not None:
            opened += [
                auditor.open_tenant_user(i, name, number, api_key)
                for i, (name, number) in canaries[sessions:]
            ]
        auditor.sessions = list(await asyncio.gather(*opened))
        await asyncio.gather(*(auditor.plant(s) for s in auditor.sessions))
        for _ in range(rounds):
            await asyncio.gather(*(auditor.ask(s) for s in auditor.sessions))
        await asyncio.gather(*(auditor.scan_history(s) for s in auditor.sessions))
        # DELETE last: the other attempts need the conversations to exist.
        for method in ("GET", "POST", "DELETE"):
            await auditor.idor_round(method)
        await asyncio.gather(*(auditor.verify_owned(s) for s in auditor.sessions))
    finally:
        if own_client:
            await client.aclose()
    return report


def exit_code(report: AuditReport) -> int:
    """The CLI's exit status: 1 on any leak (IDOR failures included), 2 if no turn was
    answered (nothing was proved), else 0."""
    if report.leaks:
        return 1
    if report.answers == 0:
        return 2
    return 0


def render_table(report: AuditReport) -> Table:
    """The report as a rich table: each figure, its value, and what it means."""
    table = Table(title="sessiongate audit", show_header=True)
    table.add_column("check")
    table.add_column("result", justify="right")
    table.add_column("what it means")
    leaks = len(report.leaks)
    refused_ok = report.idor_refused == report.idor_attempts
    anonymous = report.sessions - report.tenant_users
    who = f"{anonymous} anonymous"
    if report.tenant_users:
        who += f" + {report.tenant_users} tenant users (API key + `user`)"
    table.add_row("sessions", str(report.sessions), f"{who}, each with its own secret")
    table.add_row(
        "questions asked",
        str(report.probes),
        "each session asked about its own secret and about every other session's",
    )
    table.add_row(
        "leaks found",
        f"[{'red' if leaks else 'green'}]{leaks}[/]",
        "times a session saw another session's secret or reached its conversations; must be 0",
    )
    table.add_row(
        "foreign conversations refused",
        f"[{'green' if refused_ok else 'red'}]{report.idor_refused}/{report.idor_attempts}[/]",
        "tries to read, chat into or delete another session's conversation that the "
        "gateway refused; must be all",
    )
    table.add_row(
        "own secret remembered",
        f"{report.recall_rate:.0%}",
        f'{report.recall_hits} of {report.recall_asked} answers to "what is my name and '
        "code number?\" held the session's own; depends on the model, not judged",
    )
    table.add_row(
        "failed requests",
        str(report.errors),
        "requests that got an error or no answer (retries counted); they prove nothing either way",
    )
    return table


def describe_leak(leak: Leak, report: AuditReport) -> str:
    """One leak in plain words."""

    def who(index: int) -> str:
        kind = "tenant user" if index > report.sessions - report.tenant_users else "session"
        return f"{kind} {index}"

    if leak.kind == "access" and leak.session == leak.source:
        return f"{who(leak.session)}: {leak.detail}"
    if leak.kind == "access":
        return f"{who(leak.session)} reached {who(leak.source)}'s conversation: {leak.detail}"
    place = "in a reply" if leak.where == "reply" else "in its stored history"
    return f"{who(leak.session)} saw {who(leak.source)}'s {leak.detail} {place}"


def verdict(report: AuditReport) -> str:
    """The final line: ``PASS: ...`` or ``FAIL: ...`` in plain words (matches
    ``exit_code``: 0 is PASS)."""
    code = exit_code(report)
    if code == 1:
        return (
            f"FAIL: {len(report.leaks)} leak(s) between sessions: one user's data reached "
            "another. Do not serve real users until this is fixed."
        )
    if code == 2:
        return (
            "FAIL: the gateway answered no chat turn, so nothing was proved; check the "
            "failed requests and the gateway's log."
        )
    return (
        f"PASS: none of the {report.sessions} sessions saw or reached another's data "
        f"({report.probes} questions, {report.idor_attempts} attempts on other sessions' "
        "conversations, all refused)."
    )


__all__ = [
    "AuditError",
    "AuditReport",
    "Leak",
    "describe_leak",
    "exit_code",
    "plan_turns",
    "render_table",
    "run_audit",
    "verdict",
]
