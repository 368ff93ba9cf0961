// sessiongate admin dashboard. Plain JS, no build step, no libraries.
//
// Security: the admin token lives in sessionStorage (this tab only, gone when it
// closes) and is sent as "Authorization: Bearer"; requests omit cookies so a chat
// session cookie on the same origin is never mixed in. Every value from the server
// is rendered with textContent, never innerHTML, so stored chat text or user names
// cannot inject markup or script.
"use strict";

(() => {
  const TOKEN_KEY = "sessiongate.admin_token";
  const PAGE_SIZE = 50;
  const STATS_REFRESH_MS = 30_000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const el = {
    topbarActions: $("topbar-actions"),
    refresh: $("refresh"),
    signOut: $("sign-out"),
    banner: $("error-banner"),
    bannerText: $("error-text"),
    bannerDismiss: $("error-dismiss"),
    signInPanel: $("sign-in-panel"),
    signInForm: $("sign-in-form"),
    token: $("admin-token"),
    signInButton: $("sign-in"),
    signInError: $("sign-in-error"),
    dashboard: $("dashboard"),
    statsActive: $("stats-active"),
    statsTotal: $("stats-total"),
    statsTurns: $("stats-turns"),
    statsTokens: $("stats-tokens"),
    statsTokensHour: $("stats-tokens-hour"),
    statsTenants: $("stats-tenants"),
    statsErrors: $("stats-errors"),
    statsErrorsList: $("stats-errors-list"),
    chart: $("turns-chart"),
    chartPeak: $("chart-peak"),
    runCleanup: $("run-cleanup"),
    cleanupResult: $("cleanup-result"),
    filters: $("filters"),
    search: $("search"),
    filterState: $("filter-state"),
    filterTenant: $("filter-tenant"),
    filterAfter: $("filter-after"),
    filterBefore: $("filter-before"),
    clearFilters: $("clear-filters"),
    tbody: $("sessions-body"),
    empty: $("sessions-empty"),
    prev: $("prev-page"),
    next: $("next-page"),
    pageInfo: $("page-info"),
    detail: $("session-detail"),
    detailBackdrop: $("detail-backdrop"),
    detailClose: $("detail-close"),
    detailMeta: $("detail-meta"),
    detailDelete: $("detail-delete"),
    detailHiddenNote: $("detail-hidden-note"),
    detailConversations: $("detail-conversations"),
  };

  const state = {
    // Keyset paging: cursors[i] is the `after` that loads page i (null for the first).
    cursors: [null],
    page: 0,
    nextCursor: null,
    detailId: null,
    loadSeq: 0,
    statsTimer: null,
    points: [],
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** Calls the admin API; returns parsed JSON or throws ApiError. */
  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      credentials: "omit",
      cache: "no-store",
      headers: { Accept: "application/json", Authorization: "Bearer " + token() },
    });
    if (response.ok) return response.json();
    let code = "http_" + response.status;
    let message = "";
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || "";
      }
    } catch (_) {
      // Not JSON (a proxy's error page): fall back to the status text.
    }
    throw new ApiError(response.status, code, message || response.statusText || "Request failed.");
  }

  /** Shows an error; 401/403 also sign out, with a message saying why. */
  function handleError(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut("The admin token was not accepted (" + err.message + "). Sign in again.");
      return;
    }
    if (err instanceof ApiError && err.status === 403) {
      signOut("These credentials do not have admin rights.");
      return;
    }
    showBanner(err instanceof ApiError ? err.message : "The gateway could not be reached.");
  }

  function showBanner(text) {
    el.bannerText.textContent = text;
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
    el.bannerText.textContent = "";
  }

  // ---------------------------------------------------------------- formatting

  const numberFormat = new Intl.NumberFormat();
  const timeFormat = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
  const fullTimeFormat = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium", timeStyle: "medium",
  });

  const fmtNumber = (n) => numberFormat.format(n);
  const fmtTime = (iso) => timeFormat.format(new Date(iso));
  const fmtFullTime = (iso) => fullTimeFormat.format(new Date(iso));

  function fmtAgo(iso) {
    const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 60) return "just now";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    return fmtTime(iso);
  }

  function node(tag, className, text) {
    const n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  // ---------------------------------------------------------------- sign in / out

  function showSignIn(message) {
    el.dashboard.hidden = true;
    el.topbarActions.hidden = true;
    el.signInPanel.hidden = false;
    el.signInError.hidden = !message;
    el.signInError.textContent = message || "";
    closeDetail();
    el.token.focus();
    document.body.dataset.ready = "true";
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(state.statsTimer);
    state.statsTimer = null;
    el.tbody.replaceChildren();
    hideBanner();
    showSignIn(message);
  }

  async function signIn(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
    el.signInButton.disabled = true;
    try {
      await loadStats(); // proves the token before showing anything
    } catch (err) {
      handleError(err);
      if (el.dashboard.hidden) showSignIn(el.signInError.textContent);
      return;
    } finally {
      el.signInButton.disabled = false;
    }
    el.token.value = "";
    el.signInPanel.hidden = true;
    el.signInError.hidden = true;
    el.dashboard.hidden = false;
    el.topbarActions.hidden = false;
    renderChart(state.points); // now that the chart has a size
    resetPaging();
    await loadSessions();
    clearInterval(state.statsTimer);
    state.statsTimer = setInterval(() => {
      if (document.visibilityState === "visible") loadStats().catch(handleError);
    }, STATS_REFRESH_MS);
  }

  // ---------------------------------------------------------------- stats and chart

  async function loadStats() {
    const stats = await api("/api/admin/stats");
    el.statsActive.textContent = fmtNumber(stats.sessions_active);
    el.statsTotal.textContent = fmtNumber(stats.sessions_total);
    el.statsTurns.textContent = fmtNumber(stats.turns_last_hour);
    el.statsTokens.textContent = fmtNumber(stats.reply_tokens);
    el.statsTokensHour.textContent = fmtNumber(stats.reply_tokens_last_hour) + " in the last hour";
    el.statsTenants.textContent = fmtNumber(stats.tenants);
    const errors = Object.entries(stats.errors_by_code).sort((a, b) => b[1] - a[1]);
    el.statsErrors.textContent = fmtNumber(errors.reduce((sum, [, n]) => sum + n, 0));
    el.statsErrorsList.replaceChildren(
      ...errors.slice(0, 4).map(([code, n]) => node("li", "", code + ": " + fmtNumber(n)))
    );
    state.points = stats.turns_per_minute;
    if (!el.dashboard.hidden) renderChart(state.points);
  }

  function svg(tag, attrs) {
    const n = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    return n;
  }

  /** Draws turns per minute as a bar chart in an inline SVG sized to its box. */
  function renderChart(points) {
    const width = Math.max(el.chart.clientWidth, 240);
    const height = Math.max(el.chart.clientHeight, 100);
    const left = 28, bottom = 18, top = 6;
    const plotW = width - left, plotH = height - bottom - top;
    const peak = Math.max(1, ...points.map((p) => p.turns));
    const slot = plotW / points.length;
    const barW = Math.max(1, slot - Math.min(3, slot * 0.25));

    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
    root.append(svg("line", { class: "axis", x1: left, x2: width, y1: top + plotH, y2: top + plotH }));
    const label = (x, y, text, anchor) => {
      const t = svg("text", { class: "label", x, y, "text-anchor": anchor });
      t.textContent = text;
      root.append(t);
    };
    label(left - 6, top + 10, fmtNumber(peak), "end");
    label(left - 6, top + plotH, "0", "end");
    label(left, height - 3, "60 min ago", "start");
    label(width, height - 3, "now", "end");

    points.forEach((p, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      const h = (p.turns / peak) * plotH;
      const bar = svg("rect", {
        class: p.turns ? "bar" : "bar-bg",
        x: x.toFixed(2),
        y: (top + plotH - Math.max(h, 2)).toFixed(2),
        width: barW.toFixed(2),
        height: Math.max(h, 2).toFixed(2),
        rx: Math.min(2, barW / 2),
      });
      const title = svg("title", {});
      title.textContent = fmtTime(p.minute) + " · " + fmtNumber(p.turns) + " turns";
      bar.append(title);
      root.append(bar);
    });
    el.chart.replaceChildren(root);
    const max = Math.max(0, ...points.map((p) => p.turns));
    el.chartPeak.textContent = "peak " + fmtNumber(max) + "/min";
  }

  // ---------------------------------------------------------------- sessions table

  function filterParams() {
    const params = new URLSearchParams();
    const search = el.search.value.trim();
    if (search) params.set("search", search);
    if (el.filterState.value) params.set("state", el.filterState.value);
    const tenant = el.filterTenant.value.trim();
    if (tenant) params.set("tenant_id", tenant);
    // datetime-local is the browser's local time; the API wants an absolute instant.
    if (el.filterAfter.value) params.set("active_after", new Date(el.filterAfter.value).toISOString());
    if (el.filterBefore.value) params.set("active_before", new Date(el.filterBefore.value).toISOString());
    return params;
  }

  function resetPaging() {
    state.cursors = [null];
    state.page = 0;
    state.nextCursor = null;
  }

  async function loadSessions() {
    const seq = ++state.loadSeq;
    const params = filterParams();
    params.set("limit", String(PAGE_SIZE));
    const after = state.cursors[state.page];
    if (after) params.set("after", after);
    let page;
    try {
      page = await api("/api/admin/sessions?" + params.toString());
    } catch (err) {
      handleError(err);
      return;
    }
    if (seq !== state.loadSeq) return; // a newer load started meanwhile
    state.nextCursor = page.next_cursor;
    el.tbody.replaceChildren(...page.sessions.map(sessionRow));
    el.empty.hidden = page.sessions.length > 0;
    el.prev.disabled = state.page === 0;
    el.next.disabled = !page.next_cursor;
    const first = state.page * PAGE_SIZE + 1;
    el.pageInfo.textContent = page.sessions.length
      ? `${fmtNumber(first)}–${fmtNumber(first + page.sessions.length - 1)}`
      : "";
    document.body.dataset.ready = "true";
  }

  function sessionRow(s) {
    const tr = node("tr", "session-row");
    tr.dataset.id = s.id;
    if (s.id === state.detailId) tr.classList.add("selected");

    const idCell = node("td");
    const open = node("button", "session-open", s.id.slice(0, 8) + "…");
    open.type = "button";
    open.title = s.id;
    open.setAttribute("aria-label", "Open session " + s.id);
    idCell.append(open);

    const user = node("td", "cell-user");
    const userName = node("span", "truncate", s.user || "—");
    if (s.user) userName.title = s.user;
    user.append(userName);
    const tenant = node("td", "col-wide", s.tenant_name ? s.tenant_name : s.kind);
    const active = node("td", "cell-time", fmtAgo(s.last_active_at));
    active.title = fmtFullTime(s.last_active_at);
    const stateCell = node("td", "col-wide");
    stateCell.append(node("span", "badge badge-" + s.state, s.state));
    stateCell.title = "expires " + fmtFullTime(s.expires_at);

    const actions = node("td", "cell-actions");
    const del = node("button", "delete-session", "Delete");
    del.type = "button";
    del.setAttribute("aria-label", "Delete session " + s.id);
    del.addEventListener("click", (event) => {
      event.stopPropagation();
      deleteSession(s.id);
    });
    actions.append(del);

    tr.append(
      idCell, user, tenant, active, stateCell,
      node("td", "num col-wide", fmtNumber(s.conversation_count)),
      node("td", "num col-narrow", fmtNumber(s.message_count)),
      actions,
    );
    tr.addEventListener("click", () => openDetail(s.id));
    return tr;
  }

  // ---------------------------------------------------------------- detail

  function metaRow(term, value, mono) {
    const dd = node("dd", mono ? "mono" : "", value === null || value === undefined ? "—" : value);
    return [node("dt", "", term), dd];
  }

  async function openDetail(id) {
    state.detailId = id;
    for (const row of el.tbody.querySelectorAll("tr.session-row")) {
      row.classList.toggle("selected", row.dataset.id === id);
    }
    let detail;
    try {
      detail = await api("/api/admin/sessions/" + encodeURIComponent(id));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        showBanner("That session no longer exists.");
        await loadSessions();
      } else {
        handleError(err);
      }
      return;
    }
    if (state.detailId !== id) return;
    const s = detail.session;
    el.detail.dataset.id = s.id;
    el.detailMeta.replaceChildren(
      ...metaRow("Session id", s.id, true),
      ...metaRow("Session name", s.session_name, true),
      ...metaRow("Kind", s.kind),
      ...metaRow("Tenant", s.tenant_name ? `${s.tenant_name} (${s.tenant_id})` : null),
      ...metaRow("User", s.user),
      ...(s.issuer ? metaRow("Issuer", s.issuer) : []),
      ...metaRow("State", s.state),
      ...metaRow("Created", fmtFullTime(s.created_at)),
      ...metaRow("Last active", fmtFullTime(s.last_active_at)),
      ...metaRow("Expires", fmtFullTime(s.expires_at)),
      ...metaRow("Conversations", fmtNumber(s.conversation_count)),
      ...metaRow("Messages", fmtNumber(s.message_count)),
    );
    el.detailHiddenNote.hidden = detail.content_visible;
    el.detailConversations.replaceChildren(...detail.conversations.map(conversationBlock));
    if (!detail.conversations.length) {
      el.detailConversations.append(node("p", "muted small", "No conversations."));
    }
    el.detail.hidden = false;
    el.detailBackdrop.hidden = false;
    el.detailClose.focus();
  }

  function conversationBlock(c) {
    const box = node("section", "conversation");
    box.dataset.id = c.id;
    const head = node("div", "conversation-head");
    head.append(
      node("span", "conversation-title", c.title || (c.messages ? "Untitled" : c.id)),
      node("span", "conversation-meta", `${fmtNumber(c.message_count)} msgs · ${fmtTime(c.updated_at)}`),
    );
    box.append(head);
    if (c.messages) {
      const list = node("div", "messages");
      for (const m of c.messages) {
        const msg = node("div", "message message-" + (m.role === "user" ? "user" : "assistant"));
        msg.dataset.status = m.status;
        msg.append(node("div", "message-content", m.content));
        const note = [fmtTime(m.created_at)];
        if (m.status !== "complete") note.push(m.status);
        if (m.error_code) note.push(m.error_code);
        if (m.completion_tokens) note.push(fmtNumber(m.completion_tokens) + " tokens");
        msg.append(node("span", "message-note", note.join(" · ")));
        list.append(msg);
      }
      box.append(list);
    }
    return box;
  }

  function closeDetail() {
    state.detailId = null;
    el.detail.hidden = true;
    el.detailBackdrop.hidden = true;
    delete el.detail.dataset.id;
    for (const row of el.tbody.querySelectorAll("tr.selected")) row.classList.remove("selected");
  }

  // ---------------------------------------------------------------- actions

  async function deleteSession(id) {
    if (!confirm(`Delete session ${id} with all its conversations and messages?`)) return;
    try {
      const result = await api("/api/admin/sessions/" + encodeURIComponent(id), { method: "DELETE" });
      hideBanner();
      el.cleanupResult.classList.add("ok");
      el.cleanupResult.textContent =
        `Deleted session ${id.slice(0, 8)}… (${result.conversations} conversations, ` +
        `${result.messages} messages).`;
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        handleError(err);
        return;
      }
    }
    if (state.detailId === id) closeDetail();
    await Promise.all([loadSessions(), loadStats().catch(handleError)]);
  }

  async function runCleanup() {
    if (!confirm("Delete every expired session now?")) return;
    el.runCleanup.disabled = true;
    el.cleanupResult.classList.remove("ok");
    el.cleanupResult.textContent = "Cleaning up…";
    try {
      const r = await api("/api/admin/cleanup", { method: "POST" });
      el.cleanupResult.classList.add("ok");
      el.cleanupResult.textContent = r.skipped
        ? "Another cleanup is running; nothing was deleted."
        : `Deleted ${fmtNumber(r.sessions)} expired sessions, ` +
          `${fmtNumber(r.conversations)} conversations, ${fmtNumber(r.messages)} messages.`;
    } catch (err) {
      el.cleanupResult.textContent = "";
      handleError(err);
      return;
    } finally {
      el.runCleanup.disabled = false;
    }
    resetPaging();
    await Promise.all([loadSessions(), loadStats().catch(handleError)]);
  }

  // ---------------------------------------------------------------- wiring

  el.signInForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = el.token.value.trim();
    if (value) signIn(value);
  });
  el.signOut.addEventListener("click", () => signOut(""));
  el.refresh.addEventListener("click", () => {
    loadStats().catch(handleError);
    loadSessions();
  });
  el.bannerDismiss.addEventListener("click", hideBanner);
  el.filters.addEventListener("submit", (event) => {
    event.preventDefault();
    resetPaging();
    loadSessions();
  });
  el.filterState.addEventListener("change", () => {
    resetPaging();
    loadSessions();
  });
  el.clearFilters.addEventListener("click", () => {
    el.filters.reset();
    resetPaging();
    loadSessions();
  });
  el.next.addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.cursors[state.page + 1] = state.nextCursor;
    state.page += 1;
    loadSessions();
  });
  el.prev.addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    loadSessions();
  });
  el.runCleanup.addEventListener("click", runCleanup);
  el.detailClose.addEventListener("click", closeDetail);
  el.detailBackdrop.addEventListener("click", closeDetail);
  el.detailDelete.addEventListener("click", () => {
    if (state.detailId) deleteSession(state.detailId);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !el.detail.hidden) closeDetail();
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (!el.dashboard.hidden) renderChart(state.points);
    }, 150);
  });

  if (token()) {
    signIn(token());
  } else {
    showSignIn("");
  }
})();
