// Applies the saved theme before the page paints (loaded without defer, in <head>).
// "light" or "dark" set data-theme on <html>; none (the default) follows the OS.
"use strict";
(() => {
  try {
    const theme = localStorage.getItem("sessiongate.theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch (_) {
    // Storage may be disabled; the OS preference applies.
  }
})();
