// Kernel Chat's page: the chat view (streamed answers, Stop, regenerate, settings) and the tabs.
// The conversation and the settings live in localStorage, so a reload keeps them.

import { ApiError, adminKey, call, streamChat } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { initManage, onRolesChanged } from "./manage.js";
import { $, tabs, toast } from "./ui.js";

const CONVERSATION_KEY = "kernel-chat.conversation";
const SETTINGS_KEY = "kernel-chat.settings";

function load(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

// -- state ---------------------------------------------------------------------------------------------

// messages: {id, role: "user"|"assistant", content, status?: "streaming"|"done"|"stopped"|"error",
//            finish?, sources?: [{document_id, title}], error?: {message, detail}}
const conversation = load(CONVERSATION_KEY, { messages: [] });
if (!Array.isArray(conversation.messages)) conversation.messages = [];
const newId = () => Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
for (const message of conversation.messages) {
  message.id ??= newId();
  if (message.status === "streaming") message.status = "stopped"; // the page was closed mid-answer
}
const settings = { systemPrompt: "", model: "", temperature: "", maxTokens: "", roleId: "", retrieval: false,
  ...load(SETTINGS_KEY, {}) };
let roles = [];
let controller = null; // the AbortController of the answer being streamed
let saveTimer = null;

function save() {
  clearTimeout(saveTimer);
  saveTimer = null;
  try {
    localStorage.setItem(CONVERSATION_KEY, JSON.stringify(conversation));
  } catch {
    toast("This conversation is too long to keep in the browser; start a new one to keep the next.");
  }
}

function saveSoon() {
  saveTimer ??= setTimeout(save, 400);
}

// -- rendering -----------------------------------------------------------------------------------------

const messagesEl = $("messages");
const emptyHint = $("empty-hint");

function nearBottom() {
  return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
}

// Each message keeps its own <article> for as long as it exists, and is redrawn in place when it
// changes, so the conversation log (an ARIA live region) announces each answer once, not each delta.
function fillArticle(article, message) {
  article.className = `message ${message.role}`;
  article.dataset.id = message.id;
  const who = document.createElement("h3");
  who.className = "visually-hidden";
  who.textContent = message.role === "user" ? "You said" : "Your instance answered";
  const body = document.createElement("div");
  body.className = "body";
  if (message.role === "user") body.textContent = message.content; // the person's words stay plain text
  else renderMarkdown(body, message.content);
  const parts = [who, body];
  article.setAttribute("aria-busy", String(message.status === "streaming"));
  if (message.status === "streaming" && !message.content) body.append(typing());
  if (message.sources?.length) parts.push(sourcesLine(message.sources));
  const note = noteFor(message);
  if (note) parts.push(note);
  article.replaceChildren(...parts);
}

function typing() {
  const dots = document.createElement("span");
  dots.className = "typing";
  dots.setAttribute("aria-label", "writing");
  dots.textContent = "…";
  return dots;
}

function sourcesLine(sources) {
  const p = document.createElement("p");
  p.className = "sources";
  p.textContent = "From your documents: " + sources.map((s) => `“${s.title || s.document_id}”`).join(", ");
  return p;
}

function noteFor(message) {
  if (message.status === "error") {
    const box = document.createElement("div");
    box.className = "error-box";
    box.setAttribute("role", "alert");
    const text = document.createElement("p");
    text.textContent = message.error?.message || "Something went wrong.";
    box.append(text);
    if (message.error?.detail) {
      const detail = document.createElement("p");
      detail.className = "detail";
      detail.textContent = message.error.detail;
      box.append(detail);
    }
    if (message.content) {
      const kept = document.createElement("p");
      kept.className = "detail";
      kept.textContent = "What arrived before that is kept above.";
      box.append(kept);
    }
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = "Retry";
    retry.addEventListener("click", regenerate);
    box.append(retry);
    return box;
  }
  const notes = { stopped: "Stopped.", length: "Cut short at the max tokens limit." };
  const text = message.status === "stopped" ? notes.stopped : message.finish === "length" ? notes.length : "";
  if (!text) return null;
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = text;
  return p;
}

const drawn = new WeakMap(); // article -> the message, as JSON, it shows

function renderAll() {
  const stick = nearBottom();
  emptyHint.hidden = conversation.messages.length > 0;
  const articles = new Map([...messagesEl.querySelectorAll(":scope > article")].map((a) => [a.dataset.id, a]));
  for (const message of conversation.messages) {
    const signature = JSON.stringify(message);
    let article = articles.get(message.id);
    articles.delete(message.id);
    if (!article) {
      article = document.createElement("article");
      messagesEl.append(article);
    }
    if (drawn.get(article) !== signature) {
      fillArticle(article, message);
      drawn.set(article, signature);
    }
  }
  for (const gone of articles.values()) gone.remove();
  if (stick || controller) messagesEl.scrollTop = messagesEl.scrollHeight;
  updateControls();
}

let frame = 0;
function renderSoon() {
  frame ||= requestAnimationFrame(() => {
    frame = 0;
    renderAll();
  });
}

function updateControls() {
  const busy = controller !== null;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("regenerate").disabled = busy || !conversation.messages.some((m) => m.role === "user");
  $("new-chat").disabled = busy || conversation.messages.length === 0;
}

// -- chatting ------------------------------------------------------------------------------------------

function requestBody(history) {
  const messages = [];
  if (!settings.roleId && settings.systemPrompt.trim()) {
    messages.push({ role: "system", content: settings.systemPrompt });
  }
  for (const m of history) {
    if (m.content) messages.push({ role: m.role, content: m.content });
  }
  const body = { messages, metadata: { enable_l0_retrieval: Boolean(settings.retrieval) } };
  if (settings.roleId) body.metadata.role_id = settings.roleId;
  if (settings.model.trim()) body.model = settings.model.trim();
  if (settings.temperature !== "") body.temperature = Number(settings.temperature);
  if (settings.maxTokens !== "") body.max_tokens = Number(settings.maxTokens);
  return body;
}

async function generate() {
  const history = conversation.messages.slice();
  const answer = { id: newId(), role: "assistant", content: "", status: "streaming" };
  conversation.messages.push(answer);
  controller = new AbortController();
  renderAll();
  try {
    answer.finish = await streamChat(requestBody(history), {
      signal: controller.signal,
      onDelta(text) {
        answer.content += text;
        renderSoon();
        saveSoon();
      },
      onSources(sources) {
        answer.sources = sources.map((s) => ({ document_id: String(s.document_id ?? ""), title: String(s.title ?? "") }));
        renderSoon();
      },
    });
    answer.status = "done";
  } catch (err) {
    if (controller.signal.aborted) {
      answer.status = "stopped";
    } else {
      const error = err instanceof ApiError ? err : new ApiError("Something went wrong in the page: " + err);
      answer.status = "error";
      answer.error = { message: error.message, detail: error.detail };
      if (error.code === "role_not_found") selectRole("");
    }
  } finally {
    controller = null;
    save();
    renderAll();
  }
}

function send() {
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text || controller) return;
  dropFailedTail();
  conversation.messages.push({ id: newId(), role: "user", content: text });
  prompt.value = "";
  generate();
}

// A failed answer with nothing in it leaves the page when the next question is asked.
function dropFailedTail() {
  const last = conversation.messages.at(-1);
  if (last?.role === "assistant" && last.status === "error" && !last.content) conversation.messages.pop();
}

function regenerate() {
  if (controller) return;
  while (conversation.messages.at(-1)?.role === "assistant") conversation.messages.pop();
  if (!conversation.messages.length) return renderAll();
  generate();
}

function newConversation() {
  if (controller) return;
  conversation.messages = [];
  save();
  renderAll();
  $("prompt").focus();
}

// -- settings ------------------------------------------------------------------------------------------

function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}

// "default_role" is the reserved id of the instance's default role: usable without the admin key.
const findRole = (roleId) => roles.find((r) => r.role_id === roleId || (roleId === "default_role" && r.is_default));

function showRoleState() {
  $("system-prompt").disabled = Boolean(settings.roleId);
  $("system-hint").hidden = !settings.roleId;
  $("role-hint").hidden = Boolean(adminKey.get());
}

function selectRole(roleId) {
  settings.roleId = roleId;
  $("role").value = roleId;
  const role = findRole(roleId);
  if (role) {
    settings.retrieval = Boolean(role.enable_l0_retrieval); // the role's default; the box can change it
    $("retrieval").checked = settings.retrieval;
  }
  saveSettings();
  showRoleState();
}

function fillRoles(list) {
  roles = list;
  const select = $("role");
  const keep = [...select.options].slice(0, 2); // no role, the default role
  const options = list.map((role) => {
    const option = document.createElement("option");
    option.value = role.role_id;
    option.textContent = role.is_default ? `${role.name} (default)` : role.name;
    return option;
  });
  select.replaceChildren(...keep, ...options);
  if (settings.roleId && settings.roleId !== "default_role" && !findRole(settings.roleId)) settings.roleId = "";
  select.value = settings.roleId;
  saveSettings();
  showRoleState();
}

function bindSetting(id, name, read = (el) => el.value) {
  const el = $(id);
  if (el.type === "checkbox") el.checked = Boolean(settings[name]);
  else el.value = settings[name] ?? "";
  el.addEventListener("change", () => {
    settings[name] = read(el);
    saveSettings();
  });
  el.addEventListener("input", () => {
    settings[name] = read(el);
    saveSettings();
  });
}

async function loadModels() {
  try {
    const models = await call("/v1/models");
    $("model-list").replaceChildren(
      ...(models.data || []).map((m) => Object.assign(document.createElement("option"), { value: m.id })),
    );
  } catch {
    // the model list is a convenience; the field still takes any name
  }
}

// -- start ---------------------------------------------------------------------------------------------

function start() {
  const showView = tabs(["tab-chat", "tab-manage"], (id) => {
    const manage = id === "tab-manage";
    history.replaceState(null, "", manage ? "#manage" : "#chat");
    if (manage) initManage();
  });
  if (location.hash === "#manage") showView("tab-manage");

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", () => controller?.abort());
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", newConversation);

  bindSetting("system-prompt", "systemPrompt");
  bindSetting("model", "model");
  bindSetting("temperature", "temperature");
  bindSetting("max-tokens", "maxTokens");
  bindSetting("retrieval", "retrieval", (el) => el.checked);
  if (settings.roleId && settings.roleId !== "default_role") {
    $("role").append(new Option("The role chosen earlier", settings.roleId)); // named once roles load
  }
  $("role").value = settings.roleId;
  $("role").addEventListener("change", (event) => selectRole(event.target.value));
  $("settings").open = window.matchMedia("(min-width: 50rem)").matches;

  onRolesChanged(fillRoles);
  showRoleState();
  loadModels();
  renderAll();
  document.documentElement.dataset.ready = "true";
}

start();
