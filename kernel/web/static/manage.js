// The Manage view: the admin key, roles, documents (with uploads) and, on a registry, instances.

import { ApiError, adminKey, call, upload } from "./api.js";
import { $, confirmButton, el, formatAgo, formatDate, tabs, toast } from "./ui.js";

const ROLES = "/api/kernel2/roles";
const DOCUMENTS = "/api/kernel2/documents";
const INSTANCES = "/api/instances";
const DOC_PAGE = 20;
const POLL_MS = 5000;

const roleListeners = [];
let roles = [];
let wired = false;
let docOffset = 0;
let panel = "tab-roles";
let pollTimer = 0;
let selectPanel = () => {};

// -- the admin key and errors ------------------------------------------------------------------------

/** Call ``listener(roles)`` whenever the stored roles are (re)loaded; loads them now if the key is known. */
export function onRolesChanged(listener) {
  roleListeners.push(listener);
  if (adminKey.get()) loadRoles().catch(failed);
}

function showError(text) {
  const box = $("manage-error");
  box.textContent = text;
  box.hidden = !text;
}

function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    adminKey.clear();
    showKeyForm("The admin key is not valid any more; enter it again.");
    roleListeners.forEach((listener) => listener([]));
    return;
  }
  showError(err instanceof ApiError ? err.message : String(err));
}

function showKeyForm(message = "") {
  stopPolling();
  $("key-form").hidden = false;
  $("manage").hidden = true;
  $("key-error").textContent = message;
  $("key-error").hidden = !message;
  $("admin-key").value = "";
  if (!$("view-manage").hidden) $("admin-key").focus();
}

async function unlock(event) {
  event.preventDefault();
  const key = $("admin-key").value.trim();
  if (!key) return;
  adminKey.set(key);
  try {
    await loadRoles();
  } catch (err) {
    adminKey.clear();
    const text = err instanceof ApiError && err.status === 401 ? "That key is not valid." : err.message;
    showKeyForm(text);
    return;
  }
  showPanels();
}

function showPanels() {
  $("key-form").hidden = true;
  $("manage").hidden = false;
  showError("");
  probeInstances();
  selectPanel(panel);
}

/** Show the Manage view: the key form, or the panels when the key is known. */
export function initManage() {
  if (!wired) wire();
  if (adminKey.get()) {
    showPanels();
    loadRoles().catch(failed);
  } else {
    showKeyForm();
  }
}

function wire() {
  wired = true;
  $("key-form").addEventListener("submit", unlock);
  $("forget-key").addEventListener("click", () => {
    adminKey.clear();
    roleListeners.forEach((listener) => listener([]));
    showKeyForm();
  });
  selectPanel = tabs(["tab-roles", "tab-documents", "tab-instances"], (id) => {
    panel = id;
    stopPolling();
    if (id === "tab-documents") loadDocuments().catch(failed);
    if (id === "tab-instances") startPolling();
  });
  $("tab-chat").addEventListener("click", stopPolling);
  $("role-form").addEventListener("submit", saveRole);
  $("role-cancel").addEventListener("click", resetRoleForm);
  $("doc-upload").addEventListener("click", uploadFiles);
  $("doc-form").addEventListener("submit", addDocument);
  $("doc-prev").addEventListener("click", () => pageDocuments(-DOC_PAGE));
  $("doc-next").addEventListener("click", () => pageDocuments(DOC_PAGE));
  $("instance-form").addEventListener("submit", registerInstance);
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => copy($(button.dataset.copy)));
  }
}

// -- roles -------------------------------------------------------------------------------------------

async function loadRoles() {
  const body = await call(ROLES, { admin: true });
  roles = body.data || [];
  renderRoles();
  roleListeners.forEach((listener) => listener(roles));
}

function renderRoles() {
  $("role-default-field").hidden = !roles.some((role) => "is_default" in role);
  const items = roles.map((role) => {
    const li = el("li", "", "item");
    const main = el("div", "", "item-main");
    const title = el("p", "", "item-title");
    title.append(el("strong", role.name));
    if (role.is_default) title.append(el("span", "default", "badge"));
    if (role.enable_l0_retrieval) title.append(el("span", "uses documents", "badge"));
    main.append(title);
    if (role.description) main.append(el("p", role.description, "muted"));
    main.append(el("p", role.system_prompt, "prompt-preview"));
    const actions = el("div", "", "item-actions");
    const edit = el("button", "Edit");
    edit.type = "button";
    edit.setAttribute("aria-label", `Edit ${role.name}`);
    edit.addEventListener("click", () => editRole(role));
    const remove = confirmButton("Delete", "Really delete?", () => deleteRole(role));
    remove.setAttribute("aria-label", `Delete ${role.name}`);
    actions.append(edit, remove);
    li.append(main, actions);
    return li;
  });
  $("role-list").replaceChildren(...(items.length ? items : [el("li", "No roles yet.", "muted empty")]));
}

function editRole(role) {
  $("role-id").value = role.role_id;
  $("role-name").value = role.name;
  $("role-description").value = role.description || "";
  $("role-prompt").value = role.system_prompt;
  $("role-l0").checked = Boolean(role.enable_l0_retrieval);
  $("role-default").checked = Boolean(role.is_default);
  $("role-form-title").textContent = `Edit “${role.name}”`;
  $("role-save").textContent = "Save changes";
  $("role-cancel").hidden = false;
  $("role-name").focus();
}

function resetRoleForm() {
  $("role-form").reset();
  $("role-id").value = "";
  $("role-form-title").textContent = "New role";
  $("role-save").textContent = "Create role";
  $("role-cancel").hidden = true;
}

async function saveRole(event) {
  event.preventDefault();
  const roleId = $("role-id").value;
  const fields = {
    name: $("role-name").value.trim(),
    description: $("role-description").value.trim(),
    system_prompt: $("role-prompt").value,
    enable_l0_retrieval: $("role-l0").checked,
  };
  if (!$("role-default-field").hidden) fields.is_default = $("role-default").checked;
  try {
    if (roleId) await call(`${ROLES}/${encodeURIComponent(roleId)}`, { method: "PATCH", json: fields, admin: true });
    else await call(ROLES, { method: "POST", json: fields, admin: true });
    toast(roleId ? `Saved “${fields.name}”.` : `Created “${fields.name}”.`);
    resetRoleForm();
    showError("");
    await loadRoles();
  } catch (err) {
    failed(err);
  }
}

async function deleteRole(role) {
  try {
    await call(`${ROLES}/${encodeURIComponent(role.role_id)}`, { method: "DELETE", admin: true });
    toast(`Deleted “${role.name}”.`);
    if ($("role-id").value === role.role_id) resetRoleForm();
    await loadRoles();
  } catch (err) {
    failed(err);
  }
}

// -- documents ---------------------------------------------------------------------------------------

function formatSize(bytes) {
  if (bytes == null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

async function loadDocuments() {
  const body = await call(`${DOCUMENTS}?limit=${DOC_PAGE}&offset=${docOffset}`, { admin: true });
  if (body.total > 0 && docOffset >= body.total) {
    docOffset = Math.max(0, docOffset - DOC_PAGE);
    return loadDocuments();
  }
  const items = (body.data || []).map((doc) => {
    const li = el("li", "", "item");
    const main = el("div", "", "item-main");
    main.append(el("p", doc.title, "item-title"));
    const meta = [doc.source, `${doc.chunk_count} chunk${doc.chunk_count === 1 ? "" : "s"}`,
      formatSize(doc.size_bytes), formatDate(doc.created_at)].filter(Boolean).join(" · ");
    main.append(el("p", meta, "muted"));
    const actions = el("div", "", "item-actions");
    const remove = confirmButton("Delete", "Really delete?", () => deleteDocument(doc));
    remove.setAttribute("aria-label", `Delete ${doc.title}`);
    actions.append(remove);
    li.append(main, actions);
    return li;
  });
  $("doc-list").replaceChildren(...(items.length ? items : [el("li", "No documents yet.", "muted empty")]));
  const shown = body.data?.length || 0;
  $("doc-count").textContent = body.total ? `(${docOffset + 1}–${docOffset + shown} of ${body.total})` : "";
  $("doc-prev").disabled = docOffset === 0;
  $("doc-next").disabled = docOffset + DOC_PAGE >= body.total;
}

function pageDocuments(step) {
  docOffset = Math.max(0, docOffset + step);
  loadDocuments().catch(failed);
}

async function uploadFiles() {
  const input = $("doc-files");
  const files = [...input.files];
  if (!files.length) {
    toast("Choose one or more .txt or .md files first.");
    input.focus();
    return;
  }
  $("doc-upload").disabled = true;
  for (const file of files) {
    const li = el("li", "", "upload");
    const progress = el("progress");
    progress.max = 1;
    progress.value = 0;
    progress.setAttribute("aria-label", `Uploading ${file.name}`);
    const status = el("span", "uploading…", "muted");
    li.append(el("span", file.name), progress, status);
    $("upload-list").prepend(li);
    const form = new FormData();
    form.append("file", file);
    try {
      const { status: code, body: doc } = await upload(DOCUMENTS, form, (fraction) => (progress.value = fraction));
      progress.value = 1;
      status.textContent = code === 201
        ? `added (${doc.chunk_count} chunk${doc.chunk_count === 1 ? "" : "s"})`
        : `already there, as “${doc.title}”`;
      li.classList.add("done");
    } catch (err) {
      status.textContent = err.message;
      li.classList.add("failed");
      if (err instanceof ApiError && err.status === 401) {
        failed(err);
        break;
      }
    }
  }
  input.value = "";
  $("doc-upload").disabled = false;
  loadDocuments().catch(failed);
}

async function addDocument(event) {
  event.preventDefault();
  const json = { title: $("doc-title").value.trim(), content: $("doc-content").value };
  try {
    await call(DOCUMENTS, { method: "POST", json, admin: true });
    toast(`Added “${json.title}”.`);
    $("doc-form").reset();
    showError("");
    await loadDocuments();
  } catch (err) {
    failed(err);
  }
}

async function deleteDocument(doc) {
  try {
    await call(`${DOCUMENTS}/${encodeURIComponent(doc.document_id)}`, { method: "DELETE", admin: true });
    toast(`Deleted “${doc.title}”.`);
    await loadDocuments();
  } catch (err) {
    failed(err);
  }
}

// -- instances (only where this server is a registry) ---------------------------------------------

async function probeInstances() {
  try {
    renderInstances(await call(INSTANCES, { admin: true }));
    $("tab-instances").hidden = false;
  } catch (err) {
    $("tab-instances").hidden = true; // 404: this server is no registry; anything else: try next time
    if (panel === "tab-instances") selectPanel("tab-roles");
    if (!(err instanceof ApiError && err.status === 404)) failed(err);
  }
}

function renderInstances(body) {
  const items = (body.data || []).map((instance) => {
    const li = el("li", "", "item");
    const main = el("div", "", "item-main");
    const title = el("p", "", "item-title");
    const online = instance.status === "online";
    title.append(el("span", online ? "online" : "offline", `status ${online ? "online" : "offline"}`));
    title.append(el("strong", instance.name));
    if (instance.mode) title.append(el("span", instance.mode, "badge"));
    main.append(title);
    if (instance.description) main.append(el("p", instance.description, "muted"));
    main.append(el("p", `Last seen ${formatAgo(instance.last_seen_at)} · id ${instance.instance_id}`, "muted"));
    li.append(main);
    return li;
  });
  $("instance-list").replaceChildren(...(items.length ? items : [el("li", "No instances registered yet.", "muted empty")]));
  $("instance-updated").textContent = `(updated ${new Date().toLocaleTimeString()})`;
}

async function loadInstances() {
  if (document.hidden) return;
  try {
    renderInstances(await call(INSTANCES, { admin: true }));
  } catch (err) {
    failed(err);
  }
}

function startPolling() {
  loadInstances();
  pollTimer = setInterval(loadInstances, POLL_MS);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = 0;
}

async function registerInstance(event) {
  event.preventDefault();
  const json = { name: $("instance-name").value.trim() };
  const description = $("instance-description").value.trim();
  const endpoint = $("instance-endpoint").value.trim();
  if (description) json.description = description;
  if (endpoint) json.endpoint = endpoint;
  try {
    const created = await call(INSTANCES, { method: "POST", json, admin: true });
    const tunnel = created.mode !== "direct";
    $("instance-secret").value = created.instance_secret;
    $("instance-command").value =
      `flask --app app connect --registry ${location.origin} --instance-id ${created.instance_id}` +
      " --secret-file instance.secret";
    $("instance-command-field").hidden = !tunnel;
    $("instance-how").textContent = tunnel
      ? "On the instance's machine, save it in a file named instance.secret (readable by you only), then run the connector command there."
      : "The registry calls this instance's endpoint; the instance uses the secret to manage its own registration.";
    $("instance-created").hidden = false;
    $("instance-form").reset();
    $("instance-secret").focus();
    showError("");
    await loadInstances();
  } catch (err) {
    failed(err);
  }
}

async function copy(field) {
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    field.select();
    document.execCommand("copy"); // older browsers, or a page that is not a secure context
  }
  toast("Copied.");
}
