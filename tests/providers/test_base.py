"""Context trimming to a token budget."""

from __future__ import annotations

import pytest

from sessiongate.errors import ContextOverflow
from sessiongate.providers.base import ChatMessage, ContextWindow


def words(text: str) -> int:
    return len(text.split())


def test_keeps_system_and_newest_and_drops_oldest_first() -> None:
    window = ContextWindow(budget=20, count_tokens=words, per_message_overhead=0)
    history = [ChatMessage("system", "be brief")] + [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"m{i} a b c") for i in range(10)
    ]
    kept = window.trim(history)
    assert kept[0] == history[0]
    assert kept[-1] == history[-1]
    assert sum(words(m.content) for m in kept) <= 20
    assert kept[1:] == history[-len(kept) + 1 :]  # a suffix, in order
    assert kept[1].role == "user"  # never opens on an orphaned assistant reply


def test_newest_message_that_cannot_fit_is_context_overflow() -> None:
    window = ContextWindow(budget=5, count_tokens=words, per_message_overhead=0)
    with pytest.raises(ContextOverflow):
        window.trim([ChatMessage("user", "one two three four five six")])


def test_everything_fits_is_unchanged() -> None:
    window = ContextWindow(budget=100, count_tokens=words)
    history = [
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "hello"),
        ChatMessage("user", "ok"),
    ]
    assert window.trim(history) == history
