// The fota dashboard: plain JavaScript, no build step, no third-party code. It calls the admin
// API with the token the operator typed in, kept in this tab's sessionStorage and sent only as
// an Authorization header (never in an address, never logged). The API enforces the roles; the
// page only hides what the role may not do.
"use strict";

const TOKEN_KEY = "fota.token";
const ROLES = ["viewer", "operator", "admin"];
let me = null; // { name, role }
let stopPage = () => {}; // ends the current page's live stream

const $ = (sel, root = document) => root.querySelector(sel);

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function may(role) {
  return me !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let json = null;
  try {
    json = await resp.json();
  } catch (_) {
    json = null;
  }
  if (!resp.ok) {
    const code = json && json.error ? json.error : "http_" + resp.status;
    const message = json && json.message ? json.message : resp.statusText;
    if (resp.status === 401) {
      signOut("The token was refused (" + message + "): sign in again.");
    }
    throw new ApiError(resp.status, code, message);
  }
  return json;
}

// ---- elements -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Through the CSSOM: the page's policy forbids style attributes.
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Replace an element's children, leaving out the null ones (replaceChildren would print them).
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function badge(state) {
  return h("span", { class: "badge state-" + state, "data-state": state }, state.replace("_", " "));
}

function when(ms) {
  if (ms === null || ms === undefined) return "never";
  return new Date(ms).toLocaleString();
}

function pct(x) {
  return (x * 100).toFixed(1) + "%";
}

function duration(s) {
  if (s >= 3600) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  if (s >= 60) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return s + " s";
}

function table(headers, rows, attrs) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs || {},
      h("thead", {}, h("tr", {}, headers.map((x) => (typeof x === "string" ? h("th", { scope: "col" }, x) : x)))),
      h("tbody", {}, rows),
    ),
  );
}

function figure(label, value, id) {
  return h("div", { class: "figure" }, h("div", { class: "label" }, label), h("div", { class: "value", id }, value));
}

function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e.code ? e.message + " (" + e.code + ")" : String(e.message || e));
}

// ---- confirmation dialog -----------------------------------------------------------------

function confirmAction(title, text, okLabel) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

// ---- sign-in ------------------------------------------------------------------------------

function showSignIn(message) {
  me = null;
  $("#nav").hidden = true;
  $("#who").hidden = true;
  $("#page").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message || "";
  $("#token").focus();
}

function signOut(message) {
  stopPage();
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn(message);
}

async function signIn(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    me = await api("GET", "/v1/whoami");
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(e.status === 401 ? "That token is not a live admin token." : e.message);
    return;
  }
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#who").hidden = false;
  $("#who-name").textContent = me.name;
  $("#who-role").textContent = me.role;
  $("#page").hidden = false;
  route();
}

// ---- pages --------------------------------------------------------------------------------

async function route() {
  stopPage();
  stopPage = () => {};
  if (!me) return;
  const hash = location.hash || "#/fleet";
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  const page = $("#page");
  for (const a of document.querySelectorAll("#nav a")) {
    a.toggleAttribute("aria-current", a.dataset.page === parts[0]);
    if (a.dataset.page === parts[0]) a.setAttribute("aria-current", "page");
  }
  fill(page, h("p", { class: "muted" }, "Loading…"));
  try {
    if (parts[0] === "rollouts" && parts[1]) await rolloutPage(page, Number(parts[1]));
    else if (parts[0] === "rollouts") await rolloutsPage(page);
    else if (parts[0] === "audit") await auditPage(page);
    else if (parts[0] === "devices" && parts[1]) await devicePage(page, parts[1]);
    else await fleetPage(page, new URLSearchParams(hash.split("?")[1] || ""));
  } catch (e) {
    if (e.status !== 401) fill(page, errorBox(e));
  }
}

async function fleetPage(page, params) {
  const filters = {};
  for (const k of ["model", "version", "status", "tag"]) {
    if (params.get(k)) filters[k] = params.get(k);
  }
  const search = params.get("q") || "";
  const query = new URLSearchParams({ ...filters, limit: "200" });
  if (params.get("after")) query.set("after", params.get("after"));
  const [summary, list] = await Promise.all([
    api("GET", "/v1/fleet/summary"),
    api("GET", "/v1/devices?" + query),
  ]);
  const form = h(
    "form",
    { class: "filters", id: "fleet-filters", role: "search" },
    h("label", {}, "Search id", h("input", { name: "q", id: "filter-q", value: search, placeholder: "device id" })),
    h("label", {}, "Model", h("input", { name: "model", id: "filter-model", value: filters.model || "" })),
    h("label", {}, "Version", h("input", { name: "version", id: "filter-version", value: filters.version || "", placeholder: "1.4.2" })),
    h("label", {}, "Tag", h("input", { name: "tag", id: "filter-tag", value: filters.tag || "" })),
    h(
      "label",
      {},
      "Status",
      h(
        "select",
        { name: "status", id: "filter-status" },
        ["", "online", "silent", "never_seen"].map((s) =>
          h("option", { value: s, selected: (filters.status || "") === s }, s === "" ? "any" : s.replace("_", " ")),
        ),
      ),
    ),
    h("button", { type: "submit", class: "primary" }, "Apply"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/fleet?" + q;
  });
  const needle = search.toLowerCase();
  const devices = list.devices.filter((d) => d.id.toLowerCase().includes(needle));
  const rows = devices.map((d) =>
    h(
      "tr",
      { "data-device": d.id },
      h("td", {}, h("a", { href: "#/devices/" + encodeURIComponent(d.id) }, d.id)),
      h("td", {}, d.model),
      h("td", {}, d.firmware_version || "–"),
      h("td", { class: "hide-narrow" }, d.running_slot || "–"),
      h("td", {}, d.boot_state || "–"),
      h("td", {}, badge(d.status)),
      h("td", { class: "hide-narrow" }, when(d.last_seen_at)),
    ),
  );
  fill(page, 
    h("h1", {}, "Fleet"),
    h(
      "div",
      { class: "grid" },
      figure("Devices", summary.total, "fleet-total"),
      figure("Online", summary.online, "fleet-online"),
      figure("Silent", summary.silent, "fleet-silent"),
      figure("Never seen", summary.never_seen, "fleet-never-seen"),
    ),
    h("h2", {}, "By version"),
    h(
      "p",
      { id: "fleet-versions" },
      summary.by_version.map((v) => h("span", { class: "badge" }, (v.version || "unknown") + ": " + v.devices, " ")),
    ),
    h("h2", {}, "Devices"),
    form,
    table(["Id", "Model", "Version", h("th", { class: "hide-narrow" }, "Slot"), "Boot state", "Status", h("th", { class: "hide-narrow" }, "Last seen")], rows, { id: "devices" }),
    h("p", { class: "muted" }, devices.length + " shown"),
    list.next_after
      ? h("p", {}, h("a", { href: "#/fleet?" + new URLSearchParams({ ...filters, after: list.next_after }) }, "Next page"))
      : null,
  );
}

async function devicePage(page, id) {
  const d = await api("GET", "/v1/devices/" + encodeURIComponent(id));
  const dev = d.device || d; // the device's fields sit beside its events
  const facts = [
    ["Model", dev.model],
    ["Tags", (dev.tags || []).join(", ") || "–"],
    ["Firmware", dev.firmware_version || "–"],
    ["Running slot", dev.running_slot || "–"],
    ["Boot state", dev.boot_state || "–"],
    ["Bootloader", dev.bootloader_version || "–"],
    ["RDP level", dev.rdp_level || "–"],
    ["WRP mask", dev.wrp_mask === null || dev.wrp_mask === undefined ? "–" : "0x" + dev.wrp_mask.toString(16)],
    ["Security counter", dev.security_counter ?? "–"],
    ["Last seen", when(dev.last_seen_at)],
  ];
  fill(page, 
    h("h1", {}, "Device ", dev.id, " ", badge(dev.status)),
    h("div", { class: "grid" }, facts.map(([k, v]) => figure(k, v))),
    h("h2", {}, "Events"),
    table(
      ["Received", "Event", "Rollout", "Version", "Reason"],
      d.events.map((e) =>
        h(
          "tr",
          {},
          h("td", {}, when(e.received_at)),
          h("td", {}, e.kind),
          h("td", {}, e.rollout_id ? h("a", { href: "#/rollouts/" + e.rollout_id }, "#" + e.rollout_id) : "–"),
          h("td", {}, e.version || "–"),
          h("td", {}, e.reason || ""),
        ),
      ),
    ),
  );
}

async function rolloutsPage(page) {
  const list = await api("GET", "/v1/rollouts");
  fill(page, 
    h("h1", {}, "Rollouts"),
    list.rollouts.length === 0
      ? h("p", { class: "muted" }, "No rollout yet. Start one with fota rollout start --release ID.")
      : table(
          ["Id", "Kind", "Release", "Model", "State", "Stage", h("th", { class: "num" }, "Targets"), h("th", { class: "num" }, "Confirmed"), h("th", { class: "num" }, "Failed"), h("th", { class: "hide-narrow" }, "Updated")],
          list.rollouts.map((r) =>
            h(
              "tr",
              { "data-rollout": r.id },
              h("td", {}, h("a", { href: "#/rollouts/" + r.id }, "#" + r.id)),
              h("td", {}, r.kind),
              h("td", {}, r.version),
              h("td", {}, r.model),
              h("td", {}, badge(r.state)),
              h("td", {}, r.current_stage + " of " + r.stages.length),
              h("td", { class: "num" }, r.targets),
              h("td", { class: "num" }, r.counts.confirmed),
              h("td", { class: "num" }, r.counts.failed + r.counts.rolled_back + r.counts.timed_out),
              h("td", { class: "hide-narrow" }, when(r.updated_at)),
            ),
          ),
          { id: "rollouts" },
        ),
  );
}

const COUNT_COLUMNS = [
  ["offered", "Offered"],
  ["downloading", "Downloading"],
  ["installed", "Installed"],
  ["confirmed", "Confirmed"],
  ["failed", "Failed"],
  ["rolled_back", "Rolled back"],
  ["timed_out", "Timed out"],
];

// What each action does, in the words of the confirmation.
const ACTIONS = {
  pause: ["Pause", "Nothing more is offered until it is resumed; devices already updating carry on."],
  resume: ["Resume", "Offers start again and the health gate is checked again at once."],
  approve: ["Approve", "The current stage may advance to the next one once its gate passes."],
  abort: ["Abort", "The rollout ends for good: nothing more is offered. Devices keep what they run; roll back with a fleet rollback if needed."],
};

function resetsText(resets) {
  if (resets === null || resets === undefined) return "";
  if (typeof resets !== "object") return String(resets);
  return Object.entries(resets)
    .map(([k, v]) => k.replace(/_/g, " ") + ": " + (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : typeof v === "object" ? JSON.stringify(v) : v))
    .join(", ");
}

function renderRollout(view, r) {
  const may_steer = may("operator");
  const actions = [];
  if (may_steer) {
    if (r.state === "active") actions.push("pause");
    if (r.state === "paused" || r.state === "halted") actions.push("resume");
    if (r.state === "active" && r.gate && r.gate.needs_approval && !r.gate.approved) actions.push("approve");
    if (["active", "paused", "halted"].includes(r.state)) actions.push("abort");
  }
  const limit = r.max_failure_rate;
  const rate = r.gate_failure_rate;
  const scale = Math.max(limit * 2, rate, 0.0001);
  const gate = r.gate;
  const gateItems = gate
    ? [
        figure("Decided in stage", gate.decided + " of " + gate.min_sample, "gate-decided"),
        figure("In flight", gate.in_flight, "gate-in-flight"),
        figure("Not offered yet", gate.not_offered, "gate-not-offered"),
        figure("Bake left", duration(gate.bake_left_s) + " of " + duration(gate.bake_s), "gate-bake"),
        figure("Approval", gate.needs_approval ? (gate.approved ? "approved" : "needed") : "not needed", "gate-approval"),
      ]
    : [];
  const hasStageResets = r.stages.some((s) => s.resets !== undefined && s.resets !== null);
  fill(view, 
    h(
      "h1",
      {},
      (r.kind === "rollback" ? "Rollback #" : "Rollout #") + r.id + ": " + r.model + " " + r.version + " ",
      h("span", { id: "rollout-state" }, badge(r.state)),
    ),
    h(
      "p",
      { class: "muted" },
      "Stage " + r.current_stage + " of " + r.stages.length + " · " + r.targets + " targets · started by " + r.created_by + " " + when(r.created_at),
    ),
    r.halt_message
      ? h("div", { class: "card halt", id: "halt", role: "alert" }, h("strong", {}, "Halted: "), h("span", { id: "halt-reason" }, r.halt_message))
      : null,
    r.next ? h("div", { class: "card next", id: "next" }, h("strong", {}, "Next: "), r.next) : null,
    actions.length
      ? h(
          "div",
          { class: "actions", id: "actions" },
          actions.map((a) =>
            h(
              "button",
              {
                type: "button",
                id: "action-" + a,
                class: a === "abort" ? "danger" : "primary",
                "aria-label": ACTIONS[a][0] + " rollout " + r.id,
                onclick: () => act(view, r, a),
              },
              ACTIONS[a][0],
            ),
          ),
        )
      : null,
    h("p", { class: "error", id: "action-error", role: "alert" }),
    h(
      "div",
      { class: "grid" },
      figure("Confirmed", r.counts.confirmed, "total-confirmed"),
      figure("Failed", r.counts.failed + r.counts.rolled_back + r.counts.timed_out, "total-failed"),
      figure("In flight", r.counts.offered + r.counts.downloading + r.counts.installed, "total-in-flight"),
      figure("Failure rate (gate)", pct(rate) + " / " + pct(limit), "failure-rate"),
    ),
    h(
      "div",
      { class: "meter", role: "meter", "aria-label": "failure rate against its limit", "aria-valuemin": "0", "aria-valuemax": String(scale), "aria-valuenow": String(rate) },
      h("div", { class: "fill" + (rate > limit ? " over" : ""), style: "width:" + Math.min(100, (rate / scale) * 100) + "%" }),
      h("div", { class: "limit", style: "left:" + (limit / scale) * 100 + "%" }),
    ),
    gate ? h("h2", {}, "Gate of stage " + r.current_stage) : null,
    gate ? h("div", { class: "grid", id: "gate" }, gateItems) : null,
    r.resets !== undefined && r.resets !== null
      ? h("div", { class: "card", id: "resets" }, h("strong", {}, "Release health (resets): "), resetsText(r.resets))
      : null,
    h("h2", {}, "Stages"),
    table(
      ["Stage", "Reach", "Status", ...COUNT_COLUMNS.map(([, l]) => h("th", { class: "num" }, l)), h("th", { class: "num" }, "Limit"), ...(hasStageResets ? ["Resets"] : [])],
      r.stages.map((s) =>
        h(
          "tr",
          { "data-stage": s.number },
          h("td", {}, s.number + " (" + (s.percent !== null ? s.percent + "%" : s.devices + " devices") + ")"),
          h("td", { class: "num" }, s.reach),
          h("td", {}, s.status),
          COUNT_COLUMNS.map(([k]) => h("td", { class: "num", "data-count": k }, s.counts[k])),
          h("td", { class: "num" }, pct(s.max_failure_rate)),
          hasStageResets ? h("td", {}, resetsText(s.resets)) : null,
        ),
      ),
      { id: "stages" },
    ),
  );
}

async function act(view, r, action) {
  const [label, what] = ACTIONS[action];
  const ok = await confirmAction(label + " rollout #" + r.id + "?", label + " rollout #" + r.id + " (" + r.model + " " + r.version + "). " + what, label);
  if (!ok) return;
  try {
    const status = await api("POST", "/v1/rollouts/" + r.id + "/" + action);
    renderRollout(view, status);
  } catch (e) {
    const box = $("#action-error");
    if (box) box.textContent = e.message + " (" + e.code + ")";
  }
}

async function rolloutPage(page, id) {
  const first = await api("GET", "/v1/rollouts/" + id);
  const live = h("span", { class: "live", id: "live", "aria-live": "off" }, "connecting");
  const view = h("div", { id: "rollout", "data-rollout": id });
  fill(page, h("p", {}, h("a", { href: "#/rollouts" }, "← Rollouts"), " ", live), view);
  renderRollout(view, first);
  const controller = new AbortController();
  stopPage = () => controller.abort();
  follow(id, controller.signal, live, (status) => renderRollout(view, status));
}

// A rollout's event stream, read with fetch() so the token stays in a header. Reconnects after a
// drop until the page changes.
async function follow(id, signal, live, onStatus) {
  while (!signal.aborted) {
    try {
      const resp = await fetch("/v1/rollouts/" + id + "/events", {
        headers: { Authorization: "Bearer " + token(), Accept: "text/event-stream" },
        signal,
      });
      if (resp.status === 401) {
        signOut("The token was refused: sign in again.");
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      live.textContent = "live";
      live.classList.add("on");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (type === "status" && data.length) onStatus(JSON.parse(data.join("\n")));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    live.textContent = "reconnecting";
    live.classList.remove("on");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function auditPage(page) {
  const log = await api("GET", "/v1/audit?limit=200");
  fill(page, 
    h("h1", {}, "Audit log"),
    table(
      ["When", "Actor", "Action", "Rollout", "Release", "Detail"],
      log.entries.map((e) =>
        h(
          "tr",
          { "data-action": e.action },
          h("td", {}, when(e.at)),
          h("td", {}, e.actor),
          h("td", {}, e.action),
          h("td", {}, e.rollout_id ? h("a", { href: "#/rollouts/" + e.rollout_id }, "#" + e.rollout_id) : "–"),
          h("td", {}, e.release_id ?? "–"),
          h("td", {}, h("pre", { class: "detail" }, JSON.stringify(e.detail))),
        ),
      ),
      { id: "audit" },
    ),
  );
}

// ---- start ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("#token").value.trim();
    $("#token").value = "";
    if (value) signIn(value);
  });
  $("#sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", route);
  const saved = token();
  if (saved) signIn(saved);
  else showSignIn("");
});
