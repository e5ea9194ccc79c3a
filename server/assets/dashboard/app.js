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

async function api(method, path, body, signal) {
  const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
  const init = { method, headers, signal };
  if (body instanceof FormData) {
    init.body = body; // multipart: the browser writes its Content-Type with the boundary
  } else if (body !== undefined) {
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

// "1 device", "2 devices": a count with its noun.
function plural(n, one, many) {
  return n + " " + (n === 1 ? one : many || one + "s");
}

function pct(x) {
  return (x * 100).toFixed(1) + "%";
}

function duration(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (s >= 3600) return h + " h" + (m ? " " + m + " min" : "");
  if (s >= 60) return m + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
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
  return h("div", { class: "figure" }, h("div", { class: "label" }, label), h("div", { class: "value", id, title: String(value) }, value));
}

// 59m 59s, 1h, 2h 5m: short enough for a figure.
function short(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return [h ? h + "h" : "", m ? m + "m" : "", sec || s === 0 ? sec + "s" : ""].filter((x) => x).join(" ");
}

// What a refusal means for the person who met it, by the server's stable code; the server's
// own message follows with the specifics.
const ERROR_HELP = {
  unsigned_image: "An image carries no signature: sign it with fota sign (or imgtool) first.",
  bad_signature: "An image's signature does not verify: it was changed after signing, or signed wrongly.",
  untrusted_key: "An image is signed with a key this server does not trust.",
  no_trusted_keys: "This server has no trusted public key configured, so it accepts no release.",
  hash_mismatch: "An image's SHA-256 does not match its contents: the file is corrupted or truncated.",
  malformed_image: "A file is not a signed MCUboot image.",
  wrong_slot: "An image is linked for the other slot: give slot A's build as image A and slot B's as image B.",
  version_mismatch: "The two images, or the version typed, disagree on the version.",
  security_counter_mismatch: "The two images carry different security counters.",
  component_mismatch: "The images are not one component: both applications (for application slots A and B) or both stage-1 bootloaders (for stage-1 slots A and B).",
  invalid_component: "The component is application or bootloader.",
  invalid_version: "That is not a version (e.g. 1.4.2).",
  duplicate_version: "This model already has a release of this version.",
  payload_too_large: "The upload is too large for this server.",
  missing_field: "A field of the upload is missing.",
  invalid_model: "That is not a model name.",
  forbidden: "Your role may not do this.",
  rollout_in_progress: "This model already has an unfinished rollout: let it finish, or abort it, first.",
  no_targets: "No device matches: nothing would be offered.",
  plan_does_not_fit: "The plan does not fit the devices it targets.",
  security_counter_too_low: "The devices hold a higher security counter than this release: their bootloaders would refuse it.",
  invalid_plan: "The plan is not valid.",
  invalid_selector: "The device selector is not valid.",
  invalid_tag: "A tag is not valid.",
  model_mismatch: "The two releases are for different models.",
  release_not_found: "There is no such release.",
  rollout_not_found: "There is no such rollout.",
  invalid_state: "The rollout is not in a state that allows this any more (someone else may have acted).",
};

function errorText(e) {
  if (!e.code) return String(e.message || e);
  const help = ERROR_HELP[e.code];
  return (help ? help + " " : "") + "The server says: " + e.message + " (" + e.code + ")";
}

function errorBox(e, id) {
  return h("p", { class: "error", role: "alert", id }, errorText(e));
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
  const [path, search] = hash.slice(2).split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const query = new URLSearchParams(search || "");
  const pageName = parts[0];
  const page = $("#page");
  for (const a of document.querySelectorAll("#nav a")) {
    const current = a.dataset.page === pageName || (a.dataset.page === "rollouts" && pageName === "rollback");
    a.toggleAttribute("aria-current", current);
    if (current) a.setAttribute("aria-current", "page");
  }
  fill(page, h("p", { class: "muted" }, "Loading…"));
  try {
    if (parts[0] === "rollouts" && parts[1] === "new") await startPage(page, query);
    else if (parts[0] === "rollback") await rollbackPage(page, query);
    else if (parts[0] === "releases" && parts[1]) await releasePage(page, Number(parts[1]));
    else if (parts[0] === "releases") await releasesPage(page);
    else if (parts[0] === "rollouts" && parts[1]) await rolloutPage(page, Number(parts[1]));
    else if (parts[0] === "rollouts") await rolloutsPage(page);
    else if (parts[0] === "audit") await auditPage(page);
    else if (parts[0] === "devices" && parts[1]) await devicePage(page, parts[1]);
    else await fleetPage(page, query);
  } catch (e) {
    if (e.status !== 401) fill(page, errorBox(e));
  }
}

// The search and the filters are the server's (GET /v1/devices?q=...): the page asks for one
// page of matches (at most 100), never the whole fleet, so it works the same at 100,000
// devices. The summary is read once per visit of the page; typing in the search asks only for
// the matches, once the typing pauses (DEBOUNCE_MS), and an answer overtaken by a newer
// question is dropped.
const FLEET_FILTERS = ["q", "model", "version", "tag", "boot_state", "status"];
const PAGE_SIZE = "100";
const DEBOUNCE_MS = 250;
const BOOT_STATES = [["", "any"], ["confirmed", "confirmed"], ["trial", "on trial"], ["reverted", "reverted"]];
const STATUSES = [["", "any"], ["online", "online"], ["silent", "silent"], ["never_seen", "never seen"], ["protection_blocked", "protection-blocked"]];

function choice(name, label, options, value) {
  return h(
    "label",
    {},
    label,
    h(
      "select",
      { name, id: "filter-" + name.replace("_", "-") },
      options.map(([v, text]) => h("option", { value: v, selected: (value || "") === v }, text)),
    ),
  );
}

async function fleetPage(page, params) {
  const filters = {};
  for (const k of FLEET_FILTERS) {
    if (params.get(k)) filters[k] = params.get(k);
  }
  const form = h(
    "form",
    { class: "filters", id: "fleet-filters", role: "search", "aria-label": "Search devices" },
    h("label", {}, "Search id", h("input", { name: "q", id: "filter-q", type: "search", value: filters.q || "", placeholder: "part of a device id", maxlength: "64", autocomplete: "off" })),
    h("label", {}, "Model", h("input", { name: "model", id: "filter-model", value: filters.model || "" })),
    h("label", {}, "Version", h("input", { name: "version", id: "filter-version", value: filters.version || "", placeholder: "1.4.2" })),
    h("label", {}, "Tag", h("input", { name: "tag", id: "filter-tag", value: filters.tag || "" })),
    choice("boot_state", "Boot state", BOOT_STATES, filters.boot_state),
    choice("status", "Status", STATUSES, filters.status),
    h("button", { type: "submit", class: "primary" }, "Search"),
  );
  const results = h("div", { id: "fleet-results" });
  const summaryBox = h("div", { id: "fleet-summary" });
  fill(page, h("h1", {}, "Fleet"), summaryBox, h("h2", {}, "Devices"), form, results);

  let asked = 0; // the latest question; older answers are dropped
  let inFlight = null;
  const search = async (f, after) => {
    const n = ++asked;
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const query = new URLSearchParams({ ...f, limit: PAGE_SIZE });
    if (after) query.set("after", after);
    results.setAttribute("aria-busy", "true");
    let list;
    try {
      list = await api("GET", "/v1/devices?" + query, undefined, controller.signal);
    } catch (e) {
      if (n !== asked || e.name === "AbortError") return;
      results.removeAttribute("aria-busy");
      if (e.status !== 401) fill(results, errorBox(e, "devices-error"));
      return;
    }
    if (n !== asked) return;
    inFlight = null;
    results.removeAttribute("aria-busy");
    fill(results, deviceTable(list, Object.keys(f).length > 0, (next) => search(f, next)));
  };
  const current = () => {
    const f = {};
    for (const [k, v] of new FormData(form)) if (v.trim()) f[k] = v.trim();
    return f;
  };
  // The address follows the filters (a link to share, the back button), without reloading the
  // page: replaceState fires no hashchange.
  const remember = (f) => history.replaceState(null, "", "#/fleet" + (Object.keys(f).length ? "?" + new URLSearchParams(f) : ""));
  let timer = null;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const f = current();
      // A search of part of an id needs a valid piece of one; the server says so anyway.
      if (f.q && !/^[A-Za-z0-9._:-]{1,64}$/.test(f.q)) return;
      remember(f);
      search(f);
    }, DEBOUNCE_MS);
  };
  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearTimeout(timer);
    const f = current();
    remember(f);
    search(f);
  });
  stopPage = () => {
    clearTimeout(timer);
    asked++;
    if (inFlight) inFlight.abort();
  };
  const [summary] = await Promise.all([api("GET", "/v1/fleet/summary"), search(filters, params.get("after"))]);
  fill(summaryBox, fleetSummary(summary));
}

function fleetSummary(s) {
  const counts = (id, items) =>
    h(
      "p",
      { id },
      items.length === 0 ? h("span", { class: "muted" }, "none") : items.flatMap(([label, n]) => [h("span", { class: "badge" }, label + ": " + plural(n, "device")), " "]),
    );
  return [
    h(
      "div",
      { class: "grid" },
      figure("Devices", s.total, "fleet-total"),
      figure("Online", s.online, "fleet-online"),
      figure("Silent", s.silent, "fleet-silent"),
      figure("Never seen", s.never_seen, "fleet-never-seen"),
      figure("Confirmed", s.confirmed, "fleet-confirmed"),
      figure("On trial", s.trial, "fleet-trial"),
      figure("Reverted", s.reverted, "fleet-reverted"),
      figure("Protection-blocked", s.protection_blocked, "fleet-protection-blocked"),
    ),
    h("h2", {}, "By model"),
    counts("fleet-models", s.by_model.map((m) => [m.model, m.devices])),
    h("h2", {}, "By version"),
    counts("fleet-versions", s.by_version.map((v) => [v.version || "unknown", v.devices])),
  ];
}

function deviceTable(list, filtered, next) {
  const rows = list.devices.map((d) =>
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
  return [
    table(["Id", "Model", "Version", h("th", { class: "hide-narrow" }, "Slot"), "Boot state", "Status", h("th", { class: "hide-narrow" }, "Last seen")], rows, { id: "devices" }),
    h(
      "p",
      { class: "muted", id: "devices-shown" },
      list.devices.length === 0
        ? (filtered ? "No device matches." : "No device yet.")
        : plural(list.devices.length, "device") + (list.next_after ? " shown, more on the next page" : " shown"),
    ),
    list.next_after
      ? h("p", {}, h("button", { type: "button", id: "next-page", onclick: () => next(list.next_after) }, "Next page"))
      : null,
  ];
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
    may("operator")
      ? h(
          "div",
          { class: "actions" },
          h("a", { class: "button primary", href: "#/rollouts/new", id: "start-rollout" }, "Start a rollout"),
          h("a", { class: "button", href: "#/rollback", id: "start-rollback" }, "Fleet rollback"),
        )
      : null,
    list.rollouts.length === 0
      ? h("p", { class: "muted" }, "No rollout yet.")
      : table(
          ["Id", "Kind", "Release", "Model", "State", "Stage", h("th", { class: "num" }, "Targets"), h("th", { class: "num" }, "Confirmed"), h("th", { class: "num" }, "Failed"), h("th", { class: "hide-narrow" }, "Updated")],
          list.rollouts.map((r) =>
            h(
              "tr",
              { "data-rollout": r.id },
              h("td", {}, h("a", { href: "#/rollouts/" + r.id }, "#" + r.id)),
              h("td", {}, r.kind),
              h("td", {}, versionOf(r)),
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

function renderRollout(view, r, onStatus) {
  const may_steer = may("operator");
  // Keep the keyboard where it was: the view is redrawn with every status.
  const focused = document.activeElement && view.root.contains(document.activeElement) ? document.activeElement.id : null;
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
        figure("Bake left", short(gate.bake_left_s) + " of " + short(gate.bake_s), "gate-bake"),
        figure("Approval", gate.needs_approval ? (gate.approved ? "approved" : "needed") : "not needed", "gate-approval"),
      ]
    : [];
  const hasStageResets = r.stages.some((s) => s.resets !== undefined && s.resets !== null);
  fill(
    view.head,
    h(
      "h1",
      {},
      (r.kind === "rollback" ? "Rollback #" : "Rollout #") + r.id + ": " + r.model + " " + versionOf(r) + " ",
      h("span", { id: "rollout-state" }, badge(r.state)),
    ),
    h(
      "p",
      { class: "muted" },
      "Stage " + r.current_stage + " of " + r.stages.length + " · " + plural(r.targets, "target") + " · started by " + r.created_by + " " + when(r.created_at),
    ),
  );
  showHalt(view.halt, r.halt_message);
  fill(
    view.controls,
    actions.length || (may_steer && r.kind === "rollout" && r.state !== "completed")
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
                onclick: () => act(r, a, onStatus),
              },
              ACTIONS[a][0],
            ),
          ),
          r.kind === "rollout" && r.state !== "completed"
            ? h(
                "a",
                { class: "button", id: "action-rollback-link", href: "#/rollback?from=" + r.release_id },
                "Fleet rollback…",
              )
            : null,
        )
      : null,
  );
  fill(
    view.figures,
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
  );
  // Below the chart: what changes in size as devices move (the gate's words, resets, stages),
  // so the chart and the figures above it stay put.
  fill(
    view.body,
    r.next ? h("div", { class: "card next", id: "next" }, h("strong", {}, "Next: "), r.next) : null,
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
          h("td", {}, s.number + " (" + (s.percent !== null ? s.percent + "%" : plural(s.devices, "device")) + ")"),
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
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

// The halt card is an alert: a screen reader announces it when it appears. It is made once and
// kept while the rollout stays halted (its reason's text changed only if the reason does), so
// the live updates that follow do not announce it again.
function showHalt(slot, message) {
  if (!message) {
    slot.replaceChildren();
    return;
  }
  const reason = slot.querySelector("#halt-reason");
  if (reason) {
    if (reason.textContent !== message) reason.textContent = message;
    return;
  }
  slot.append(h("div", { class: "card halt", id: "halt", role: "alert" }, h("strong", {}, "Halted: "), h("span", { id: "halt-reason" }, message)));
}

async function act(r, action, onStatus) {
  const [label, what] = ACTIONS[action];
  const ok = await confirmAction(label + " rollout #" + r.id + "?", label + " rollout #" + r.id + " (" + r.model + " " + r.version + "). " + what, label);
  if (!ok) return;
  const box = $("#action-error");
  if (box) box.textContent = "";
  try {
    onStatus(await api("POST", "/v1/rollouts/" + r.id + "/" + action));
  } catch (e) {
    const box = $("#action-error");
    if (box) box.textContent = errorText(e);
  }
}

// ---- the chart --------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

// Cumulative confirmations and failures against time, drawn by hand in SVG (no library, no
// CDN). It starts from the server's timeline and grows with every status the stream brings; its
// box has a fixed height and its figures fixed widths, so redrawing never moves the page.
class Chart {
  constructor(timeline) {
    // The server's clock: points the stream adds are placed on it, not on this machine's.
    this.skew = timeline.to - Date.now();
    this.from = timeline.from;
    this.points = timeline.points.map((p) => ({ at: p.at, c: p.confirmed, f: p.failures }));
    this.width = 600;
    this.height = 160;
    this.plot = svg("svg", {
      viewBox: "0 0 " + this.width + " " + this.height,
      preserveAspectRatio: "none",
      role: "img",
      "aria-labelledby": "chart-caption",
      id: "chart-plot",
    });
    this.grid = svg("g", { class: "grid-lines" });
    this.confirmed = svg("polyline", { class: "line-confirmed", "vector-effect": "non-scaling-stroke" });
    this.failures = svg("polyline", { class: "line-failures", "vector-effect": "non-scaling-stroke" });
    this.plot.append(this.grid, this.confirmed, this.failures);
    this.top = h("span", { class: "chart-top tabular" });
    this.start = h("span", { class: "tabular" });
    this.end = h("span", { class: "tabular" });
    this.caption = h("span", { id: "chart-caption", class: "tabular" });
    this.el = h(
      "figure",
      { class: "chart card", id: "chart" },
      h(
        "figcaption",
        {},
        h("span", { class: "key key-confirmed" }, "Confirmed"),
        " ",
        h("span", { class: "key key-failures" }, "Failures"),
        " ",
        this.caption,
      ),
      h("div", { class: "chart-box" }, this.top, this.plot),
      h("div", { class: "chart-axis" }, this.start, this.end),
    );
    this.draw();
  }

  // A status from the stream: its totals now.
  add(status) {
    const at = Math.max(Date.now() + this.skew, this.points[this.points.length - 1].at);
    const c = status.counts.confirmed;
    const f = status.counts.failed + status.counts.rolled_back + status.counts.timed_out;
    const last = this.points[this.points.length - 1];
    if (last.c === c && last.f === f && this.points.length > 1 && this.points[this.points.length - 2].c === c && this.points[this.points.length - 2].f === f) {
      last.at = at; // a flat stretch: move its end instead of adding a point
    } else {
      this.points.push({ at, c, f });
    }
    // Hours of updates: keep the shape, drop every other old point.
    if (this.points.length > 600) this.points = this.points.filter((p, i, all) => i % 2 === 0 || i === all.length - 1);
    this.draw();
  }

  draw() {
    const pts = this.points;
    const last = pts[pts.length - 1];
    const span = Math.max(last.at - this.from, 1000);
    const most = Math.max(1, ...pts.map((p) => Math.max(p.c, p.f)));
    // A round top: 1, 2, 5 times a power of ten.
    const pow = Math.pow(10, Math.floor(Math.log10(most)));
    const top = [1, 2, 5, 10].map((m) => m * pow).find((v) => v >= most);
    const x = (at) => (((at - this.from) / span) * this.width).toFixed(1);
    const y = (v) => (this.height - (v / top) * (this.height - 4)).toFixed(1);
    const line = (key) => {
      // Steps: a count holds until the next moment it changed.
      const out = [];
      pts.forEach((p, i) => {
        if (i > 0) out.push(x(p.at) + "," + y(pts[i - 1][key]));
        out.push(x(p.at) + "," + y(p[key]));
      });
      return out.join(" ");
    };
    this.confirmed.setAttribute("points", line("c"));
    this.failures.setAttribute("points", line("f"));
    this.grid.replaceChildren(
      ...[0.25, 0.5, 0.75, 1].map((q) => svg("line", { x1: 0, x2: this.width, y1: y(top * q), y2: y(top * q), "vector-effect": "non-scaling-stroke" })),
    );
    this.top.textContent = plural(top, "device");
    this.start.textContent = when(this.from);
    this.end.textContent = "+" + duration(Math.round(span / 1000));
    this.caption.textContent = last.c + " confirmed, " + last.f + " failed, over " + duration(Math.round(span / 1000));
    this.el.dataset.confirmed = last.c;
    this.el.dataset.failures = last.f;
    this.el.dataset.points = pts.length;
  }
}

async function rolloutPage(page, id) {
  const [first, timeline] = await Promise.all([
    api("GET", "/v1/rollouts/" + id),
    api("GET", "/v1/rollouts/" + id + "/timeline"),
  ]);
  const live = h("span", { class: "live", id: "live", "aria-live": "off" }, "connecting");
  const chart = new Chart(timeline);
  // The parts a status redraws, and between them the ones it must not re-create: the halt card
  // and the action's error (alerts, announced when they appear).
  const view = {
    head: h("div", { id: "rollout-head" }),
    halt: h("div", { id: "halt-slot" }),
    controls: h("div", { id: "rollout-controls" }),
    error: h("p", { class: "error", id: "action-error", role: "alert" }),
    figures: h("div", { id: "rollout-figures" }),
    body: h("div", { id: "rollout-body" }),
  };
  view.root = h(
    "div",
    { id: "rollout", "data-rollout": id },
    view.head,
    view.halt,
    view.controls,
    view.error,
    view.figures,
    h("h2", {}, "Confirmations and failures over time"),
    chart.el,
    view.body,
  );
  const audit = h("div", { id: "rollout-audit" });
  fill(
    page,
    h("p", {}, h("a", { href: "#/rollouts" }, "← Rollouts"), " ", live),
    view.root,
    h("h2", {}, "Audit log of this rollout"),
    audit,
  );
  const controller = new AbortController();
  stopPage = () => controller.abort();
  // The audit log changes with the rollout's state and stage (and every action): read it again
  // only then, not with every count.
  let seen = null;
  const loadAudit = async () => {
    try {
      const log = await api("GET", "/v1/audit?rollout_id=" + id + "&limit=50");
      if (!controller.signal.aborted) fill(audit, auditTable(log.entries, "rollout-audit-log"));
    } catch (e) {
      if (e.status !== 401) fill(audit, errorBox(e));
    }
  };
  const show = (status) => {
    renderRollout(view, status, show);
    chart.add(status);
    const key = status.state + "/" + status.current_stage + "/" + status.approved;
    if (key !== seen) {
      seen = key;
      loadAudit();
    }
  };
  show(first);
  follow(id, controller.signal, live, show);
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

function detailText(detail) {
  if (detail === null || typeof detail !== "object") return detail === null || detail === undefined ? "" : String(detail);
  return Object.entries(detail)
    .map(([k, v]) => k.replace(/_/g, " ") + ": " + (typeof v === "object" && v !== null ? JSON.stringify(v) : v))
    .join("; ");
}

function auditTable(entries, id) {
  if (entries.length === 0) return h("p", { class: "muted", id }, "Nothing yet.");
  return table(
    ["When", "Actor", "Action", "Rollout", "Release", "Detail"],
    entries.map((e) =>
      h(
        "tr",
        { "data-action": e.action },
        h("td", { class: "nowrap" }, when(e.at)),
        h("td", {}, e.actor),
        h("td", {}, e.action),
        h("td", {}, e.rollout_id ? h("a", { href: "#/rollouts/" + e.rollout_id }, "#" + e.rollout_id) : "–"),
        h("td", {}, e.release_id ? h("a", { href: "#/releases/" + e.release_id }, "#" + e.release_id) : "–"),
        h("td", { class: "detail" }, detailText(e.detail)),
      ),
    ),
    { id },
  );
}

async function auditPage(page) {
  const log = await api("GET", "/v1/audit?limit=200");
  fill(page, h("h1", {}, "Audit log"), auditTable(log.entries, "audit"));
}

// ---- releases -----------------------------------------------------------------------------------

// A release's (or a rollout's) version, named "bootloader 1.1.0" when it is a stage-1's.
function versionOf(r) {
  return (r.component === "bootloader" ? "bootloader " : "") + r.version;
}

async function releasesPage(page) {
  const list = await api("GET", "/v1/releases");
  fill(
    page,
    h("h1", {}, "Releases"),
    list.releases.length === 0
      ? h("p", { class: "muted" }, "No release yet.")
      : table(
          ["Id", "Model", "Version", h("th", { class: "num" }, "Security counter"), h("th", { class: "hide-narrow" }, "Uploaded"), h("th", { class: "hide-narrow" }, "By")],
          list.releases.map((r) =>
            h(
              "tr",
              { "data-release": r.id },
              h("td", {}, h("a", { href: "#/releases/" + r.id }, "#" + r.id)),
              h("td", {}, r.model),
              h("td", {}, versionOf(r)),
              h("td", { class: "num" }, r.security_counter),
              h("td", { class: "hide-narrow" }, when(r.created_at)),
              h("td", { class: "hide-narrow" }, r.created_by),
            ),
          ),
          { id: "releases" },
        ),
    may("operator") ? uploadForm() : null,
  );
}

function uploadForm() {
  const form = h(
    "form",
    { class: "card stack", id: "upload-form", "aria-labelledby": "upload-title", novalidate: true },
    h("h2", { id: "upload-title" }, "Upload a release"),
    h(
      "p",
      { class: "muted" },
      "Two signed images of one build, one linked for each slot (fota sign, or imgtool with --header-size 0x200 --pad-header). The server checks both signatures against its trusted keys, each image's slot, and that they agree on version and security counter.",
    ),
    field("upload-model", "Model", h("input", { id: "upload-model", name: "model", required: true, maxlength: "32", autocomplete: "off" })),
    field("upload-version", "Version (optional cross-check)", h("input", { id: "upload-version", name: "version", placeholder: "from the images", autocomplete: "off" })),
    field("upload-image-a", "Image for slot A", h("input", { id: "upload-image-a", name: "image_a", type: "file", required: true })),
    field("upload-image-b", "Image for slot B", h("input", { id: "upload-image-b", name: "image_b", type: "file", required: true })),
    field("upload-notes", "Notes", h("textarea", { id: "upload-notes", name: "notes", rows: "2", maxlength: "16384" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "upload-submit" }, "Upload…")),
    h("p", { class: "error", id: "upload-error", role: "alert" }),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const model = $("#upload-model").value.trim();
    const a = $("#upload-image-a").files[0];
    const b = $("#upload-image-b").files[0];
    let bad = false;
    if (!NAME.test(model)) bad = fieldError("upload-model", model ? "'" + model + "' is not a model name: 1-32 of A-Z a-z 0-9 . _ : -, not starting with . or -" : "give the model");
    if (!a) bad = fieldError("upload-image-a", "choose slot A's signed image");
    if (!b) bad = fieldError("upload-image-b", "choose slot B's signed image");
    if (bad) return;
    const version = $("#upload-version").value.trim();
    const ok = await confirmAction(
      "Upload a release of " + model + "?",
      "Upload a release of " + model + (version ? " " + version : "") + " from " + a.name + " (slot A, " + plural(a.size, "byte") + ") and " + b.name + " (slot B, " + plural(b.size, "byte") + "). Nothing is offered to any device until a rollout of it starts.",
      "Upload",
    );
    if (!ok) return;
    const body = new FormData();
    body.append("model", model);
    if (version) body.append("version", version);
    body.append("notes", $("#upload-notes").value);
    body.append("image_a", a, a.name);
    body.append("image_b", b, b.name);
    try {
      const release = await api("POST", "/v1/releases", body);
      location.hash = "#/releases/" + release.id;
    } catch (e) {
      $("#upload-error").textContent = errorText(e);
    }
  });
  return form;
}

async function releasePage(page, id) {
  const r = await api("GET", "/v1/releases/" + id);
  fill(
    page,
    h("p", {}, h("a", { href: "#/releases" }, "← Releases")),
    h("h1", {}, "Release #" + r.id + ": " + r.model + " " + versionOf(r)),
    h(
      "div",
      { class: "grid", id: "release-facts" },
      figure("Model", r.model, "release-model"),
      figure("Component", r.component === "bootloader" ? "stage-1 bootloader" : "application", "release-component"),
      figure("Version", r.version, "release-version"),
      figure("Security counter", r.security_counter, "release-counter"),
      figure("Uploaded", when(r.created_at)),
      figure("By", r.created_by),
    ),
    r.notes ? h("div", { class: "card" }, h("strong", {}, "Notes: "), h("span", { class: "notes" }, r.notes)) : null,
    may("operator")
      ? h(
          "div",
          { class: "actions" },
          h("a", { class: "button primary", href: "#/rollouts/new?release=" + r.id, id: "release-start" }, "Start a rollout of it…"),
          h("a", { class: "button", href: "#/rollback?release=" + r.id, id: "release-rollback" }, "Roll the fleet back to it…"),
        )
      : null,
    h("h2", {}, "Images"),
    table(
      ["Slot", h("th", { class: "num" }, "Bytes"), "SHA-256", "Signing key hash"],
      r.images.map((img) =>
        h(
          "tr",
          { "data-slot": img.slot },
          h("td", {}, img.slot.toUpperCase()),
          h("td", { class: "num" }, img.size),
          h("td", { class: "digest" }, h("a", { href: "/v1/artifacts/" + img.sha256, "aria-label": "Download slot " + img.slot.toUpperCase() + " image " + img.sha256 }, h("code", { "data-sha256": img.sha256 }, img.sha256))),
          h("td", { class: "digest" }, h("code", { "data-key-hash": img.key_hash }, img.key_hash)),
        ),
      ),
      { id: "release-images" },
    ),
  );
}

// ---- forms: the plan, as `fota rollout start` takes it --------------------------------------------

// Names of models and tags, as the server checks them.
const NAME = /^[A-Za-z0-9_:][A-Za-z0-9._:-]{0,31}$/;

function field(id, label, input, help) {
  input.setAttribute("aria-describedby", id + "-error" + (help ? " " + id + "-help" : ""));
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    help ? h("span", { class: "help", id: id + "-help" }, help) : null,
    h("span", { class: "field-error", id: id + "-error" }),
  );
}

function fieldError(id, message) {
  const input = document.getElementById(id);
  input.setAttribute("aria-invalid", "true");
  document.getElementById(id + "-error").textContent = message;
  return true;
}

function clearErrors(form) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const el of form.querySelectorAll(".field-error, .error")) el.textContent = "";
}

// The CLI's parsers (cli/src/ops/mod.rs), with its words, so the form refuses what the CLI
// refuses before anything is sent. Each returns [value, null] or [null, message].
function parseSeconds(s) {
  const t = s.trim();
  const m = /^(\d+)(ms|s|m|h|d)?$/.exec(t);
  if (!m) return [null, "'" + s + "' is not a duration (e.g. 90, 90s, 30m, 2h, 1d)"];
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 }[m[2] || "s"];
  if (!Number.isSafeInteger(ms)) return [null, "'" + s + "' is too long"];
  if (ms % 1000 !== 0) return [null, "'" + s + "': give whole seconds"];
  return [ms / 1000, null];
}

function parseNumber(s) {
  const t = s.trim();
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t) ? Number(t) : NaN;
}

function parseRate(s) {
  const t = s.trim();
  const percent = t.endsWith("%");
  const value = parseNumber(percent ? t.slice(0, -1) : t);
  if (!Number.isFinite(value)) return [null, "'" + s + "' is not a rate (e.g. 5% or 0.05)"];
  const rate = percent ? value / 100 : value;
  if (rate < 0 || rate > 1) {
    return [null, !percent && value > 1 && value <= 100 ? "'" + s + "' is above 1; for a percentage write " + value + "%" : "'" + s + "' is not between 0% and 100%"];
  }
  return [rate, null];
}

function parsePercent(s) {
  const t = s.trim().replace(/%$/, "").trim();
  const p = parseNumber(t);
  if (!Number.isFinite(p)) return [null, "'" + s + "' is not a percentage"];
  if (p <= 0 || p > 100) return [null, "'" + s + "': a stage is more than 0% and at most 100%"];
  return [p, null];
}

function parseCount(s) {
  const t = s.trim();
  if (!/^\d+$/.test(t)) return [null, "'" + s + "' is not a device count"];
  if (Number(t) === 0) return [null, "a stage has at least 1 device"];
  return [Number(t), null];
}

function parseWhole(s) {
  const t = s.trim();
  return /^\d+$/.test(t) && Number.isSafeInteger(Number(t)) ? [Number(t), null] : [null, "'" + s + "' is not a whole number"];
}

function parseDecimal(s) {
  const v = parseNumber(s);
  return Number.isFinite(v) ? [v, null] : [null, "'" + s + "' is not a number"];
}

const DEFAULT_STAGES = [1, 10, 50, 100];

// The plan's fields; left empty, a field is the server's default (the CLI's help says which).
function planFields(prefix) {
  const f = (name, label, placeholder, help) =>
    field(prefix + name, label, h("input", { id: prefix + name, name, placeholder, autocomplete: "off", inputmode: "decimal" }), help);
  return h(
    "fieldset",
    { class: "plan", id: prefix + "plan" },
    h("legend", {}, "Plan"),
    h(
      "div",
      { class: "field" },
      h("span", { class: "label", id: prefix + "kind-label" }, "Stage sizes in"),
      h(
        "div",
        { role: "radiogroup", "aria-labelledby": prefix + "kind-label", class: "radios" },
        h("label", {}, h("input", { type: "radio", name: prefix + "kind", value: "percent", id: prefix + "kind-percent", checked: true }), " percent of the targets"),
        h("label", {}, h("input", { type: "radio", name: prefix + "kind", value: "devices", id: prefix + "kind-devices" }), " devices"),
      ),
    ),
    f("stages", "Cumulative stage sizes", DEFAULT_STAGES.join(","), "comma-separated; default 1,10,50,100 (%)"),
    f("bake", "Bake time per stage", "30m", "how long each stage runs before it may advance: 90, 90s, 30m, 2h, 1d"),
    f("min-sample", "Minimum sample", "20", "decided devices a stage needs before it may advance"),
    f("max-failure-rate", "Maximum failure rate", "5%", "above it the rollout halts: 5% or 0.05"),
    f("deadline", "Confirmation deadline", "2h", "from the offer to confirming before a device counts as failed"),
    f("max-reset-ratio", "Maximum reset ratio", "2", "new release's unexpected resets per device-hour against the old's; 0 turns it off"),
    f("min-device-hours", "Minimum device-hours", "10", "before resets may halt the release"),
    h("label", { class: "check" }, h("input", { type: "checkbox", id: prefix + "manual", name: "manual" }), " Stages advance only when approved"),
  );
}

// Read the plan's fields: [stages or null (the server's default plan), description], or null
// after marking the fields in error.
function readPlan(prefix) {
  const value = (name) => document.getElementById(prefix + name).value.trim();
  let bad = false;
  const take = (name, parse) => {
    const v = value(name);
    if (v === "") return null;
    const [x, err] = parse(v);
    if (err) {
      bad = fieldError(prefix + name, err);
      return null;
    }
    return x;
  };
  const devices = document.getElementById(prefix + "kind-devices").checked;
  let sizes = null;
  if (value("stages") !== "") {
    sizes = [];
    for (const part of value("stages").split(",")) {
      const [x, err] = (devices ? parseCount : parsePercent)(part);
      if (err) {
        bad = fieldError(prefix + "stages", err);
        break;
      }
      sizes.push(x);
    }
  } else if (devices) {
    bad = fieldError(prefix + "stages", "give the stage sizes in devices, e.g. 10,100,1000");
  }
  const gate = {
    bake_s: take("bake", parseSeconds),
    min_sample: take("min-sample", parseWhole),
    max_failure_rate: take("max-failure-rate", parseRate),
    confirm_deadline_s: take("deadline", parseSeconds),
    max_reset_ratio: take("max-reset-ratio", parseDecimal),
    min_device_hours: take("min-device-hours", parseDecimal),
  };
  const manual = document.getElementById(prefix + "manual").checked;
  if (bad) return null;
  const given = sizes !== null || manual || Object.values(gate).some((v) => v !== null);
  const kind = devices ? "devices" : "percent";
  const list = sizes || DEFAULT_STAGES;
  let stages = null;
  if (given) {
    stages = list.map((size) => {
      const stage = { [kind]: size };
      for (const [k, v] of Object.entries(gate)) if (v !== null) stage[k] = v;
      if (manual) stage.auto_advance = false;
      return stage;
    });
  }
  const or = (v, d) => (v === null ? d : v);
  const words =
    list.map((x) => (devices ? plural(x, "device") : x + "%")).join(" → ") +
    "; each stage bakes " + duration(or(gate.bake_s, 1800)) +
    ", needs " + plural(or(gate.min_sample, 20), "decided device") +
    " and halts the rollout above " + pct(or(gate.max_failure_rate, 0.05)) + " failures" +
    "; a device that has not confirmed " + duration(or(gate.confirm_deadline_s, 7200)) + " after its offer counts as failed" +
    (or(gate.max_reset_ratio, 2) === 0
      ? "; resets are not checked"
      : "; it halts if the new release resets " + plural(or(gate.max_reset_ratio, 2), "time") + " as often as the old (after " + plural(or(gate.min_device_hours, 10), "device-hour") + ")") +
    (manual ? "; each stage waits for an approval" : "; stages advance by themselves");
  return [stages, words];
}

function releaseOption(r, selected) {
  return h("option", { value: r.id, selected: selected === r.id }, "#" + r.id + " " + r.model + " " + versionOf(r) + " (security counter " + r.security_counter + ")");
}

function noRole(page, what) {
  fill(page, h("h1", {}, what), h("p", { class: "error", role: "alert" }, what + " needs the operator role; this token is a " + me.role + "."));
}

async function startPage(page, query) {
  if (!may("operator")) return noRole(page, "Start a rollout");
  const { releases } = await api("GET", "/v1/releases");
  const chosen = Number(query.get("release")) || (releases[0] && releases[0].id);
  const form = h(
    "form",
    { class: "card stack", id: "start-form", "aria-labelledby": "start-title", novalidate: true },
    field("start-release", "Release", h("select", { id: "start-release", name: "release", required: true }, releases.map((r) => releaseOption(r, chosen)))),
    h(
      "fieldset",
      {},
      h("legend", {}, "Targets: the release's model, and only devices"),
      field("start-tags", "With every tag", h("input", { id: "start-tags", name: "tags", placeholder: "e.g. eu, pilot", autocomplete: "off" }), "comma-separated; none: any"),
      field("start-version-min", "Running at least", h("input", { id: "start-version-min", name: "version_min", placeholder: "1.0.0", autocomplete: "off" })),
      field("start-version-max", "Running at most", h("input", { id: "start-version-max", name: "version_max", placeholder: "1.9.9", autocomplete: "off" })),
    ),
    planFields("start-"),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "start-submit" }, "Start…")),
    h("p", { class: "error", id: "start-error", role: "alert" }),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const release = releases.find((r) => r.id === Number($("#start-release").value));
    if (!release) return fieldError("start-release", "choose a release (upload one first)");
    const tags = $("#start-tags").value.split(",").map((t) => t.trim()).filter((t) => t);
    const badTag = tags.find((t) => !NAME.test(t));
    if (badTag !== undefined) return fieldError("start-tags", "'" + badTag + "' is not a tag: 1-32 of A-Z a-z 0-9 . _ : -");
    const plan = readPlan("start-");
    if (!plan) return;
    const [stages, words] = plan;
    const selector = { tags };
    const vmin = $("#start-version-min").value.trim();
    const vmax = $("#start-version-max").value.trim();
    if (vmin) selector.version_min = vmin;
    if (vmax) selector.version_max = vmax;
    const body = { release_id: release.id, selector };
    if (stages) body.stages = stages;
    const who =
      "every " + release.model + " device" +
      (tags.length ? " tagged " + tags.join(" and ") : "") +
      (vmin || vmax ? " running " + (vmin && vmax ? vmin + " to " + vmax : vmin ? vmin + " or later" : vmax + " or earlier") : "");
    const ok = await confirmAction(
      "Start a rollout of " + release.model + " " + release.version + "?",
      "Offer " + release.model + " " + release.version + " (release #" + release.id + ") to " + who + ", in stages of " + words + ". Devices holding a higher security counter are skipped.",
      "Start rollout",
    );
    if (!ok) return;
    try {
      const status = await api("POST", "/v1/rollouts", body);
      location.hash = "#/rollouts/" + status.id;
    } catch (e) {
      $("#start-error").textContent = errorText(e);
    }
  });
  fill(page, h("p", {}, h("a", { href: "#/rollouts" }, "← Rollouts")), h("h1", { id: "start-title" }, "Start a rollout"), form);
}

async function rollbackPage(page, query) {
  if (!may("operator")) return noRole(page, "Fleet rollback");
  const { releases } = await api("GET", "/v1/releases");
  const fromId = Number(query.get("from")) || null;
  const from = releases.find((r) => r.id === fromId);
  // By default the newest release of the bad one's model other than it.
  const good =
    Number(query.get("release")) ||
    ((releases.find((r) => from && r.model === from.model && r.id !== from.id && r.security_counter >= from.security_counter) ||
      releases.find((r) => from && r.model === from.model && r.id !== from.id) ||
      releases[0] || {}).id);
  const fromSelect = h("select", { id: "rollback-from", name: "from" });
  const releaseSelect = h("select", { id: "rollback-release", name: "release", required: true }, releases.map((r) => releaseOption(r, good)));
  // Only releases of the chosen one's model may be rolled back from.
  const fillFrom = () => {
    const target = releases.find((r) => r.id === Number(releaseSelect.value));
    const keep = Number(fromSelect.value) || fromId;
    fill(
      fromSelect,
      h("option", { value: "" }, "the whole fleet of the model"),
      releases.filter((r) => target && r.model === target.model && r.id !== target.id).map((r) => releaseOption(r, keep)),
    );
  };
  releaseSelect.addEventListener("change", fillFrom);
  fillFrom();
  const staged = h("input", { type: "checkbox", id: "rollback-staged", name: "staged" });
  const plan = planFields("rollback-");
  plan.hidden = true;
  staged.addEventListener("change", () => (plan.hidden = !staged.checked));
  const form = h(
    "form",
    { class: "card stack", id: "rollback-form", "aria-labelledby": "rollback-title", novalidate: true },
    h("p", { class: "muted" }, "A fleet rollback is a roll-forward: a new rollout of an earlier, good release. It aborts the model's unfinished rollout, and is refused if the release's security counter is below what the devices hold (their bootloaders would refuse it)."),
    field("rollback-release", "Release to put back", releaseSelect),
    field("rollback-from", "Only the devices running", fromSelect),
    h("label", { class: "check" }, staged, " In stages, by a plan (otherwise everyone at once, with no health gate)"),
    plan,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "danger", id: "rollback-submit" }, "Roll back…")),
    h("p", { class: "error", id: "rollback-error", role: "alert" }),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const release = releases.find((r) => r.id === Number(releaseSelect.value));
    if (!release) return fieldError("rollback-release", "choose the release to put back");
    const bad = releases.find((r) => r.id === Number(fromSelect.value));
    const body = { release_id: release.id };
    if (bad) body.from_release_id = bad.id;
    let how = "all at once, with no health gate";
    if (staged.checked) {
      const p = readPlan("rollback-");
      if (!p) return;
      body.stages = p[0] || DEFAULT_STAGES.map((x) => ({ percent: x }));
      how = "in stages of " + p[1];
    }
    const ok = await confirmAction(
      "Roll " + release.model + " back to " + release.version + "?",
      "Offer " + release.model + " " + release.version + " (release #" + release.id + ") to " +
        (bad ? "every device running " + bad.version + " (release #" + bad.id + ")" : "every " + release.model + " device not on it") +
        ", " + how + ". The model's unfinished rollout, if any, is aborted.",
      "Roll back",
    );
    if (!ok) return;
    try {
      const status = await api("POST", "/v1/rollbacks", body);
      location.hash = "#/rollouts/" + status.id;
    } catch (e) {
      $("#rollback-error").textContent = errorText(e);
    }
  });
  fill(page, h("p", {}, h("a", { href: "#/rollouts" }, "← Rollouts")), h("h1", { id: "rollback-title" }, "Fleet rollback"), form);
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
