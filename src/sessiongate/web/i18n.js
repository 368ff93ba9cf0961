// sessiongate page strings: one catalogue per language in /static/i18n/<tag>.json.
//
// A catalogue maps keys to text; "{name}" is replaced by a parameter, and a value may be
// {"one": ..., "other": ...} for counts (chosen with Intl.PluralRules). A translator adds
// a language by copying en.json to <tag>.json: the gateway lists it and the pages offer
// it. Keys missing from a catalogue fall back to English, then to the key itself.
//
// Static text in the HTML carries data-i18n="key" (textContent) or
// data-i18n-attr="attribute:key;attribute:key" (aria-label, placeholder, title).
"use strict";

(() => {
  const STORAGE_KEY = "sessiongate.language";
  const FALLBACK = "en";
  const catalogues = {};
  let current = FALLBACK;
  let strings = {};
  let fallback = {};

  async function fetchCatalogue(tag) {
    if (!catalogues[tag]) {
      const response = await fetch(`/static/i18n/${encodeURIComponent(tag)}.json`, {
        credentials: "omit",
      });
      if (!response.ok) throw new Error(`no catalogue for ${tag}`);
      catalogues[tag] = await response.json();
    }
    return catalogues[tag];
  }

  /**
   * The language to show: the user's choice on this page (kept in localStorage), else the
   * operator's setting unless it is "auto", else the first of the browser's languages we
   * have, matching "zh-TW" to "zh-CN" by primary subtag when there is no exact catalogue.
   */
  function pickLanguage(setting, available) {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (stored && available.includes(stored)) return stored;
    if (setting && setting !== "auto" && available.includes(setting)) return setting;
    const wanted = navigator.languages && navigator.languages.length
      ? navigator.languages : [navigator.language || FALLBACK];
    for (const tag of wanted) {
      const exact = available.find((a) => a.toLowerCase() === tag.toLowerCase());
      if (exact) return exact;
      const primary = tag.split("-")[0].toLowerCase();
      const loose = available.find((a) => a.split("-")[0].toLowerCase() === primary);
      if (loose) return loose;
    }
    return available.includes(FALLBACK) ? FALLBACK : available[0] || FALLBACK;
  }

  async function use(tag) {
    fallback = await fetchCatalogue(FALLBACK);
    try {
      strings = await fetchCatalogue(tag);
      current = tag;
    } catch (_) {
      strings = fallback;
      current = FALLBACK;
    }
    document.documentElement.lang = current;
    return current;
  }

  function remember(tag) {
    localStorage.setItem(STORAGE_KEY, tag);
  }

  function has(key) {
    return key in strings || key in fallback;
  }

  /** The text for `key` in the current language, with {params} filled in. */
  function t(key, params = {}) {
    let value = key in strings ? strings[key] : fallback[key];
    if (value === undefined) return key;
    if (typeof value === "object" && value !== null) {
      const rule = new Intl.PluralRules(current).select(Number(params.count) || 0);
      value = value[rule] !== undefined ? value[rule] : value.other;
    }
    return String(value).replace(/\{(\w+)\}/g, (match, name) => {
      if (!(name in params)) return match;
      const param = params[name];
      return typeof param === "number" ? formatNumber(param) : String(param);
    });
  }

  /** Fills every data-i18n / data-i18n-attr element under `root`. */
  function apply(root = document) {
    for (const node of root.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.dataset.i18n);
    }
    for (const node of root.querySelectorAll("[data-i18n-attr]")) {
      for (const pair of node.dataset.i18nAttr.split(";")) {
        const [attribute, key] = pair.split(":").map((s) => s.trim());
        if (attribute && key) node.setAttribute(attribute, t(key));
      }
    }
  }

  function formatNumber(n) {
    return new Intl.NumberFormat(current).format(n);
  }

  function formatDateTime(iso, options) {
    const date = iso instanceof Date ? iso : new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return new Intl.DateTimeFormat(current, options).format(date);
  }

  /** A short time: "14:05" today, otherwise the date and time, per locale. */
  function formatWhen(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const today = new Date().toDateString() === date.toDateString();
    return formatDateTime(date, today
      ? { hour: "2-digit", minute: "2-digit" }
      : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  window.sgI18n = {
    pickLanguage,
    use,
    remember,
    has,
    t,
    apply,
    formatNumber,
    formatDateTime,
    formatWhen,
    get language() {
      return current;
    },
    languageName: async (tag) => (await fetchCatalogue(tag))["language.name"] || tag,
  };
})();
