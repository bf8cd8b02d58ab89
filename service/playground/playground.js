// The playground page's script (served at /playground/playground.js, loaded as a module by index.html).
// Rules it keeps: every text from the server or the user goes into the page with textContent (never as HTML),
// requests go to this origin only, and the API's errors are shown as the API words them (code, message,
// field) next to the input the field names.

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------------ the API

/** One call to this server's API; never throws. `ms` is the browser-side latency, body read included. */
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = $("api-key").value;
  if (key) headers.Authorization = `Bearer ${key}`;
  const started = performance.now();
  let response;
  let data = null;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
    });
    const text = await response.text();
    if (text) data = JSON.parse(text);
  } catch (err) {
    if (response === undefined) {
      const error = { code: "network_error", message: String(err), field: null };
      return { ok: false, status: 0, error, ms: performance.now() - started, requestId: null };
    }
  }
  const ms = performance.now() - started;
  const requestId = response.headers.get("x-request-id");
  const json = data !== null && typeof data === "object";
  if (response.ok && (json || response.status === 204)) {
    return { ok: true, status: response.status, data, ms, requestId };
  }
  let error = json && typeof data.error === "object" && data.error !== null ? data.error : null;
  if (error === null) {
    const message = response.ok ? "the answer is not a JSON object" : response.statusText || "request failed";
    error = { code: `http_${response.status}`, message, field: null };
  }
  return { ok: false, status: response.status, error, ms, requestId };
}

/** Run `work` with `aria-busy` on `element` (screen readers, and the browser tests, wait for it to go). */
async function busy(element, work) {
  element.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    element.removeAttribute("aria-busy");
  }
}

// --------------------------------------------------------------------------------------------- the errors

/** Empty every error slot in `scope` and unmark the inputs at fault. */
function clearErrors(scope) {
  for (const slot of scope.querySelectorAll("[data-error-for]")) {
    slot.hidden = true;
    slot.replaceChildren();
  }
  for (const el of scope.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** Show an API error in the slot `name`: code, message and field, each as text. */
function showError(name, error, faulty) {
  const slot = document.querySelector(`[data-error-for="${name}"]`);
  slot.replaceChildren(
    textElement("span", String(error.code ?? "error"), "code"),
    textElement("span", String(error.message ?? ""), "message"),
  );
  if (error.field) slot.append(textElement("span", `field: ${error.field}`, "field"));
  slot.hidden = false;
  if (faulty) faulty.setAttribute("aria-invalid", "true");
}

// ----------------------------------------------------------------------------------------- the answers

function percent(x) {
  return `${(100 * x).toFixed(1)}%`;
}

function textElement(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  return el;
}

/** The attention over the stored pairs: one bar per pair in sequence order, the most attended one marked. */
function attentionBars(explanation, query) {
  const pairs = [...explanation].sort((a, b) => a.position - b.position);
  const top = Math.max(...pairs.map((p) => p.weight));
  const bars = document.createElement("div");
  bars.className = "bars";
  for (const pair of pairs) {
    const bar = document.createElement("div");
    bar.className = "bar";
    if (pair.weight === top) bar.classList.add("retrieved");
    if (pair.key === query) bar.classList.add("queried");
    bar.dataset.key = pair.key;
    bar.dataset.weight = String(pair.weight);
    bar.title = `${pair.key}${pair.value}: ${percent(pair.weight)} of the attention`;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.height = `${Math.max(0, Math.min(1, pair.weight)) * 100}%`; // CSSOM, allowed by the CSP
    track.append(fill);
    bar.append(textElement("span", percent(pair.weight), "weight"), track);
    bar.append(textElement("span", `${pair.key}${pair.value}`, "pair"));
    bars.append(bar);
  }
  return bars;
}

/** The whole answer: value, confidence, top-k, attention, and where it came from. */
function renderAnswer(container, result, query) {
  const data = result.data;
  const head = document.createElement("div");
  head.className = "headline";
  head.append(textElement("span", data.value, "value"));
  head.append(textElement("span", `confidence ${percent(data.confidence)}`, "confidence"));
  const parts = [head];

  if (Array.isArray(data.top_k)) {
    const list = document.createElement("ol");
    list.className = "top-k";
    for (const c of data.top_k) list.append(textElement("li", `${c.value}  ${percent(c.probability)}`));
    parts.push(textElement("h3", "Top values"), list);
  }
  if (Array.isArray(data.explanation) && data.explanation.length > 0) {
    parts.push(textElement("h3", `Attention over the ${data.explanation.length} stored pairs`));
    parts.push(attentionBars(data.explanation, query));
  }
  const meta = document.createElement("dl");
  meta.className = "meta";
  const facts = [
    ["model", data.model],
    ["version", data.version],
    ["bucket", data.bucket],
    ["pairs", data.num_pairs],
    ["latency", `${result.ms.toFixed(1)} ms round trip`],
    ["request id", result.requestId],
  ];
  for (const [name, value] of facts) {
    if (value === undefined || value === null) continue;
    const dd = textElement("dd", String(value));
    dd.dataset.fact = name;
    meta.append(textElement("dt", name), dd);
  }
  parts.push(meta);
  container.replaceChildren(...parts);
}

// ------------------------------------------------------------------------------------ the pairs editor

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

/** "c9k8??c" -> {pairs: [["c","9"],["k","8"]], query: "c"}; lenient (the API judges what is valid). */
function splitSequence(text) {
  const mark = text.indexOf("??");
  const body = mark < 0 ? text : text.slice(0, mark);
  const query = mark < 0 ? "" : text.slice(mark + 2);
  const pairs = [];
  for (let i = 0; i < body.length; i += 2) pairs.push([body[i], body[i + 1] ?? ""]);
  return { pairs, query };
}

function tableRows() {
  return [...$("pairs-body").rows].map((row) => [
    row.querySelector(".pair-key").value,
    row.querySelector(".pair-value").value,
  ]);
}

function addRow(key = "", value = "") {
  const body = $("pairs-body");
  const row = body.insertRow();
  row.insertCell().className = "index";
  for (const [cls, text, label] of [
    ["pair-key", key, "key"],
    ["pair-value", value, "value"],
  ]) {
    const input = document.createElement("input");
    input.className = cls;
    input.value = text;
    input.spellcheck = false;
    input.autocomplete = "off";
    input.setAttribute("aria-label", label);
    row.insertCell().append(input);
  }
  const remove = textElement("button", "×", "remove");
  remove.type = "button";
  remove.setAttribute("aria-label", "remove this pair");
  remove.addEventListener("click", () => {
    row.remove();
    renumber();
  });
  row.insertCell().append(remove);
  renumber();
  return row;
}

function renumber() {
  [...$("pairs-body").rows].forEach((row, i) => {
    row.cells[0].textContent = String(i);
  });
  updateChips();
}

function setTable(pairs, query) {
  $("pairs-body").replaceChildren();
  for (const [k, v] of pairs) addRow(k, v);
  $("query").value = query;
}

function switchMode() {
  const table = mode() === "table";
  if (table) {
    const { pairs, query } = splitSequence($("sequence").value);
    setTable(pairs, query);
  } else {
    $("sequence").value = `${tableRows().flat().join("")}??${$("query").value}`;
  }
  $("table-mode").hidden = !table;
  $("sequence-mode").hidden = table;
  clearErrors($("ask-form"));
  updateChips();
}

/** One button per stored key: a click asks that key. */
function updateChips() {
  const pairs = mode() === "table" ? tableRows() : splitSequence($("sequence").value).pairs;
  const keys = [...new Set(pairs.map(([k]) => k).filter((k) => k))];
  const chips = keys.map((key) => {
    const chip = textElement("button", key, "chip");
    chip.type = "button";
    chip.addEventListener("click", () => askKey(key));
    return chip;
  });
  $("key-chips").replaceChildren(...chips);
}

function askKey(key) {
  if (mode() === "table") {
    $("query").value = key;
  } else {
    const { pairs } = splitSequence($("sequence").value);
    $("sequence").value = `${pairs.flat().join("")}??${key}`;
  }
  $("ask-form").requestSubmit();
}

// ------------------------------------------------------------------------------------------ asking

function topK() {
  const n = Number($("top-k").value);
  return Number.isInteger(n) ? n : $("top-k").value; // not a whole number: the API says what is wrong
}

/** Where the API's `field` points in the ask form: [error slot, element to mark]. */
function askFieldTarget(status, field) {
  if (status === 401) return ["api-key", $("api-key")];
  if (!field) return ["general", null];
  if (field.startsWith("sequence")) return ["sequence", $("sequence")];
  if (field === "query") {
    return mode() === "table" ? ["query", $("query")] : ["sequence", $("sequence")];
  }
  if (field.startsWith("pairs")) {
    const row = /^pairs\[(\d+)\]/.exec(field);
    const tr = row ? $("pairs-body").rows[Number(row[1])] : null;
    return ["pairs", tr ?? $("pairs-table")];
  }
  if (field === "top_k") return ["top_k", $("top-k")];
  return ["general", null];
}

async function ask() {
  const form = $("ask-form");
  clearErrors(form);
  let request;
  let query;
  if (mode() === "table") {
    query = $("query").value;
    request = { pairs: tableRows(), query, top_k: topK(), explain: true };
  } else {
    const sequence = $("sequence").value;
    query = splitSequence(sequence).query;
    request = { sequence, top_k: topK(), explain: true };
  }
  const result = await api("POST", "/v1/retrieve", request);
  if (!result.ok) {
    const [slot, element] = askFieldTarget(result.status, result.error.field);
    showError(slot, result.error, element);
    $("result").hidden = true;
    return;
  }
  renderAnswer($("answer"), result, query);
  $("result").hidden = false;
  if (sessionsUnknown) checkSessions(); // the key that answered may also open the sessions
}

// --------------------------------------------------------------------------------------- the sessions

let session = null; // {id, nextSeq} of the session this page created
let sessionsUnknown = true; // not yet known whether the server keeps sessions (e.g. no API key yet)

function checkSessions() {
  return busy($("sessions-status"), probeSessions);
}

async function probeSessions() {
  const status = $("sessions-status");
  const result = await api("GET", "/v1/sessions");
  sessionsUnknown = false;
  if (result.ok && result.data && result.data.enabled) {
    const limits = result.data.limits ?? {};
    const details = [];
    if (typeof limits.max_pairs === "number") details.push(`up to ${limits.max_pairs} pairs each`);
    if (typeof limits.idle_ttl_s === "number") details.push(`idle ones expire after ${limits.idle_ttl_s} s`);
    const said = details.length ? `: ${details.join(", ")}` : "";
    status.textContent = `This server keeps memory sessions${said}.`;
    $("session-panel").hidden = false;
  } else if (result.status === 404 || (result.ok && result.data && result.data.enabled === false)) {
    status.textContent = "Memory sessions are not available on this server.";
    $("session-panel").hidden = true;
  } else if (result.status === 401) {
    sessionsUnknown = true;
    status.textContent = "Enter the API key to see whether this server keeps memory sessions.";
  } else {
    sessionsUnknown = true;
    const { code, message } = result.error;
    status.textContent = `Could not tell whether this server keeps memory sessions: ${code}: ${message}`;
  }
}

function setSession(next) {
  session = next;
  const open = session !== null;
  for (const id of ["session-delete", "session-pair", "session-append", "session-query", "session-ask"]) {
    $(id).disabled = !open;
  }
  if (!open) {
    $("session-info").textContent = "";
    delete $("session-info").dataset.sessionId;
    $("session-history-box").hidden = true;
    $("session-answer").replaceChildren();
    $("session-history").replaceChildren();
  }
}

function showSessionInfo(info) {
  if (info && typeof info.next_seq === "number") session.nextSeq = info.next_seq;
  const facts = [`session ${session.id}`];
  if (info && typeof info.num_pairs === "number") facts.push(`${info.num_pairs} pairs`);
  if (info && info.expires_at !== undefined) facts.push(`expires ${info.expires_at}`);
  $("session-info").textContent = facts.join(" · ");
  $("session-info").dataset.sessionId = session.id;
}

/** Where a session call's error goes: [error slot, element to mark]. */
function sessionFieldTarget(status, field, slot, element) {
  if (status === 401) return ["api-key", $("api-key")];
  if (field && field.startsWith("pairs")) return ["session-pair", $("session-pair")];
  if (field === "seq") return ["session-pair", $("session-pair")];
  if (field === "query") return ["session-query", $("session-query")];
  return [slot, element];
}

function sessionFailed(result, slot, element) {
  if (result.status === 404 && result.error.code === "session_not_found") {
    showError("session", result.error, null);
    setSession(null);
    return;
  }
  const [where, faulty] = sessionFieldTarget(result.status, result.error.field, slot, element);
  showError(where, result.error, faulty);
}

async function newSession() {
  clearErrors($("sessions"));
  if (session !== null) await api("DELETE", `/v1/sessions/${encodeURIComponent(session.id)}`);
  const result = await api("POST", "/v1/sessions", {});
  if (!result.ok) return sessionFailed(result, "session", null);
  setSession({ id: String(result.data.session_id), nextSeq: result.data.next_seq ?? 0 });
  showSessionInfo(result.data);
}

async function deleteSession() {
  clearErrors($("sessions"));
  const result = await api("DELETE", `/v1/sessions/${encodeURIComponent(session.id)}`);
  if (!result.ok && result.status !== 404) return sessionFailed(result, "session", null);
  setSession(null);
}

async function appendPair() {
  clearErrors($("sessions"));
  const text = $("session-pair").value;
  const body = { pairs: [[text.slice(0, 1), text.slice(1)]], seq: session.nextSeq };
  const path = `/v1/sessions/${encodeURIComponent(session.id)}/pairs`;
  const result = await api("POST", path, body);
  if (!result.ok) {
    sessionFailed(result, "session-pair", $("session-pair"));
    if (result.status === 409 && session !== null) {
      const info = await api("GET", `/v1/sessions/${encodeURIComponent(session.id)}`);
      if (info.ok) showSessionInfo(info.data); // back in step with the server's sequence number
    }
    return;
  }
  if (typeof result.data?.next_seq !== "number") session.nextSeq += 1;
  showSessionInfo(result.data);
  $("session-pair").value = "";
  if ($("session-query").value === "") $("session-query").value = text.slice(0, 1);
  await askSession();
}

async function askSession() {
  clearErrors($("sessions"));
  const query = $("session-query").value;
  const path = `/v1/sessions/${encodeURIComponent(session.id)}/query`;
  const result = await api("POST", path, { query, top_k: topK(), explain: true });
  if (!result.ok) return sessionFailed(result, "session-query", $("session-query"));
  renderAnswer($("session-answer"), result, query);
  addHistory(result.data, query);
}

/** One line per answer of this session, newest first: how the attention moved as pairs arrived. */
function addHistory(data, query) {
  if (!Array.isArray(data.explanation)) return;
  const line = document.createElement("li");
  const held = `${data.num_pairs} ${data.num_pairs === 1 ? "pair" : "pairs"}`;
  line.append(textElement("span", `${held}, ${query} → ${data.value}`, "step"));
  const bars = attentionBars(data.explanation, query);
  bars.classList.add("mini");
  line.append(bars);
  const history = $("session-history");
  history.prepend(line);
  $("session-history-box").hidden = false;
  while (history.children.length > 12) history.lastElementChild.remove();
}

// ------------------------------------------------------------------------------------------- wiring

function start() {
  const { pairs, query } = splitSequence($("sequence").value);
  setTable(pairs, query);
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", switchMode);
  }
  $("sequence").addEventListener("input", updateChips);
  $("pairs-body").addEventListener("input", updateChips);
  $("add-pair").addEventListener("click", () => addRow().querySelector(".pair-key").focus());
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("ask-form"), ask);
  });
  $("api-key").addEventListener("change", () => {
    if (sessionsUnknown) checkSessions();
  });
  const panel = $("session-panel");
  const onSession = (action) => () => busy(panel, action);
  $("session-new").addEventListener("click", onSession(newSession));
  $("session-delete").addEventListener("click", onSession(deleteSession));
  $("session-append").addEventListener("click", onSession(appendPair));
  $("session-ask").addEventListener("click", onSession(askSession));
  $("session-pair").addEventListener("keydown", (e) => {
    if (e.key === "Enter") busy(panel, appendPair);
  });
  $("session-query").addEventListener("keydown", (e) => {
    if (e.key === "Enter") busy(panel, askSession);
  });
  updateChips();
  checkSessions();
  document.body.dataset.ready = "true"; // the browser tests wait for this
}

start();
