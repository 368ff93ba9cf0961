// sessiongate chat page. Plain JS, no build step; strings from i18n.js, markdown from
// markdown.js (markdown-it + DOMPurify, vendored).
//
// Security: identity is an HttpOnly cookie set by the server; this page never sees a
// token or a user id. User text is rendered with textContent; replies go through the
// markdown pipeline, which sanitizes them (no script, handlers or javascript: URLs, and
// images only from the operator's hosts). No inline script or handler: the page works
// under a Content-Security-Policy without 'unsafe-inline'.
"use strict";

(() => {
  const i18n = window.sgI18n;
  const t = i18n.t;
  const EXPIRED_CODES = new Set([
    "invalid_token", "token_expired", "session_expired", "session_not_found",
  ]);
  // 401s that are not an expiry: no session yet, or anonymous sessions turned off.
  const NO_SESSION_CODES = new Set(["credentials_required", "anonymous_disabled"]);
  const PHONE_QUERY = window.matchMedia("(max-width: 767px)");
  const PAGE_SIZE = 50;
  const DRAFT_KEY = "sessiongate.draft";
  const THEME_KEY = "sessiongate.theme";
  const THEMES = ["auto", "light", "dark"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const ICONS = {
    copy: "M8 8h11v13H8zM5 3h11v3H7v11H5z",
    regenerate: "M17.7 6.3A8 8 0 1 0 20 12h-2a6 6 0 1 1-1.8-4.3L13 11h7V4z",
    edit: "M4 17.3V20h2.7l8-8-2.7-2.7zM19.7 7a1 1 0 0 0 0-1.4l-1.3-1.3a1 1 0 0 0-1.4 0l-1.4 " +
      "1.4 2.7 2.7z",
    up: "M2 21h4V9H2zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3a1.5 1.5 0 0 0-.5-1L13.1 1 7.6 " +
      "6.6A2 2 0 0 0 7 8v11a2 2 0 0 0 2 2h9a2 2 0 0 0 1.8-1.2l3-7.1.2-.7z",
    down: "M22 3h-4v12h4zM2 14a2 2 0 0 0 2 2h6.3l-1 4.6v.3a1.5 1.5 0 0 0 .5 1l1.1 1.1 " +
      "5.5-5.6A2 2 0 0 0 17 16V5a2 2 0 0 0-2-2H6a2 2 0 0 0-1.8 1.2l-3 7.1-.2.7z",
    rename: "M4 17.3V20h2.7l8-8-2.7-2.7zM19.7 7a1 1 0 0 0 0-1.4l-1.3-1.3a1 1 0 0 0-1.4 0l-1.4 " +
      "1.4 2.7 2.7z",
    theme: "M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm0 16V5a7 7 0 0 1 0 14z",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    sidebar: $("sidebar"),
    backdrop: $("sidebar-backdrop"),
    toggle: $("sidebar-toggle"),
    list: $("conversation-list"),
    listEmpty: $("conversation-empty"),
    newConversation: $("new-conversation"),
    exportData: $("export-data"),
    deleteData: $("delete-data"),
    resetSession: $("reset-session"),
    serviceInfo: $("service-info"),
    brandAvatar: $("brand-avatar"),
    brandName: $("brand-name"),
    title: $("conversation-title"),
    language: $("language-select"),
    theme: $("theme-toggle"),
    banner: $("error-banner"),
    bannerText: $("error-text"),
    bannerAction: $("error-action"),
    bannerDismiss: $("error-dismiss"),
    scroll: $("scroll"),
    olderLoading: $("older-loading"),
    messages: $("messages"),
    emptyState: $("empty-state"),
    emptyAvatar: $("empty-avatar"),
    welcome: $("welcome"),
    emptyTitle: $("empty-title"),
    emptyHint: $("empty-hint"),
    suggestions: $("suggestions"),
    jumpLatest: $("jump-latest"),
    composer: $("composer"),
    composerEdit: $("composer-edit"),
    cancelEdit: $("cancel-edit"),
    input: $("message-input"),
    counter: $("char-counter"),
    send: $("send-button"),
    stop: $("stop-button"),
  };

  const state = {
    ui: {
      title: "", bot_name: "", avatar_url: null, welcome: "", suggestions: [],
      accent_color: "", image_hosts: [], max_message_chars: 8000, languages: ["en"],
      language: "auto",
    },
    conversations: [],
    currentId: null,
    // While a reply streams: {controller, assistantEl, conversationId}.
    streaming: null,
    // Older messages of the current conversation: the id to page before, or null.
    olderBefore: null,
    loadingOlder: false,
    editing: false,
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
      // Not JSON (e.g. a proxy's HTML page); fall back to the status code.
    }
    return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
  }

  /** A session this browser had is gone (not: it never had one, or may not have one). */
  function isExpired(err) {
    if (!(err instanceof ApiError)) return false;
    if (EXPIRED_CODES.has(err.code)) return true;
    return err.status === 401 && !NO_SESSION_CODES.has(err.code);
  }

  /** The browser holds no session yet: the first message starts one. */
  function hasNoSession(err) {
    return err instanceof ApiError && err.code === "credentials_required";
  }

  /** Turns a Retry-After header (seconds or HTTP date) into a localized phrase, or "". */
  function describeRetryAfter(value) {
    if (!value) return "";
    let seconds = Number(value);
    if (!Number.isFinite(seconds)) {
      const at = Date.parse(value);
      if (Number.isNaN(at)) return "";
      seconds = (at - Date.now()) / 1000;
    }
    seconds = Math.max(1, Math.ceil(seconds));
    if (seconds < 90) return t("retry.seconds", { count: seconds });
    return t("retry.minutes", { count: Math.ceil(seconds / 60) });
  }

  /** The localized text for an error code; the server's English text if we have none. */
  function codeText(code, fallback) {
    const key = "errors." + code;
    if (i18n.has(key)) return t(key);
    return fallback || t("errors.unknown");
  }

  function errorText(err) {
    if (err instanceof ApiError) {
      const text = codeText(err.code, err.message);
      const wait = describeRetryAfter(err.retryAfter);
      return wait ? `${text} ${wait}` : text;
    }
    if (err instanceof TypeError) return t("errors.network");
    return t("errors.unknown");
  }

  function showBanner(text, action, kind = "error") {
    el.bannerText.textContent = text;
    if (action) {
      el.bannerAction.textContent = action.label;
      el.bannerAction.onclick = action.run;
      el.bannerAction.hidden = false;
    } else {
      el.bannerAction.onclick = null;
      el.bannerAction.hidden = true;
    }
    el.banner.dataset.kind = kind;
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
    el.bannerText.textContent = "";
    el.bannerAction.onclick = null;
  }

  /** The session is gone: say so, keep the composer's text, send it once confirmed. */
  function showSessionExpired() {
    const pending = el.input.value.trim() !== "";
    showBanner(t("session.expired"), {
      label: t(pending ? "session.startAndSend" : "session.start"),
      run: () => startNewSession(pending),
    }, "expired");
  }

  /** Reports an error; an expired session gets its banner, `retry` a Retry button. */
  function reportError(err, retry) {
    if (err && err.name === "AbortError") return;
    if (isExpired(err)) showSessionExpired();
    else showBanner(errorText(err), retry ? { label: t("banner.retry"), run: retry } : null);
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

  const conversationPath = (id) => `/api/conversations/${encodeURIComponent(id)}`;

  // ------------------------------------------------------------- utilities

  function node(tag, className, text) {
    const n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function icon(name) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  function iconButton(name, label, className) {
    const button = node("button", "action " + (className || ""));
    button.type = "button";
    button.setAttribute("aria-label", label);
    button.title = label;
    button.dataset.action = name;
    button.append(icon(name === "retry" ? "regenerate" : name));
    return button;
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      // Clipboard API refused (no secure context): the old way.
      const area = node("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.append(area);
      area.select();
      const ok = document.execCommand("copy");
      area.remove();
      return ok;
    }
  }

  function flash(button, key) {
    const label = button.getAttribute("aria-label");
    const text = button.firstChild && button.firstChild.nodeType === 3 ? button.textContent : null;
    button.classList.add("done");
    button.setAttribute("aria-label", t(key));
    if (text !== null) button.textContent = t(key);
    setTimeout(() => {
      button.classList.remove("done");
      button.setAttribute("aria-label", label);
      if (text !== null) button.textContent = text;
    }, 1500);
  }

  // ------------------------------------------------------------------ brand

  function botName() {
    return state.ui.bot_name || t("bot.name");
  }

  function fillAvatar(target, name, url) {
    target.replaceChildren();
    if (url) {
      const img = node("img");
      img.src = url;
      img.alt = "";
      target.append(img);
    } else {
      target.textContent = Array.from(name.trim())[0] || "?";
    }
  }

  function hexToRgb(hex) {
    let h = hex.replace("#", "");
    if (h.length === 3) h = h.split("").map((c) => c + c).join("");
    const n = parseInt(h, 16);
    return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
  }

  function luminance([r, g, b]) {
    const lin = (c) => {
      const s = c / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  }

  /** The operator's accent colour, with black or white text, whichever contrasts more. */
  function applyAccent(color) {
    if (!/^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(color || "")) return;
    const rgb = hexToRgb(color);
    const lum = luminance(rgb);
    const onWhite = 1.05 / (lum + 0.05);
    const onBlack = (lum + 0.05) / 0.05;
    const text = onWhite >= onBlack ? "#ffffff" : "#000000";
    const dim = rgb.map((c) => Math.round(c * 0.85));
    const root = document.documentElement.style;
    root.setProperty("--accent", color);
    root.setProperty("--accent-hover", `rgb(${dim.join(",")})`);
    root.setProperty("--accent-text", text);
    root.setProperty("--user-bg", color);
    root.setProperty("--user-text", text);
  }

  function renderBrand() {
    const title = state.ui.title || t("app.title");
    document.title = title;
    el.brandName.textContent = title;
    fillAvatar(el.brandAvatar, botName(), state.ui.avatar_url);
    fillAvatar(el.emptyAvatar, botName(), state.ui.avatar_url);
    const welcome = state.ui.welcome || "";
    el.welcome.replaceChildren(welcome ? window.sgMarkdown.render(welcome, t) : "");
    el.welcome.hidden = !welcome;
    el.emptyTitle.hidden = Boolean(welcome);
    el.suggestions.replaceChildren(
      ...state.ui.suggestions.map((question) => {
        const button = node("button", "suggestion", question);
        button.type = "button";
        button.addEventListener("click", () => {
          el.input.value = question;
          onInput();
          sendMessage();
        });
        return button;
      }),
    );
    el.suggestions.hidden = state.ui.suggestions.length === 0;
  }

  // ------------------------------------------------------------ theme, language

  function currentTheme() {
    const saved = localStorage.getItem(THEME_KEY);
    return THEMES.includes(saved) ? saved : "auto";
  }

  function renderTheme() {
    const theme = currentTheme();
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    const label = t("theme.label", { mode: t("theme." + theme) });
    el.theme.setAttribute("aria-label", label);
    el.theme.title = label;
    el.theme.dataset.mode = theme;
    if (!el.theme.firstChild) el.theme.append(icon("theme"));
  }

  function cycleTheme() {
    const next = THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length];
    if (next === "auto") localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, next);
    renderTheme();
  }

  async function renderLanguageSelect() {
    const names = await Promise.all(state.ui.languages.map((tag) => i18n.languageName(tag)));
    el.language.replaceChildren(
      ...state.ui.languages.map((tag, i) => {
        const option = node("option", "", names[i]);
        option.value = tag;
        option.lang = tag;
        return option;
      }),
    );
    el.language.value = i18n.language;
    el.language.setAttribute("aria-label", t("language.label"));
  }

  /** Shows every string in the current language: static HTML and what the page built. */
  function localize() {
    i18n.apply();
    renderBrand();
    renderTheme();
    renderConversations();
    for (const message of el.messages.querySelectorAll(".message")) relabelMessage(message);
    el.language.setAttribute("aria-label", t("language.label"));
    updateCounter();
  }

  async function switchLanguage(tag) {
    i18n.remember(tag);
    await i18n.use(tag);
    localize();
  }

  // --------------------------------------------------------------- sidebar

  function setSidebarOpen(open) {
    el.sidebar.classList.toggle("open", open);
    el.backdrop.hidden = !open;
    el.toggle.setAttribute("aria-expanded", String(open));
  }

  function conversationTitle(conversation) {
    return (conversation && conversation.title) || t("conversation.untitled");
  }

  function renderConversations() {
    el.list.replaceChildren();
    for (const conversation of state.conversations) {
      const title = conversationTitle(conversation);
      const item = node("li", "conversation-item");
      item.dataset.id = conversation.id;
      if (conversation.id === state.currentId) {
        item.classList.add("active");
        item.setAttribute("aria-current", "true");
      }
      const open = node("button", "conversation-open");
      open.type = "button";
      const count = conversation.message_count || 0;
      const meta = [
        conversation.updated_at ? i18n.formatWhen(conversation.updated_at) : "",
        t("conversation.messages", { count }),
      ].filter(Boolean).join(" · ");
      open.append(node("span", "conversation-title", title), node("span", "conversation-meta", meta));
      open.addEventListener("click", () => selectConversation(conversation.id));

      const rename = iconButton("rename", t("conversation.rename", { title }), "conversation-rename");
      rename.addEventListener("click", (event) => {
        event.stopPropagation();
        renameConversation(conversation);
      });
      const remove = node("button", "conversation-delete", "\u00d7");
      remove.type = "button";
      const label = t("conversation.delete", { title });
      remove.setAttribute("aria-label", label);
      remove.title = label;
      remove.addEventListener("click", (event) => {
        event.stopPropagation();
        deleteConversation(conversation);
      });
      item.append(open, rename, remove);
      el.list.append(item);
    }
    el.listEmpty.hidden = state.conversations.length > 0;
    const current = state.conversations.find((c) => c.id === state.currentId);
    el.title.textContent = conversationTitle(current);
  }

  async function loadConversations() {
    const data = await api("GET", "/api/conversations?limit=100&offset=0");
    state.conversations = data.conversations || [];
    renderConversations();
  }

  // -------------------------------------------------------------- messages

  function updateEmptyState() {
    const empty = el.messages.childElementCount === 0;
    el.emptyState.hidden = !empty;
    if (empty) el.jumpLatest.hidden = true;
  }

  function isNearBottom() {
    const s = el.scroll;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function scrollToBottom() {
    el.scroll.scrollTop = el.scroll.scrollHeight;
    el.jumpLatest.hidden = true;
  }

  /** Shows `content` in a message: markdown for replies, plain text for the user's own. */
  function renderContent(message, content) {
    const body = message.querySelector(".message-content");
    message.dataset.raw = content || "";
    if (message.dataset.role === "assistant") {
      body.replaceChildren(window.sgMarkdown.render(content || "", t));
    } else {
      body.textContent = content || "";
    }
  }

  /** Re-renders a streaming reply at most once per frame, so long replies stay smooth. */
  function scheduleRender(message, content) {
    message.dataset.raw = content;
    if (message._renderPending) return;
    message._renderPending = true;
    requestAnimationFrame(() => {
      message._renderPending = false;
      const follow = isNearBottom();
      renderContent(message, message.dataset.raw);
      if (follow) scrollToBottom();
    });
  }

  /** Builds one message element from {role, content, status, id, created_at, feedback}. */
  function buildMessage(m) {
    const role = m.role === "user" ? "user" : "assistant";
    const message = node("article", `message message-${role}`);
    message.dataset.role = role;
    if (m.id) message.dataset.messageId = m.id;
    if (m.feedback) message.dataset.feedback = m.feedback;
    message.dataset.createdAt = m.created_at || new Date().toISOString();

    const avatar = node("div", "avatar message-avatar");
    avatar.setAttribute("aria-hidden", "true");
    const main = node("div", "message-main");
    const head = node("div", "message-head");
    head.append(node("span", "message-speaker"), node("time", "message-time"));
    const body = node("div", "message-content" + (role === "assistant" ? " markdown" : ""));
    const note = node("div", "message-note");
    const actions = node("div", "message-actions");
    actions.setAttribute("role", "group");
    main.append(head, body, note, actions);
    message.append(avatar, main);
    renderContent(message, m.content);
    setMessageStatus(message, m.status || "complete", m.note);
    return message;
  }

  /** Speaker label, avatar, time and action labels in the current language. */
  function relabelMessage(message) {
    const role = message.dataset.role;
    const name = role === "user" ? t("you") : botName();
    message.querySelector(".message-speaker").textContent = name;
    const avatar = message.querySelector(".message-avatar");
    if (role === "user") avatar.textContent = Array.from(t("you"))[0];
    else fillAvatar(avatar, name, state.ui.avatar_url);
    const time = message.querySelector(".message-time");
    time.dateTime = message.dataset.createdAt;
    time.textContent = i18n.formatWhen(message.dataset.createdAt);
    time.title = i18n.formatDateTime(message.dataset.createdAt, {
      dateStyle: "medium", timeStyle: "short",
    });
    if (role === "assistant") {
      for (const code of message.querySelectorAll(".code-copy")) code.textContent = t("code.copy");
    }
    setMessageStatus(message, message.dataset.status, message._note);
  }

  function noteFor(status) {
    if (status === "incomplete") return t("message.status.incomplete");
    if (status === "error") return t("message.status.error");
    if (status === "interrupted") return t("message.status.interrupted");
    return "";
  }

  /** Sets a message's status and its note; `noteKey` overrides the status's own text. */
  function setMessageStatus(message, status, noteKey) {
    message.dataset.status = status;
    message._note = noteKey;
    const note = message.querySelector(".message-note");
    const text = noteKey ? (noteKey.startsWith("errors.") || noteKey.startsWith("message.")
      ? t(noteKey) : noteKey) : noteFor(status);
    note.textContent = text;
    note.hidden = !text;
    if (status === "streaming") {
      message.setAttribute("aria-busy", "true");
    } else {
      message.removeAttribute("aria-busy");
    }
    renderActions(message);
  }

  function lastOf(role) {
    const all = el.messages.querySelectorAll(`.message-${role}`);
    return all.length ? all[all.length - 1] : null;
  }

  /** The action buttons a message offers, given its place and status. */
  function renderActions(message) {
    const actions = message.querySelector(".message-actions");
    if (!actions) return;
    actions.setAttribute("aria-label", t("message.actions"));
    const buttons = [];
    const status = message.dataset.status;
    const isLast = message === el.messages.lastElementChild;
    if (status === "streaming") {
      actions.replaceChildren();
      return;
    }
    if (message.dataset.raw) buttons.push(iconButton("copy", t("message.copy")));
    if (message.dataset.role === "assistant") {
      if (isLast && !state.streaming && state.currentId) {
        const failed = ["error", "incomplete", "interrupted"].includes(status);
        buttons.push(failed
          ? iconButton("retry", t("message.retry"), "action-retry")
          : iconButton("regenerate", t("message.regenerate")));
      }
      if (message.dataset.messageId && status === "complete") {
        for (const rating of ["up", "down"]) {
          const button = iconButton(rating, t("message." + rating), "action-" + rating);
          button.setAttribute("aria-pressed", String(message.dataset.feedback === rating));
          buttons.push(button);
        }
      }
    } else if (message === lastOf("user") && !state.streaming && state.currentId &&
               message.dataset.status !== "error") {
      buttons.push(iconButton("edit", t("message.edit")));
    }
    actions.replaceChildren(...buttons);
  }

  function refreshActions() {
    for (const message of el.messages.querySelectorAll(".message")) renderActions(message);
  }

  function appendMessage(m) {
    const message = buildMessage(m);
    el.messages.append(message);
    relabelMessage(message);
    updateEmptyState();
    refreshActions();
    return message;
  }

  function clearMessages() {
    el.messages.replaceChildren();
    state.olderBefore = null;
    updateEmptyState();
  }

  /**
   * Loads the newest page of a conversation (oldest first on screen). Older pages load
   * when the user scrolls to the top: `before` = the first shown message's id.
   */
  async function loadMessages(conversationId, epoch = ++state.epoch) {
    const path = `${conversationPath(conversationId)}/messages?limit=${PAGE_SIZE}`;
    let data = await api("GET", path);
    if (data.has_more === undefined && data.total > data.messages.length) {
      // A gateway without `before` paging: ask for the last page by offset.
      data = await api("GET", `${path}&offset=${data.total - PAGE_SIZE}`);
      data.has_more = data.offset > 0;
    }
    if (epoch !== state.epoch || conversationId !== state.currentId) return; // superseded
    clearMessages();
    const messages = data.messages || [];
    for (const m of messages) appendMessage(m);
    state.olderBefore = data.has_more && messages.length ? messages[0].id : null;
    scrollToBottom();
    const last = messages[messages.length - 1];
    if (last && last.role === "assistant" && last.status === "streaming") {
      reattach(conversationId, el.messages.lastElementChild);
    }
  }

  async function loadOlder() {
    if (!state.olderBefore || state.loadingOlder || !state.currentId) return;
    const conversationId = state.currentId;
    const epoch = state.epoch;
    state.loadingOlder = true;
    el.olderLoading.hidden = false;
    try {
      const before = encodeURIComponent(state.olderBefore);
      const data = await api(
        "GET", `${conversationPath(conversationId)}/messages?limit=${PAGE_SIZE}&before=${before}`);
      if (epoch !== state.epoch || conversationId !== state.currentId) return;
      const messages = data.messages || [];
      const height = el.scroll.scrollHeight;
      const top = el.scroll.scrollTop;
      const fragment = document.createDocumentFragment();
      for (const m of messages) {
        const message = buildMessage(m);
        fragment.append(message);
        relabelMessage(message);
      }
      el.messages.prepend(fragment);
      refreshActions();
      // Keep what the user was reading where it was.
      el.scroll.scrollTop = top + (el.scroll.scrollHeight - height);
      state.olderBefore = data.has_more && messages.length ? messages[0].id : null;
    } catch (err) {
      reportError(err);
    } finally {
      state.loadingOlder = false;
      el.olderLoading.hidden = true;
    }
  }

  // --------------------------------------------------------------- actions

  async function stopStreaming() {
    const streaming = state.streaming;
    if (!streaming) return;
    streaming.stopped = true;
    if (streaming.conversationId) {
      try {
        // The reply runs on the server independently of this request; ask it to stop.
        await api("POST", `${conversationPath(streaming.conversationId)}/stop`);
      } catch (_) {
        // An older gateway has no stop endpoint: closing the stream stops it there.
      }
    }
    streaming.controller.abort();
  }

  /** Leaves the reply streaming on the server, just stops showing it here. */
  function detachStreaming() {
    if (state.streaming) {
      state.streaming.detached = true;
      state.streaming.controller.abort();
    }
  }

  async function selectConversation(conversationId) {
    if (PHONE_QUERY.matches) setSidebarOpen(false);
    if (conversationId === state.currentId) return;
    detachStreaming();
    cancelEdit();
    state.currentId = conversationId;
    renderConversations();
    clearMessages();
    try {
      await loadMessages(conversationId);
    } catch (err) {
      reportError(err);
    }
  }

  /** A new conversation exists on the server only once its first message is sent. */
  function newConversation() {
    detachStreaming();
    cancelEdit();
    state.currentId = null;
    state.epoch++;
    clearMessages();
    renderConversations();
    if (PHONE_QUERY.matches) setSidebarOpen(false);
    el.input.focus();
  }

  async function renameConversation(conversation) {
    const title = window.prompt(
      t("conversation.renamePrompt", { title: conversationTitle(conversation) }),
      conversation.title || "");
    if (title === null || !title.trim()) return;
    try {
      await api("PATCH", conversationPath(conversation.id), { title: title.trim().slice(0, 120) });
      await loadConversations();
    } catch (err) {
      reportError(err);
    }
  }

  async function resetSession() {
    if (!window.confirm(t("session.resetConfirm"))) return;
    detachStreaming();
    try {
      const data = await api("POST", "/api/session/reset");
      // The reset leaves one empty conversation: the next message goes there.
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
    const title = conversationTitle(conversation);
    if (!window.confirm(t("conversation.deleteConfirm", { title }))) return;
    if (conversation.id === state.currentId) await stopStreaming();
    try {
      await api("DELETE", conversationPath(conversation.id));
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

  async function exportData() {
    try {
      const data = await api("GET", "/api/session/export");
      const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
      const link = node("a");
      link.href = URL.createObjectURL(blob);
      link.download = `chat-export-${new Date().toISOString().slice(0, 10)}.json`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    } catch (err) {
      reportError(err);
    }
  }

  async function deleteData() {
    if (!window.confirm(t("data.deleteConfirm"))) return;
    await stopStreaming();
    try {
      await api("DELETE", "/api/session");
      state.currentId = null;
      state.conversations = [];
      state.epoch++;
      clearMessages();
      renderConversations();
      showBanner(t("data.deleted"), null, "info");
    } catch (err) {
      reportError(err);
    }
  }

  /** Creates a fresh session (new cookie) after the old one expired; sends what was typed. */
  async function startNewSession(sendPending) {
    detachStreaming();
    try {
      await api("POST", "/api/session");
      state.currentId = null;
      state.conversations = [];
      clearMessages();
      hideBanner();
      await loadState();
      if (sendPending && el.input.value.trim()) {
        state.currentId = null; // what was typed starts a conversation in the new session
        clearMessages();
        await sendMessage();
      }
    } catch (err) {
      reportError(err);
    }
  }

  // ------------------------------------------------------------- streaming

  function setStreamingUi(active) {
    el.stop.hidden = !active;
    el.composer.classList.toggle("busy", active);
    updateCounter();
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

  /**
   * Streams a reply into `assistantEl` from `request()` (a fetch promise). Returns
   * "done", "error", "cut" (the stream ended early), "stopped", "detached" or, when the
   * request was refused before anything streamed, throws the ApiError.
   */
  async function streamInto(assistantEl, request, controller) {
    state.streaming = { controller, assistantEl, conversationId: state.currentId };
    // Only the reply being written is a live region, so nothing else is re-announced.
    for (const live of el.messages.querySelectorAll("[aria-live]")) live.removeAttribute("aria-live");
    assistantEl.querySelector(".message-content").setAttribute("aria-live", "polite");
    setStreamingUi(true);
    refreshActions();
    let reply = "";
    let outcome = "cut";
    let listRefreshed = false;
    const streaming = state.streaming;
    try {
      const response = await request();
      if (!response.ok) throw await toApiError(response);
      await readSse(response.body, (frame) => {
        if (frame.conversation_id && !streaming.detached) {
          state.currentId = frame.conversation_id;
          streaming.conversationId = frame.conversation_id;
        }
        if (frame.message_id) assistantEl.dataset.messageId = frame.message_id;
        if (!listRefreshed && state.currentId) {
          // The sidebar shows the conversation (and its title) as soon as the reply starts.
          listRefreshed = true;
          loadConversations().catch(() => {});
        }
        if (frame.type === "start") {
          reply = "";
        } else if (frame.type === "message") {
          reply += frame.content || "";
          scheduleRender(assistantEl, reply);
        } else if (frame.type === "done") {
          outcome = "done";
          renderContent(assistantEl, reply);
          // "length": cut at the reply cap; "cancelled": stopped (here or elsewhere).
          const reason = frame.finish_reason || "stop";
          if (reason === "stop") setMessageStatus(assistantEl, "complete");
          else if (reason === "cancelled") {
            setMessageStatus(assistantEl, "incomplete", "message.status.stopped");
          } else setMessageStatus(assistantEl, "incomplete");
        } else if (frame.type === "error") {
          outcome = "error";
          renderContent(assistantEl, reply);
          setMessageStatus(assistantEl, "error", "errors." + (frame.code || "unknown"));
          if (EXPIRED_CODES.has(frame.code)) showSessionExpired();
        }
      });
    } catch (err) {
      if (err && err.name === "AbortError") {
        outcome = streaming.detached ? "detached" : "stopped";
      } else if (!reply && outcome === "cut") {
        throw err;
      }
    } finally {
      if (state.streaming === streaming) state.streaming = null;
      setStreamingUi(false);
    }
    if (outcome === "stopped") {
      renderContent(assistantEl, reply);
      setMessageStatus(assistantEl, "incomplete", "message.status.stopped");
    } else if (outcome === "cut") {
      renderContent(assistantEl, reply);
      setMessageStatus(assistantEl, "incomplete", "message.status.cut");
    }
    refreshActions();
    return outcome;
  }

  /**
   * Sends the composer's text (or, for `regenerate`, asks for a new last reply).
   * A refused send puts the text back in the composer and offers Retry.
   */
  async function sendMessage(options = {}) {
    const regenerate = Boolean(options.regenerate);
    const text = regenerate ? "" : el.input.value;
    if (state.streaming) return;
    if (!regenerate && (!text.trim() || text.length > state.ui.max_message_chars)) return;
    const editing = state.editing && !regenerate && state.currentId;
    state.epoch++;
    hideBanner();

    // What the screen looks like after the turn: the edited / regenerated tail replaced.
    const removed = [];
    if (editing) {
      const lastUser = lastOf("user");
      let cursor = lastUser;
      while (cursor) {
        const next = cursor.nextElementSibling;
        removed.push(cursor);
        cursor = next;
      }
    } else if (regenerate) {
      const lastReply = lastOf("assistant");
      if (lastReply && lastReply === el.messages.lastElementChild) removed.push(lastReply);
    }
    for (const message of removed) message.remove();
    const userEl = regenerate ? null : appendMessage({ role: "user", content: text });
    const assistantEl = appendMessage({ role: "assistant", content: "", status: "streaming" });
    scrollToBottom();
    if (!regenerate) {
      el.input.value = "";
      sessionStorage.removeItem(DRAFT_KEY);
      setEditing(false);
      onInput();
    }

    const payload = { message: text };
    if (state.currentId) payload.conversation_id = state.currentId;
    else payload.new_conversation = true;
    if (regenerate) payload.regenerate = true;
    if (editing) payload.edit_last = true;
    const controller = new AbortController();
    const request = () => fetch("/api/chat/stream", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(payload),
      signal: controller.signal,
    });

    let outcome;
    try {
      outcome = await streamInto(assistantEl, request, controller);
    } catch (err) {
      // Refused before anything streamed: nothing was stored. Put the screen and the
      // composer back as they were, and offer Retry.
      assistantEl.remove();
      if (userEl) userEl.remove();
      for (const message of removed) el.messages.append(message);
      updateEmptyState();
      if (!regenerate) {
        el.input.value = text;
        if (editing) setEditing(true);
        onInput();
      }
      refreshActions();
      reportError(err, () => sendMessage({ regenerate }));
      return;
    }
    if (outcome === "cut" && state.currentId) {
      // The connection dropped, not the reply: it goes on on the server; follow it.
      await reattach(state.currentId, assistantEl);
      return;
    }
    try {
      await loadConversations();
    } catch (err) {
      reportError(err);
    }
    refreshActions();
  }

  /** Follows a reply still being written (after a reload), from any gateway replica. */
  async function reattach(conversationId, assistantEl) {
    if (state.streaming) return;
    const controller = new AbortController();
    const request = () => fetch(`${conversationPath(conversationId)}/reply`, {
      credentials: "same-origin",
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    try {
      await streamInto(assistantEl, request, controller);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && conversationId === state.currentId) {
        // It finished meanwhile: show what was stored.
        await loadMessages(conversationId).catch(reportError);
        return;
      }
      reportError(err);
    }
    loadConversations().catch(() => {});
  }

  // ------------------------------------------------------------ message actions

  async function rate(message, rating) {
    const next = message.dataset.feedback === rating ? null : rating;
    const conversationId = state.currentId;
    try {
      await api("POST",
        `${conversationPath(conversationId)}/messages/${encodeURIComponent(message.dataset.messageId)}/feedback`,
        { rating: next });
      if (next) message.dataset.feedback = next;
      else delete message.dataset.feedback;
      renderActions(message);
    } catch (err) {
      reportError(err);
    }
  }

  function setEditing(on) {
    state.editing = on;
    el.composerEdit.hidden = !on;
  }

  function startEdit(message) {
    setEditing(true);
    el.input.value = message.dataset.raw || "";
    onInput();
    el.input.focus();
  }

  function cancelEdit() {
    if (!state.editing) return;
    setEditing(false);
    el.input.value = "";
    onInput();
  }

  el.messages.addEventListener("click", async (event) => {
    const codeCopy = event.target.closest(".code-copy");
    if (codeCopy) {
      const code = codeCopy.closest(".code-block").querySelector("pre");
      if (await copyText(code.textContent)) flash(codeCopy, "code.copied");
      return;
    }
    const button = event.target.closest("button.action");
    if (!button) return;
    const message = button.closest(".message");
    const action = button.dataset.action;
    if (action === "copy") {
      if (await copyText(message.dataset.raw || "")) flash(button, "message.copied");
    } else if (action === "regenerate" || action === "retry") {
      sendMessage({ regenerate: true });
    } else if (action === "edit") {
      startEdit(message);
    } else if (action === "up" || action === "down") {
      rate(message, action);
    }
  });

  // ------------------------------------------------------------------ input

  function updateCounter() {
    const max = state.ui.max_message_chars;
    const length = el.input.value.length;
    const over = length - max;
    el.counter.hidden = length < max * 0.8;
    el.counter.classList.toggle("over", over > 0);
    el.counter.textContent = over > 0
      ? t("composer.tooLong", { count: over })
      : t("composer.counter", { count: length, max });
    el.send.disabled = Boolean(state.streaming) || !el.input.value.trim() || over > 0;
  }

  function autoSize() {
    el.input.style.height = "auto";
    el.input.style.height = Math.min(el.input.scrollHeight, 200) + "px";
  }

  function onInput() {
    autoSize();
    updateCounter();
    try {
      if (el.input.value) sessionStorage.setItem(DRAFT_KEY, el.input.value);
      else sessionStorage.removeItem(DRAFT_KEY);
    } catch (_) {
      // Storage full or disabled: the draft just is not kept across reloads.
    }
  }

  el.input.addEventListener("input", onInput);
  el.input.addEventListener("keydown", (event) => {
    // Never send while an IME (Chinese, Japanese, …) is composing: Enter then
    // confirms the candidate. keyCode 229 covers browsers that report it that way.
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      sendMessage();
    } else if (event.key === "Escape" && state.editing) {
      cancelEdit();
    }
  });
  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  el.stop.addEventListener("click", stopStreaming);
  el.cancelEdit.addEventListener("click", cancelEdit);
  el.newConversation.addEventListener("click", newConversation);
  el.resetSession.addEventListener("click", resetSession);
  el.exportData.addEventListener("click", exportData);
  el.deleteData.addEventListener("click", deleteData);
  el.bannerDismiss.addEventListener("click", hideBanner);
  el.theme.addEventListener("click", cycleTheme);
  el.language.addEventListener("change", () => switchLanguage(el.language.value));
  el.jumpLatest.addEventListener("click", scrollToBottom);
  el.scroll.addEventListener("scroll", () => {
    el.jumpLatest.hidden = isNearBottom() || el.messages.childElementCount === 0;
    if (el.scroll.scrollTop < 120) loadOlder();
  }, { passive: true });
  el.toggle.addEventListener("click", () => setSidebarOpen(!el.sidebar.classList.contains("open")));
  el.backdrop.addEventListener("click", () => setSidebarOpen(false));
  PHONE_QUERY.addEventListener("change", () => setSidebarOpen(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && el.sidebar.classList.contains("open")) setSidebarOpen(false);
  });

  // ------------------------------------------------------------------- boot

  async function loadUi() {
    try {
      const ui = await api("GET", "/api/ui");
      state.ui = { ...state.ui, ...ui };
    } catch (_) {
      // An older gateway: the defaults above apply.
    }
    window.sgMarkdown.configure({ imageHosts: state.ui.image_hosts });
    applyAccent(state.ui.accent_color);
    // Admins (and only they) learn the provider and version.
    el.serviceInfo.textContent = state.ui.provider
      ? `${state.ui.provider} · v${state.ui.version}` : "";
  }

  /** Loads the session's conversations and shows the most recent one's messages. */
  async function loadState() {
    const epoch = ++state.epoch;
    try {
      await api("GET", "/api/session/info");
    } catch (err) {
      // A first visit has no session; reading never creates one (the first message does).
      if (!hasNoSession(err)) throw err;
      state.conversations = [];
      state.currentId = null;
      renderConversations();
      clearMessages();
      return;
    }
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
    await loadUi();
    const language = i18n.pickLanguage(state.ui.language, state.ui.languages);
    await i18n.use(language);
    await renderLanguageSelect();
    localize();
    try {
      const draft = sessionStorage.getItem(DRAFT_KEY);
      if (draft) el.input.value = draft;
    } catch (_) {
      // No storage: no draft.
    }
    onInput();
    setStreamingUi(false);
    updateEmptyState();
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
