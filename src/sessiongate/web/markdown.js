// Markdown for replies: markdown-it turns text into HTML (raw HTML in the text is NOT
// passed through: html=false), DOMPurify then sanitizes that HTML into a DOM fragment,
// and a last pass enforces our own rules on what survived:
//   - links: only http(s) and mailto; they open in a new tab with rel="noopener noreferrer";
//   - images: only https/http from the operator's SESSIONGATE_UI_IMAGE_HOSTS; any other
//     image becomes a link, so a reply cannot make the browser fetch from a foreign host;
//   - code blocks get a header with the language and a Copy button.
// Security: no event handler, style or script survives DOMPurify; javascript: URLs are
// refused by markdown-it's validateLink, by DOMPurify and by the protocol check below.
"use strict";

(() => {
  const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
  const IMAGE_PROTOCOLS = new Set(["http:", "https:"]);
  const ALLOWED_TAGS = [
    "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th",
    "thead", "tr", "ul",
  ];
  const ALLOWED_ATTR = ["href", "src", "alt", "title", "start", "class"];

  const md = window.markdownit({ html: false, linkify: true, breaks: true, typographer: false });
  let imageHosts = new Set();

  function configure(options) {
    imageHosts = new Set((options.imageHosts || []).map((h) => String(h).toLowerCase()));
  }

  function parseUrl(value) {
    try {
      return new URL(value, window.location.href);
    } catch (_) {
      return null;
    }
  }

  function imageAllowed(src) {
    const url = parseUrl(src);
    return Boolean(url && IMAGE_PROTOCOLS.has(url.protocol) && imageHosts.has(url.hostname));
  }

  function safeLink(anchor) {
    const url = parseUrl(anchor.getAttribute("href") || "");
    if (!url || !LINK_PROTOCOLS.has(url.protocol)) {
      anchor.replaceWith(document.createTextNode(anchor.textContent));
      return;
    }
    anchor.setAttribute("target", "_blank");
    anchor.setAttribute("rel", "noopener noreferrer");
  }

  function safeImage(img, t) {
    const src = img.getAttribute("src") || "";
    if (imageAllowed(src)) {
      img.setAttribute("loading", "lazy");
      img.setAttribute("referrerpolicy", "no-referrer");
      return;
    }
    // Not from an allowed host: show a link to it instead (or just its text).
    const alt = img.getAttribute("alt") || src;
    const label = t("image.blocked", { alt });
    const url = parseUrl(src);
    if (url && IMAGE_PROTOCOLS.has(url.protocol)) {
      const link = document.createElement("a");
      link.href = url.href;
      link.className = "image-link";
      link.textContent = label;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      img.replaceWith(link);
    } else {
      img.replaceWith(document.createTextNode(label));
    }
  }

  function decorateCode(pre, t) {
    const code = pre.querySelector("code");
    const match = code && /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
    const block = document.createElement("div");
    block.className = "code-block";
    const head = document.createElement("div");
    head.className = "code-head";
    const lang = document.createElement("span");
    lang.className = "code-lang";
    lang.textContent = match ? match[1] : "";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "code-copy";
    copy.textContent = t("code.copy");
    head.append(lang, copy);
    pre.replaceWith(block);
    block.append(head, pre);
  }

  /** `text` (markdown) as a sanitized DocumentFragment. `t` localizes the few labels. */
  function render(text, t) {
    const html = md.render(text || "");
    const fragment = window.DOMPurify.sanitize(html, {
      ALLOWED_TAGS,
      ALLOWED_ATTR,
      ALLOW_DATA_ATTR: false,
      RETURN_DOM_FRAGMENT: true,
    });
    for (const anchor of fragment.querySelectorAll("a")) safeLink(anchor);
    for (const img of fragment.querySelectorAll("img")) safeImage(img, t);
    for (const pre of fragment.querySelectorAll("pre")) decorateCode(pre, t);
    for (const table of fragment.querySelectorAll("table")) {
      const wrap = document.createElement("div");
      wrap.className = "table-wrap";
      table.replaceWith(wrap);
      wrap.append(table);
    }
    return fragment;
  }

  window.sgMarkdown = { configure, render, imageAllowed };
})();
