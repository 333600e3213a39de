// The server's HTTP API as the page uses it: JSON calls, uploads, the admin key and the chat stream.
// Every failure becomes an ApiError whose message is a sentence a person can act on.

const KEY_STORAGE = "kernel-chat.admin-key";

// The admin key lives in sessionStorage only (this tab, until it closes) and travels in a header.
export const adminKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) || "",
  set: (key) => sessionStorage.setItem(KEY_STORAGE, key),
  clear: () => sessionStorage.removeItem(KEY_STORAGE),
};

export class ApiError extends Error {
  constructor(message, { status = 0, code = "", detail = "", retryAfter = null, dropped = false } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status; // HTTP status, or 0 when the server could not be reached
    this.code = code; // error.code of the envelope
    this.detail = detail; // the server's own message, when it adds something
    this.retryAfter = retryAfter; // seconds, from Retry-After
    this.dropped = dropped; // the stream ended before the answer did
  }
}

const NETWORK = "Could not reach the server. Check that it is running, then try again.";

function retrySeconds(header) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** An ApiError for an error envelope (or whatever came instead), in words a person would use. */
export function errorFrom(status, envelope, retryAfterHeader = null) {
  const retryAfter = retrySeconds(retryAfterHeader);
  const message = (envelope && (envelope.message || envelope.error?.message)) || "";
  const code = (envelope && envelope.error?.code) || "";
  const again = retryAfter != null ? `Try again in ${retryAfter} s.` : "Try again in a moment.";
  let text;
  if (code === "role_not_found") text = "The chosen role does not exist (any more); pick another one in Settings.";
  else if (status === 503 && code === "busy") text = `The server's database is busy. ${again}`;
  else if (status === 503) text = `The model is busy or unavailable right now. ${again}`;
  else if (status === 429) text = `The model is getting too many requests. ${again}`;
  else if (status === 504) text = "The model took too long to answer. Try again, perhaps with a shorter question.";
  else if (status === 502) text = "The model's server failed while answering.";
  else if (status === 401) text = "The admin key is missing or not valid.";
  else if (status === 413) text = "That is larger than the server accepts.";
  else if (status >= 500) text = "The server ran into a problem. Try again; its log has the details.";
  else if (status >= 400 && message) text = message;
  else if (status >= 400) text = `The server refused the request (HTTP ${status}).`;
  else text = message || "Something went wrong.";
  const detail = message && message !== text ? message : "";
  return new ApiError(text, { status, code, detail, retryAfter });
}

/** A JSON call; ``admin`` adds the admin key. Resolves to the parsed body (null for 204). */
export async function call(path, { method = "GET", json, admin = false, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (admin) headers.Authorization = `Bearer ${adminKey.get()}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  } catch (err) {
    if (signal?.aborted) throw err;
    throw new ApiError(NETWORK);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw errorFrom(response.status, data, response.headers.get("Retry-After"));
  return data;
}

/**
 * A multipart POST with upload progress (``onProgress`` gets 0..1); XHR, as fetch cannot report it.
 * Resolves to ``{status, body}``.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${adminKey.get()}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, body: xhr.response });
      else reject(errorFrom(xhr.status, xhr.response, xhr.getResponseHeader("Retry-After")));
    };
    xhr.onerror = () => reject(new ApiError(NETWORK));
    xhr.send(form);
  });
}

/**
 * POST a chat request and read its OpenAI chunk stream.
 * ``onDelta(text)`` gets each piece of content, ``onSources(list)`` the documents retrieval drew on.
 * Resolves to the finish reason; rejects with an ApiError (``dropped`` when the stream broke off), or
 * with the AbortError of ``signal``.
 */
export async function streamChat(body, { signal, onDelta, onSources }) {
  let response;
  try {
    response = await fetch("/api/kernel2/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ ...body, stream: true }),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (signal.aborted) throw err;
    throw new ApiError(NETWORK);
  }
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw errorFrom(response.status, data, response.headers.get("Retry-After"));
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let finishReason = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (!line.startsWith("data:")) continue; // blank separators and ": ping" keep-alives
        const payload = line.slice(5).trim();
        if (payload === "[DONE]") return finishReason;
        let event;
        try {
          event = JSON.parse(payload);
        } catch {
          throw new ApiError("The server sent something unreadable, so the answer stopped here.", { dropped: true });
        }
        if (event.success === false || event.error) {
          const error = errorFrom(Number(event.code) || 502, event);
          error.dropped = true;
          throw error;
        }
        if (Array.isArray(event.sources) && event.sources.length) onSources(event.sources);
        for (const choice of event.choices || []) {
          if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
          if (choice.finish_reason) finishReason = choice.finish_reason;
        }
      }
    }
  } catch (err) {
    if (signal.aborted || err instanceof ApiError) throw err;
    throw new ApiError("The connection dropped before the answer was complete.", { dropped: true });
  }
  throw new ApiError("The connection dropped before the answer was complete.", { dropped: true });
}
