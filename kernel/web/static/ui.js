// Small helpers shared by the page's modules.

export const $ = (id) => document.getElementById(id);

/** Wire a tablist: a click or the arrow keys select a tab and show its panel. Returns ``select(id)``. */
export function tabs(tabIds, onSelect = () => {}) {
  const select = (id) => {
    for (const tabId of tabIds) {
      const tab = $(tabId);
      const on = tabId === id;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      $(tab.getAttribute("aria-controls")).hidden = !on;
    }
    onSelect(id);
  };
  for (const tabId of tabIds) {
    const tab = $(tabId);
    tab.addEventListener("click", () => select(tabId));
    tab.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const visible = tabIds.filter((t) => !$(t).hidden);
      const step = event.key === "ArrowRight" ? 1 : -1;
      const next = visible[(visible.indexOf(tabId) + step + visible.length) % visible.length];
      select(next);
      $(next).focus();
    });
  }
  return select;
}

let toastTimer = 0;

/** A short status line at the bottom of the page, read out by screen readers. */
export function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("shown"), 3500);
}

/** An element with text content (never HTML) and optional class. */
export function el(tag, text = "", className = "") {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

/** A button that asks "Really …?" on the first press and acts on the second (within 4 s). */
export function confirmButton(label, confirmLabel, action) {
  const button = el("button", label, "danger");
  button.type = "button";
  let armed = 0;
  button.addEventListener("click", () => {
    if (armed) {
      clearTimeout(armed);
      armed = 0;
      button.textContent = label;
      action();
      return;
    }
    button.textContent = confirmLabel;
    armed = setTimeout(() => {
      armed = 0;
      button.textContent = label;
    }, 4000);
  });
  return button;
}

export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function formatAgo(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return String(iso);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return formatDate(iso);
}
