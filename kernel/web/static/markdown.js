// Markdown for the model's answers, made safe: marked turns it into HTML, DOMPurify removes anything
// live from that HTML (script, event handlers, javascript: and other unsafe URLs, forms, styles) before
// it reaches the page. The Content-Security-Policy is the second line of defence.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.js";

const marked = new Marked({ gfm: true, breaks: true, async: false });

const PURIFY = {
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "svg", "math"],
  FORBID_ATTR: ["style", "id", "name", "class"],
  ALLOW_DATA_ATTR: false,
};

// Links from the model open in a new tab and never tell the other site where they came from.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Put ``text``, read as Markdown, into ``element`` as sanitized HTML. */
export function renderMarkdown(element, text) {
  const html = marked.parse(text || "");
  element.replaceChildren(DOMPurify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true }));
}
