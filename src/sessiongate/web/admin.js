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

  const i18n = window.sgI18n;
  const t = i18n.t;
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
    statsFeedbackDown: $("stats-feedback-down"),
    statsFeedback: $("stats-feedback"),
    feedbackRating: $("feedback-rating"),
    feedbackBody: $("feedback-body"),
    feedbackEmpty: $("feedback-empty"),
    language: $("language-select"),
    tenantsCard: $("tenants-card"),
    tenantForm: $("tenant-form"),
    tenantName: $("tenant-name"),
    tenantSystemPrompt: $("tenant-system-prompt"),
    tenantsBody: $("tenants-body"),
    tenantsEmpty: $("tenants-empty"),
    tenantKeyBox: $("tenant-key-box"),
    tenantKeyText: $("tenant-key-text"),
    tenantKey: $("tenant-key"),
    tenantKeyCopy: $("tenant-key-copy"),
    tenantKeyGrace: $("tenant-key-grace"),
    serviceInfo: $("service-info"),
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
    const headers = { Accept: "application/json", Authorization: "Bearer " + token() };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      ...options,
      credentials: "omit",
      cache: "no-store",
      headers,
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
      signOut(t("admin.notAccepted", { reason: err.message }));
      return;
    }
    if (err instanceof ApiError && err.status === 403) {
      signOut(t("admin.notAdmin"));
      return;
    }
    showBanner(err instanceof ApiError ? err.message : t("admin.unreachable"));
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

  // Numbers and times per the page's language (i18n.js).
  const fmtNumber = (n) => i18n.formatNumber(n);
  const fmtTime = (iso) => i18n.formatDateTime(iso, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
  const fmtFullTime = (iso) => i18n.formatDateTime(iso, { dateStyle: "medium", timeStyle: "medium" });

  function fmtAgo(iso) {
    const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (seconds < 60) return t("admin.justNow");
    if (seconds < 3600) return t("admin.minAgo", { count: Math.floor(seconds / 60) });
    if (seconds < 86400) return t("admin.hAgo", { count: Math.floor(seconds / 3600) });
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
    // A key shown once must not stay on screen for the next person.
    el.tenantKeyBox.hidden = true;
    el.tenantKey.textContent = "";
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
    await Promise.all([loadSessions(), loadFeedback(), loadServiceInfo(), loadTenants()]);
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
    el.statsTokensHour.textContent = t("admin.stats.tokensHour", { count: stats.reply_tokens_last_hour });
    el.statsTenants.textContent = fmtNumber(stats.tenants);
    const errors = Object.entries(stats.errors_by_code).sort((a, b) => b[1] - a[1]);
    el.statsErrors.textContent = fmtNumber(errors.reduce((sum, [, n]) => sum + n, 0));
    el.statsErrorsList.replaceChildren(
      ...errors.slice(0, 4).map(([code, n]) => node("li", "", code + ": " + fmtNumber(n)))
    );
    const feedback = stats.feedback || {};
    el.statsFeedbackDown.textContent = fmtNumber(feedback.down || 0);
    el.statsFeedback.textContent = t("admin.stats.feedbackDetail", {
      up: feedback.up || 0, down: feedback.down || 0,
    });
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
    label(left, height - 3, t("admin.chart.start"), "start");
    label(width, height - 3, t("admin.chart.now"), "end");

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
      title.textContent = t("admin.chart.bar", { time: fmtTime(p.minute), count: p.turns });
      bar.append(title);
      root.append(bar);
    });
    el.chart.replaceChildren(root);
    const max = Math.max(0, ...points.map((p) => p.turns));
    el.chartPeak.textContent = t("admin.chart.peak", { count: max });
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
    open.setAttribute("aria-label", t("admin.openSession", { id: s.id }));
    idCell.append(open);

    const user = node("td", "cell-user");
    const userName = node("span", "truncate", s.user || "—");
    if (s.user) userName.title = s.user;
    user.append(userName);
    const tenant = node("td", "col-wide", s.tenant_name ? s.tenant_name : s.kind);
    const active = node("td", "cell-time", fmtAgo(s.last_active_at));
    active.title = fmtFullTime(s.last_active_at);
    const stateCell = node("td", "col-wide");
    stateCell.append(node("span", "badge badge-" + s.state, t("admin.state." + s.state)));
    stateCell.title = t("admin.expires", { time: fmtFullTime(s.expires_at) });

    const actions = node("td", "cell-actions");
    const del = node("button", "delete-session", t("admin.delete"));
    del.type = "button";
    del.setAttribute("aria-label", t("admin.deleteSessionLabel", { id: s.id }));
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
        showBanner(t("admin.sessionGone"));
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
      ...metaRow(t("admin.meta.id"), s.id, true),
      ...metaRow(t("admin.meta.name"), s.session_name, true),
      ...metaRow(t("admin.meta.kind"), s.kind),
      ...metaRow(t("admin.meta.tenant"), s.tenant_name ? `${s.tenant_name} (${s.tenant_id})` : null),
      ...metaRow(t("admin.meta.user"), s.user),
      ...(s.issuer ? metaRow(t("admin.meta.issuer"), s.issuer) : []),
      ...metaRow(t("admin.meta.state"), t("admin.state." + s.state)),
      ...metaRow(t("admin.meta.created"), fmtFullTime(s.created_at)),
      ...metaRow(t("admin.meta.lastActive"), fmtFullTime(s.last_active_at)),
      ...metaRow(t("admin.meta.expires"), fmtFullTime(s.expires_at)),
      ...metaRow(t("admin.meta.conversations"), fmtNumber(s.conversation_count)),
      ...metaRow(t("admin.meta.messages"), fmtNumber(s.message_count)),
    );
    el.detailHiddenNote.hidden = detail.content_visible;
    el.detailConversations.replaceChildren(...detail.conversations.map(conversationBlock));
    if (!detail.conversations.length) {
      el.detailConversations.append(node("p", "muted small", t("admin.noConversations")));
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
      node("span", "conversation-title", c.title || (c.messages ? t("admin.untitled") : c.id)),
      node("span", "conversation-meta",
        `${t("admin.msgs", { count: c.message_count })} · ${fmtTime(c.updated_at)}`),
    );
    box.append(head);
    if (c.messages) {
      const list = node("div", "messages");
      for (const m of c.messages) {
        const msg = node("div", "message message-" + (m.role === "user" ? "user" : "assistant"));
        msg.dataset.status = m.status;
        if (m.feedback) msg.dataset.feedback = m.feedback;
        msg.append(node("div", "message-content", m.content));
        const note = [fmtTime(m.created_at)];
        if (m.status !== "complete") note.push(m.status);
        if (m.error_code) note.push(m.error_code);
        if (m.completion_tokens) note.push(t("admin.tokensCount", { count: m.completion_tokens }));
        if (m.feedback) note.push(t("admin.rating." + m.feedback));
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
    if (!confirm(t("admin.deleteConfirm", { id }))) return;
    try {
      const result = await api("/api/admin/sessions/" + encodeURIComponent(id), { method: "DELETE" });
      hideBanner();
      el.cleanupResult.classList.add("ok");
      el.cleanupResult.textContent = t("admin.deletedSession", {
        id: id.slice(0, 8) + "…", conversations: result.conversations, messages: result.messages,
      });
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
    if (!confirm(t("admin.cleanupConfirm"))) return;
    el.runCleanup.disabled = true;
    el.cleanupResult.classList.remove("ok");
    el.cleanupResult.textContent = t("admin.cleaning");
    try {
      const r = await api("/api/admin/cleanup", { method: "POST" });
      el.cleanupResult.classList.add("ok");
      el.cleanupResult.textContent = r.skipped
        ? t("admin.cleanupSkipped")
        : t("admin.cleanupDone", {
          sessions: r.sessions, conversations: r.conversations, messages: r.messages,
        });
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

  // ---------------------------------------------------------------- feedback

  /** Rated replies, most recently rated first, filtered by the rating select. */
  async function loadFeedback() {
    const params = new URLSearchParams({ limit: "50" });
    if (el.feedbackRating.value) params.set("rating", el.feedbackRating.value);
    let page;
    try {
      page = await api("/api/admin/feedback?" + params.toString());
    } catch (err) {
      handleError(err);
      return;
    }
    el.feedbackBody.replaceChildren(...page.items.map(feedbackRow));
    el.feedbackEmpty.hidden = page.items.length > 0;
  }

  function feedbackRow(item) {
    const tr = node("tr", "feedback-row");
    tr.dataset.messageId = item.message_id;
    tr.dataset.rating = item.rating;
    const when = node("td", "cell-time", fmtAgo(item.rated_at));
    when.title = fmtFullTime(item.rated_at);
    const rating = node("td");
    rating.append(node("span", "badge badge-" + item.rating, t("admin.rating." + item.rating)));
    const question = node("td", "cell-text");
    question.append(node("span", "truncate", item.question === null ? t("admin.hidden") : item.question));
    const reply = node("td", "cell-text col-wide");
    reply.append(node("span", "truncate", item.reply === null ? t("admin.hidden") : item.reply));
    const session = node("td");
    const open = node("button", "session-open", item.session_id.slice(0, 8) + "…");
    open.type = "button";
    open.setAttribute("aria-label", t("admin.openSession", { id: item.session_id }));
    session.append(open);
    tr.append(when, rating, question, reply, session);
    tr.addEventListener("click", () => openDetail(item.session_id));
    return tr;
  }

  // ---------------------------------------------------------------- tenants

  /** The tenants panel; hidden on a gateway without the tenants API (404). */
  async function loadTenants() {
    let data;
    try {
      data = await api("/api/admin/tenants");
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        el.tenantsCard.hidden = true;
        return;
      }
      handleError(err);
      return;
    }
    el.tenantsCard.hidden = false;
    el.tenantsBody.replaceChildren(...data.tenants.map(tenantRow));
    el.tenantsEmpty.hidden = data.tenants.length > 0;
  }

  function tenantRow(tenant) {
    const tr = node("tr", "tenant-row");
    tr.dataset.name = tenant.name;
    const revoked = Boolean(tenant.revoked_at);
    const status = node("td");
    status.append(node("span", "badge badge-" + (revoked ? "expired" : "active"),
      t(revoked ? "admin.tenants.revoked" : "admin.tenants.active")));
    const sessions = node("td", "num");
    const show = node("button", "session-open", fmtNumber(tenant.sessions || 0));
    show.type = "button";
    show.setAttribute("aria-label", t("admin.tenants.showSessions", { name: tenant.name }));
    show.addEventListener("click", () => {
      el.filterTenant.value = tenant.id;
      resetPaging();
      loadSessions();
      el.filterTenant.scrollIntoView({ block: "center" });
    });
    sessions.append(show);
    const actions = node("td", "cell-actions");
    if (!revoked) {
      const rotate = node("button", "rotate-tenant", t("admin.tenants.rotate"));
      rotate.type = "button";
      rotate.setAttribute("aria-label", t("admin.tenants.rotateLabel", { name: tenant.name }));
      rotate.addEventListener("click", () => rotateTenant(tenant));
      const revoke = node("button", "delete-session revoke-tenant", t("admin.tenants.revoke"));
      revoke.type = "button";
      revoke.setAttribute("aria-label", t("admin.tenants.revokeLabel", { name: tenant.name }));
      revoke.addEventListener("click", () => revokeTenant(tenant));
      actions.append(rotate, revoke);
    }
    tr.append(
      node("td", "cell-user", tenant.name),
      node("td", "mono", tenant.key_prefix + "…"),
      node("td", "col-wide cell-time", fmtTime(tenant.created_at)),
      status,
      node("td", "col-wide", t(tenant.allow_system_prompt ? "admin.tenants.yes" : "admin.tenants.no")),
      sessions,
      actions,
    );
    return tr;
  }

  /** Shows a new API key once, with a Copy button; it is never shown again. */
  function showKey(name, apiKey, previousExpiresAt) {
    el.tenantKeyText.textContent = t("admin.tenants.newKey", { name });
    el.tenantKey.textContent = apiKey;
    el.tenantKeyGrace.hidden = !previousExpiresAt;
    el.tenantKeyGrace.textContent = previousExpiresAt
      ? t("admin.tenants.oldKeyUntil", { time: fmtFullTime(previousExpiresAt) }) : "";
    el.tenantKeyBox.hidden = false;
  }

  async function createTenant() {
    const name = el.tenantName.value.trim();
    if (!name) return;
    try {
      const result = await api("/api/admin/tenants", {
        method: "POST",
        body: JSON.stringify({ name, allow_system_prompt: el.tenantSystemPrompt.checked }),
      });
      el.tenantForm.reset();
      showKey(result.tenant.name, result.api_key, null);
      hideBanner();
    } catch (err) {
      if (err instanceof ApiError && err.code === "tenant_exists") {
        showBanner(t("errors.tenant_exists"));
        return;
      }
      handleError(err);
      return;
    }
    await Promise.all([loadTenants(), loadStats().catch(handleError)]);
  }

  async function rotateTenant(tenant) {
    const answer = prompt(t("admin.tenants.rotatePrompt", { name: tenant.name }), "0");
    if (answer === null) return;
    const grace = Math.max(0, Math.floor(Number(answer) || 0));
    try {
      const result = await api(`/api/admin/tenants/${encodeURIComponent(tenant.name)}/rotate`, {
        method: "POST",
        body: JSON.stringify({ grace_seconds: grace }),
      });
      showKey(result.tenant.name, result.api_key, result.previous_key_expires_at);
    } catch (err) {
      handleError(err);
      return;
    }
    await loadTenants();
  }

  async function revokeTenant(tenant) {
    if (!confirm(t("admin.tenants.revokeConfirm", { name: tenant.name }))) return;
    try {
      await api(`/api/admin/tenants/${encodeURIComponent(tenant.name)}/revoke`, { method: "POST" });
    } catch (err) {
      handleError(err);
      return;
    }
    el.tenantKeyBox.hidden = true;
    await loadTenants();
  }

  el.tenantForm.addEventListener("submit", (event) => {
    event.preventDefault();
    createTenant();
  });
  el.tenantKeyCopy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(el.tenantKey.textContent);
      el.tenantKeyCopy.textContent = t("admin.tenants.copied");
      setTimeout(() => { el.tenantKeyCopy.textContent = t("admin.tenants.copy"); }, 1500);
    } catch (_) {
      // No clipboard access: the key stays selectable on the page.
    }
  });

  // ---------------------------------------------------------------- language

  async function loadServiceInfo() {
    try {
      const ui = await api("/api/ui");
      el.serviceInfo.textContent = ui.provider
        ? t("admin.service", { provider: ui.provider, version: ui.version }) : "";
    } catch (_) {
      el.serviceInfo.textContent = "";
    }
  }

  async function setUpLanguage() {
    let ui = { language: "auto", languages: ["en"] };
    try {
      const response = await fetch("/api/ui", { credentials: "omit" });
      if (response.ok) ui = await response.json();
    } catch (_) {
      // The defaults apply.
    }
    await i18n.use(i18n.pickLanguage(ui.language, ui.languages));
    const names = await Promise.all(ui.languages.map((tag) => i18n.languageName(tag)));
    el.language.replaceChildren(...ui.languages.map((tag, i) => {
      const option = node("option", "", names[i]);
      option.value = tag;
      option.lang = tag;
      return option;
    }));
    el.language.value = i18n.language;
    el.language.setAttribute("aria-label", t("language.label"));
    i18n.apply();
    document.title = t("admin.title");
  }

  el.language.addEventListener("change", async () => {
    i18n.remember(el.language.value);
    await i18n.use(el.language.value);
    i18n.apply();
    document.title = t("admin.title");
    if (!el.dashboard.hidden) {
      await Promise.all([loadStats().catch(handleError), loadSessions(), loadFeedback(),
        loadServiceInfo(), loadTenants()]);
      if (state.detailId) openDetail(state.detailId);
    }
  });
  el.feedbackRating.addEventListener("change", loadFeedback);

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
    loadFeedback();
    loadTenants();
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

  setUpLanguage().then(() => {
    if (token()) {
      signIn(token());
    } else {
      showSignIn("");
    }
  });
})();
