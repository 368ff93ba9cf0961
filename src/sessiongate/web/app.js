// sessiongate chat page. Plain JS, no build step.
//
// Security: identity is an HttpOnly cookie set by the server; this page never sees a
// token or a user id. All user and model text is rendered with textContent, never
// innerHTML, so a reply cannot inject markup or script.
"use strict";

(() => {
  const EXPIRED_CODES = new Set(["invalid_token", "session_expired"]);
  const PHONE_QUERY = window.matchMedia("(max-width: 767px)");

  const $ = (id) => document.getElementById(id);
  const el = {
    sidebar: $("sidebar"),
    backdrop: $("sidebar-backdrop"),
    toggle: $("sidebar-toggle"),
    list: $("conversation-list"),
    listEmpty: $("conversation-empty"),
    newConversation: $("new-conversation"),
    resetSession: $("reset-session"),
    serviceInfo: $("service-info"),
    title: $("conversation-title"),
    banner: $("error-banner"),
    bannerText: $("error-text"),
    bannerAction: $("error-action"),
    bannerDismiss: $("error-dismiss"),
    scroll: $("scroll"),
    messages: $("messages"),
    emptyState: $("empty-state"),
    composer: $("composer"),
    input: $("message-input"),
    send: $("send-button"),
    stop: $("stop-button"),
  };

  const state = {
    conversations: [],
    currentId: null,
    streaming: null, // {controller, assistantEl} while a turn streams
    // Bumped by every action that changes what the message pane shows (switching,
    // sending, resetting); an async load applies its result only if nothing
    // happened since it started, so a slow load never wipes a newer turn.
    epoch: 0,
  };

  // ---------------------------------------------------------------- errors

  /** An HTTP error as the API reports it: {"error": {"code", "message"}}. */
  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function toApiError(response) {
    let code = "http_" + response.status;
    let message = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || "";
      }
    } catch (_) {
      // Not JSON (e.g. a proxy's HTML page); fall back to the status text.
    }
    if (!message) message = response.statusText || "The request failed.";
    return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
  }

  function isExpired(err) {
    return err instanceof ApiError && (err.status === 401 || EXPIRED_CODES.has(err.code));
  }

  /** Turns a Retry-After header (seconds or HTTP date) into a human phrase, or "". */
  function describeRetryAfter(value) {
    if (!value) return "";
    let seconds = Number(value);
    if (!Number.isFinite(seconds)) {
      const at = Date.parse(value);
      if (Number.isNaN(at)) return "";
      seconds = (at - Date.now()) / 1000;
    }
    seconds = Math.max(1, Math.ceil(seconds));
    if (seconds < 90) return `Please try again in ${seconds} second${seconds === 1 ? "" : "s"}.`;
    const minutes = Math.ceil(seconds / 60);
    return `Please try again in ${minutes} minutes.`;
  }

  function errorText(err) {
    if (err instanceof ApiError) {
      const wait = describeRetryAfter(err.retryAfter);
      return wait ? `${err.message} ${wait}` : err.message;
    }
    if (err instanceof TypeError) return "Cannot reach the service. Check your connection.";
    return (err && err.message) || "Something went wrong.";
  }

  function showBanner(text, action) {
    el.bannerText.textContent = text;
    if (action) {
      el.bannerAction.textContent = action.label;
      el.bannerAction.onclick = action.run;
      el.bannerAction.hidden = false;
    } else {
      el.bannerAction.onclick = null;
      el.bannerAction.hidden = true;
    }
    el.banner.dataset.kind = action ? "expired" : "error";
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
    el.bannerText.textContent = "";
    el.bannerAction.onclick = null;
  }

  function showSessionExpired() {
    showBanner("Your session has expired.", {
      label: "Start a new session",
      run: startNewSession,
    });
  }

  /** Reports an error to the user; 401s get the "session expired" banner. */
  function reportError(err) {
    if (err && err.name === "AbortError") return;
    if (isExpired(err)) showSessionExpired();
    else showBanner(errorText(err));
  }

  // ------------------------------------------------------------------- api

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (!response.ok) throw await toApiError(response);
    if (response.status === 204) return null;
    return response.json();
  }

  // --------------------------------------------------------------- sidebar

  function setSidebarOpen(open) {
    el.sidebar.classList.toggle("open", open);
    el.backdrop.hidden = !open;
    el.toggle.setAttribute("aria-expanded", String(open));
  }

  function conversationTitle(conversation) {
    return (conversation && conversation.title) || "New conversation";
  }

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const now = new Date();
    if (date.toDateString() === now.toDateString()) {
      return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    }
    return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  }

  function renderConversations() {
    el.list.replaceChildren();
    for (const conversation of state.conversations) {
      const item = document.createElement("li");
      item.className = "conversation-item";
      item.dataset.id = conversation.id;
      if (conversation.id === state.currentId) {
        item.classList.add("active");
        item.setAttribute("aria-current", "true");
      }

      const open = document.createElement("button");
      open.type = "button";
      open.className = "conversation-open";
      const title = document.createElement("span");
      title.className = "conversation-title";
      title.textContent = conversationTitle(conversation);
      const meta = document.createElement("span");
      meta.className = "conversation-meta";
      const count = conversation.message_count || 0;
      meta.textContent = [
        formatTime(conversation.updated_at),
        `${count} message${count === 1 ? "" : "s"}`,
      ].filter(Boolean).join(" · ");
      open.append(title, meta);
      open.addEventListener("click", () => selectConversation(conversation.id));

      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "conversation-delete";
      remove.setAttribute("aria-label", "Delete conversation");
      remove.title = "Delete conversation";
      remove.textContent = "\u00d7";
      remove.addEventListener("click", (event) => {
        event.stopPropagation();
        deleteConversation(conversation);
      });

      item.append(open, remove);
      el.list.append(item);
    }
    el.listEmpty.hidden = state.conversations.length > 0;
    const current = state.conversations.find((c) => c.id === state.currentId);
    el.title.textContent = conversationTitle(current);
  }

  async function loadConversations() {
    const data = await api("GET", "/api/conversations?limit=50&offset=0");
    state.conversations = data.conversations || [];
    renderConversations();
  }

  // -------------------------------------------------------------- messages

  function updateEmptyState() {
    el.emptyState.hidden = el.messages.childElementCount > 0;
  }

  function isNearBottom() {
    const s = el.scroll;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function scrollToBottom() {
    el.scroll.scrollTop = el.scroll.scrollHeight;
  }

  /** Appends one message bubble; returns its element. Text goes in via textContent. */
  function appendMessage(role, content, status) {
    const message = document.createElement("article");
    message.className = `message message-${role === "user" ? "user" : "assistant"}`;
    message.dataset.role = role;
    const body = document.createElement("div");
    body.className = "message-content";
    body.textContent = content || "";
    const note = document.createElement("div");
    note.className = "message-note";
    message.append(body, note);
    setMessageStatus(message, status);
    el.messages.append(message);
    updateEmptyState();
    return message;
  }

  function setMessageStatus(message, status, noteText) {
    message.dataset.status = status;
    const note = message.querySelector(".message-note");
    let text = noteText;
    if (text === undefined) {
      text = status === "incomplete" ? "Reply stopped before it finished."
        : status === "error" ? "This reply failed." : "";
    }
    note.textContent = text;
    note.hidden = !text;
  }

  function clearMessages() {
    el.messages.replaceChildren();
    updateEmptyState();
  }

  async function loadMessages(conversationId, epoch = ++state.epoch) {
    const id = encodeURIComponent(conversationId);
    const data = await api("GET", `/api/conversations/${id}/messages?limit=200&offset=0`);
    if (epoch !== state.epoch || conversationId !== state.currentId) return; // superseded
    clearMessages();
    for (const m of data.messages || []) appendMessage(m.role, m.content, m.status || "complete");
    scrollToBottom();
  }

  // --------------------------------------------------------------- actions

  function stopStreaming() {
    if (state.streaming) state.streaming.controller.abort();
  }

  async function selectConversation(conversationId) {
    if (PHONE_QUERY.matches) setSidebarOpen(false);
    if (conversationId === state.currentId) return;
    stopStreaming();
    state.currentId = conversationId;
    renderConversations();
    clearMessages();
    try {
      await loadMessages(conversationId);
    } catch (err) {
      reportError(err);
    }
  }

  async function newConversation() {
    stopStreaming();
    try {
      const conversation = await api("POST", "/api/conversations", {});
      state.currentId = conversation.id;
      state.epoch++;
      clearMessages();
      await loadConversations();
      if (PHONE_QUERY.matches) setSidebarOpen(false);
      el.input.focus();
    } catch (err) {
      reportError(err);
    }
  }

  async function resetSession() {
    const sure = window.confirm(
      "Reset this session? All your conversations will be deleted. This cannot be undone.");
    if (!sure) return;
    stopStreaming();
    try {
      const data = await api("POST", "/api/session/reset");
      state.currentId = data && data.conversation ? data.conversation.id : null;
      state.epoch++;
      clearMessages();
      hideBanner();
      await loadConversations();
      if (PHONE_QUERY.matches) setSidebarOpen(false);
    } catch (err) {
      reportError(err);
    }
  }

  async function deleteConversation(conversation) {
    const name = conversationTitle(conversation);
    if (!window.confirm(`Delete "${name}"?`)) return;
    if (conversation.id === state.currentId) stopStreaming();
    try {
      await api("DELETE", `/api/conversations/${encodeURIComponent(conversation.id)}`);
      if (conversation.id === state.currentId) {
        state.currentId = null;
        state.epoch++;
        clearMessages();
      }
      await loadConversations();
    } catch (err) {
      reportError(err);
    }
  }

  /** Creates a fresh session (new cookie) after the old one expired, then reloads. */
  async function startNewSession() {
    stopStreaming();
    try {
      await api("POST", "/api/session");
      state.currentId = null;
      state.conversations = [];
      clearMessages();
      await loadState();
      hideBanner();
    } catch (err) {
      reportError(err);
    }
  }

  // ------------------------------------------------------------- streaming

  function setStreamingUi(active) {
    el.send.disabled = active || !el.input.value.trim();
    el.stop.hidden = !active;
    el.composer.classList.toggle("busy", active);
  }

  /**
   * Reads an SSE body and calls onFrame(obj) for each `data: {json}` frame.
   * Frames are separated by blank lines; lines starting with ":" are keep-alives.
   */
  async function readSse(body, onFrame) {
    const reader = body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    const flush = (block) => {
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      }
      if (!data.length) return;
      let frame;
      try {
        frame = JSON.parse(data.join("\n"));
      } catch (_) {
        return; // a malformed frame is skipped rather than aborting the reply
      }
      onFrame(frame);
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) !== -1) {
          flush(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
      buffer += decoder.decode();
      if (buffer.trim()) flush(buffer);
    } finally {
      reader.releaseLock();
    }
  }

  async function sendMessage() {
    const text = el.input.value;
    if (!text.trim() || state.streaming) return;
    state.epoch++;
    hideBanner();

    const userEl = appendMessage("user", text, "complete");
    const assistantEl = appendMessage("assistant", "", "streaming");
    const contentEl = assistantEl.querySelector(".message-content");
    scrollToBottom();
    el.input.value = "";
    autoSize();

    const controller = new AbortController();
    state.streaming = { controller, assistantEl };
    setStreamingUi(true);

    const payload = { message: text };
    if (state.currentId) payload.conversation_id = state.currentId;
    let reply = "";
    let finished = false; // a done or error frame arrived

    try {
      const response = await fetch("/api/chat/stream", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(payload),
        signal: controller.signal,
      });
      if (!response.ok) throw await toApiError(response);
      if (!response.body) throw new Error("This browser cannot read streamed replies.");

      await readSse(response.body, (frame) => {
        if (frame.type === "message") {
          const follow = isNearBottom();
          reply += frame.content || "";
          contentEl.textContent = reply;
          if (follow) scrollToBottom();
        } else if (frame.type === "done") {
          finished = true;
          setMessageStatus(assistantEl, "complete");
          if (frame.message_id) assistantEl.dataset.messageId = frame.message_id;
          if (frame.conversation_id) state.currentId = frame.conversation_id;
        } else if (frame.type === "error") {
          finished = true;
          const err = new ApiError(0, frame.code || "error", frame.message || "The reply failed.");
          setMessageStatus(assistantEl, "error", err.message);
          if (EXPIRED_CODES.has(err.code)) showSessionExpired();
          else showBanner(err.message);
        }
      });
      if (!finished) {
        setMessageStatus(assistantEl, "incomplete", "The connection closed before the reply finished.");
      }
    } catch (err) {
      if (err && err.name === "AbortError") {
        setMessageStatus(assistantEl, "incomplete", "Stopped.");
      } else {
        setMessageStatus(assistantEl, "error", errorText(err));
        if (!reply && err instanceof ApiError) {
          // The turn was refused before it started: mark the user's message too.
          userEl.dataset.status = "error";
        }
        reportError(err);
      }
    } finally {
      if (state.streaming && state.streaming.controller === controller) state.streaming = null;
      setStreamingUi(false);
    }

    try {
      await loadConversations();
      // A stopped or failed first turn never told us its conversation id; the server
      // put it in the most recent conversation, which the list shows first.
      if (!state.currentId && state.conversations.length) {
        state.currentId = state.conversations[0].id;
        renderConversations();
      }
    } catch (err) {
      reportError(err);
    }
  }

  // ------------------------------------------------------------------ input

  function autoSize() {
    el.input.style.height = "auto";
    el.input.style.height = Math.min(el.input.scrollHeight, 200) + "px";
    el.send.disabled = Boolean(state.streaming) || !el.input.value.trim();
  }

  el.input.addEventListener("input", autoSize);
  el.input.addEventListener("keydown", (event) => {
    // Never send while an IME (Chinese, Japanese, …) is composing: Enter then
    // confirms the candidate. keyCode 229 covers browsers that report it that way.
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      sendMessage();
    }
  });
  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  el.stop.addEventListener("click", stopStreaming);
  el.newConversation.addEventListener("click", newConversation);
  el.resetSession.addEventListener("click", resetSession);
  el.bannerDismiss.addEventListener("click", hideBanner);
  el.toggle.addEventListener("click", () => setSidebarOpen(!el.sidebar.classList.contains("open")));
  el.backdrop.addEventListener("click", () => setSidebarOpen(false));
  PHONE_QUERY.addEventListener("change", () => setSidebarOpen(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && el.sidebar.classList.contains("open")) setSidebarOpen(false);
  });

  // ------------------------------------------------------------------- boot

  async function loadServiceInfo() {
    try {
      const health = await api("GET", "/api/health");
      const parts = [];
      if (health.provider) parts.push(`Provider: ${health.provider}`);
      if (health.version) parts.push(`v${health.version}`);
      el.serviceInfo.textContent = parts.join(" · ");
    } catch (_) {
      el.serviceInfo.textContent = ""; // the footer is informational only
    }
  }

  /** Loads the session's conversations and shows the most recent one's messages. */
  async function loadState() {
    const epoch = ++state.epoch;
    // session/info makes sure a session cookie exists before anything else runs.
    await api("GET", "/api/session/info");
    await loadConversations();
    if (epoch !== state.epoch) return; // the user acted meanwhile; keep what they see
    if (!state.currentId && state.conversations.length) {
      state.currentId = state.conversations[0].id;
      renderConversations();
    }
    if (state.currentId) await loadMessages(state.currentId, epoch);
    else clearMessages();
  }

  async function boot() {
    setStreamingUi(false);
    updateEmptyState();
    loadServiceInfo();
    try {
      await loadState();
    } catch (err) {
      reportError(err);
    }
    document.body.dataset.ready = "true";
    el.input.focus({ preventScroll: true });
  }

  boot();
})();
