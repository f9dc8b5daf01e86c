/* The mes-bridge operator console: one page, routed by the URL's hash, talking only to its own
   origin (/api/console-api/*). Everything shown is built with DOM calls and textContent, never
   innerHTML, so no message content can become markup. */
"use strict";

const API = "/api/console-api/";
const STATE_CLASS = {
  Forwarded: "ok", Processed: "ok", Duplicate: "quiet", Cancelled: "quiet", Waiting: "warn", Forwarding: "warn",
  Parked: "bad", Failed: "bad", missing: "bad", skipped: "quiet",
};
let me = { name: "", flows: [] };

/* --- small helpers ----------------------------------------------------------------------------- */

function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "rect", "line", "path", "text", "circle", "title", "polyline", "a"].includes(tag) && attrs && attrs.svg;
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "svg" || value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function say(text, kind) {
  const status = document.getElementById("status");
  status.textContent = text || "";
  status.className = "status" + (kind ? " " + kind : "");
}

async function api(action, { params, body, method } = {}) {
  const url = new URL(API + action, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  const options = { method: method || (body !== undefined ? "POST" : "GET"), headers: { "x-requested-with": "mes-bridge-console" } };
  if (body !== undefined) {
    options.body = typeof body === "string" ? body : JSON.stringify(body);
    options.headers["content-type"] = "application/json";
  }
  const response = await fetch(url, options);
  let answer = null;
  try {
    answer = await response.json();
  } catch (e) {
    answer = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) {
    say("Your sign-in has expired: reload the page to sign in again.", "bad");
  }
  return { ok: response.ok, status: response.status, data: answer };
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function since(iso) {
  return iso ? (Date.now() - Date.parse(iso)) / 1000 : null;
}

function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function badge(state) {
  return h("span", { class: "badge " + (STATE_CLASS[state] || "quiet") }, state);
}

function messageLink(company, id, label) {
  return h("a", { href: `#/message/${encodeURIComponent(company)}/${encodeURIComponent(id)}` }, label || id);
}

/* One F&O message may carry several MES messages of an order (per-order aggregation): which, and with whom. */
function foMessage(m) {
  const told = m.fo_message;
  if (!told) return "this message alone";
  const others = told.siblings.map((id, i) => [i ? ", " : "", messageLink(m.company, id)]);
  const what = `${told.earlier ? "travelled before in" : ""} one F&O message for ${told.members.length} MES messages (${told.lines} lines, in MES order from ${told.head})`;
  return [what.trim(), others.length ? [" with ", others] : ""];
}

function orderLink(company, order) {
  return order ? h("a", { href: `#/order/${encodeURIComponent(company)}/${encodeURIComponent(order)}` }, order) : "";
}

function field(label, control, hint) {
  const id = control.id || "f-" + Math.random().toString(36).slice(2);
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", {}, hint) : null);
}

function pretty(value) {
  return h("pre", { class: "code", tabindex: "0" }, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

function table(caption, headers, rows, attrs) {
  return h(
    "div", { class: "scroll" },
    h("table", attrs || {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length }, "None."))),
    ),
  );
}

function page(title, ...children) {
  const main = document.getElementById("main");
  const heading = h("h1", { tabindex: "-1" }, title);
  main.replaceChildren(heading, ...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  document.title = `${title} - mes-bridge console`;
  return heading;
}

/* A modal dialog (native <dialog>: focus stays inside, Escape closes). Resolves with the
   button's value, or "" when dismissed. */
function dialog(title, body, actions) {
  return new Promise((resolve) => {
    const box = h("dialog", { "aria-labelledby": "dialog-title", class: "dialog" });
    const buttons = actions.map((a) =>
      h("button", { type: "button", class: a.primary ? "primary" : "", disabled: a.disabled, onclick: () => { box.close(a.value); } }, a.label),
    );
    box.append(h("h2", { id: "dialog-title" }, title), ...body.filter(Boolean), h("div", { class: "actions" }, buttons));
    box.addEventListener("close", () => {
      box.remove();
      resolve(box.returnValue || "");
    });
    document.body.append(box);
    box.showModal();
    box.buttons = buttons;
  });
}

/* --- overview ---------------------------------------------------------------------------------- */

function chart(series) {
  const width = 720, height = 220, pad = { left: 48, right: 56, top: 16, bottom: 34 };
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const most = Math.max(1, ...series.map((b) => b.forwarded));
  const slowest = Math.max(1, ...series.map((b) => b.p95_ms || 0));
  const barW = plotW / series.length;
  const svg = h("svg", {
    svg: true, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": "Messages forwarded per 5 minutes and F&O latency p95 over the last hour",
  });
  svg.append(h("line", { svg: true, x1: pad.left, y1: pad.top + plotH, x2: pad.left + plotW, y2: pad.top + plotH, class: "axis" }));
  series.forEach((b, i) => {
    const barH = (b.forwarded / most) * plotH;
    const x = pad.left + i * barW + 2;
    const rect = h("rect", { svg: true, x, y: pad.top + plotH - barH, width: Math.max(1, barW - 4), height: barH, class: "bar" });
    rect.append(h("title", { svg: true }, `${time(b.start)}: ${b.forwarded} forwarded, p95 ${b.p95_ms ?? "-"} ms`));
    svg.append(rect);
    if (i % 3 === 0) {
      svg.append(h("text", { svg: true, x, y: height - 12, class: "tick" }, new Date(b.start).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })));
    }
  });
  const points = series
    .map((b, i) => (b.p95_ms === null ? null : `${pad.left + i * barW + barW / 2},${pad.top + plotH - (b.p95_ms / slowest) * plotH}`))
    .filter(Boolean);
  if (points.length > 1) svg.append(h("polyline", { svg: true, points: points.join(" "), class: "latency" }));
  points.forEach((p) => {
    const [cx, cy] = p.split(",");
    svg.append(h("circle", { svg: true, cx, cy, r: 3, class: "latency-dot" }));
  });
  svg.append(h("text", { svg: true, x: 4, y: pad.top + 10, class: "tick" }, `${most}`));
  svg.append(h("text", { svg: true, x: width - pad.right + 6, y: pad.top + 10, class: "tick latency-label" }, `${Math.round(slowest)} ms`));
  return h(
    "figure", { class: "card wide" },
    h("figcaption", {}, "Last hour: forwarded per 5 minutes (bars) and F&O latency p95 (line)"),
    svg,
    h("details", {}, h("summary", {}, "The same as a table"),
      table("Throughput and F&O latency per 5 minutes", ["from", "forwarded", "p50 ms", "p95 ms"],
        series.map((b) => h("tr", {}, h("td", {}, time(b.start)), h("td", {}, b.forwarded), h("td", {}, b.p50_ms ?? "-"), h("td", {}, b.p95_ms ?? "-"))))),
  );
}

async function overviewPage() {
  const view = currentView;
  const heading = view.page("Overview", h("p", {}, "Loading…"));
  const [answer, health] = await Promise.all([api("overview"), api("health")]);
  if (!answer.ok) return view.page("Overview", h("p", { class: "bad" }, answer.data.error));
  const v = answer.data;
  const checks = (health.data && health.data.checks) || [];
  const healthCard = h(
    "section", { class: "card", "aria-labelledby": "h-health" },
    h("h2", { id: "h-health" }, "Health"),
    h("ul", { class: "checks" },
      checks.map((c) => h("li", { class: c.ok ? "ok" : "bad" }, h("strong", {}, `${c.ok ? "✓" : "✗"} ${c.name.replace("_", " ")}`), " ", h("span", {}, c.detail)))),
  );
  const stuck = v.oldest_stuck;
  const totals = v.flows.reduce((t, f) => {
    for (const k of ["parked", "in_doubt", "in_doubt_decisions", "waiting", "dead_lettered", "forwarded", "processed"]) t[k] = (t[k] || 0) + f[k];
    return t;
  }, {});
  const facts = h(
    "section", { class: "card", "aria-labelledby": "h-now" },
    h("h2", { id: "h-now" }, "Now"),
    h("dl", { class: "facts" },
      h("dt", {}, "Oldest stuck"), h("dd", {}, stuck ? [messageLink(stuck.company, stuck.message_id), ` ${stuck.state} ${stuck.reason || ""}, ${age(stuck.age_s)} old`] : "nothing stuck"),
      h("dt", {}, "Parked / in doubt"), h("dd", {}, h("a", { href: "#/parked" }, `${totals.parked} parked, ${totals.in_doubt} in doubt` + (totals.in_doubt_decisions < totals.in_doubt ? ` (${totals.in_doubt_decisions} F&O message${totals.in_doubt_decisions === 1 ? "" : "s"} to decide)` : ""))),
      h("dt", {}, "Dead-lettered"), h("dd", {}, h("a", { href: "#/parked" }, `${v.dead_lettered}`)),
      h("dt", {}, "Waiting"), h("dd", {}, `${totals.waiting}`),
      h("dt", {}, "F&O latency (1 h)"), h("dd", {}, v.latency_ms.count ? `p50 ${v.latency_ms.p50} ms, p95 ${v.latency_ms.p95} ms (${v.latency_ms.count} calls)` : "no calls"),
      h("dt", {}, "F&O 429s (1 h)"), h("dd", {}, `${v.throttled.waits_in_ledger} waits recorded; ${v.throttled.answered_429_here} answered to this instance since it started`),
    ),
  );
  const rows = v.flows.map((f) =>
    h("tr", {},
      h("th", { scope: "row" }, f.flow),
      h("td", {}, f.forwarded + f.processed), h("td", {}, f.failed), h("td", {}, f.waiting + f.forwarding),
      h("td", {}, f.parked ? h("a", { href: `#/parked?flow=${f.flow}` }, f.parked) : "0",
        Object.keys(f.parked_by_reason).length ? h("small", {}, " (" + Object.entries(f.parked_by_reason).map(([r, n]) => `${r} ${n}`).join(", ") + ")") : null),
      h("td", {}, f.in_doubt ? [h("a", { href: `#/parked?flow=${f.flow}&reason=in_doubt` }, f.in_doubt),
        f.in_doubt_decisions < f.in_doubt ? h("small", {}, ` (${f.in_doubt_decisions} F&O message${f.in_doubt_decisions === 1 ? "" : "s"})`) : null] : "0"),
      h("td", {}, f.dead_lettered), h("td", {}, f.duplicate), h("td", {}, f.cancelled),
    ),
  );
  view.page(
    "Overview",
    h("p", { class: "lead" }, `As of ${time(v.at)}. Counts of settled messages cover the last hour; stuck ones are counted whatever their age.`,
      " ", h("button", { type: "button", onclick: () => route() }, "Refresh")),
    h("div", { class: "grid" }, facts, healthCard),
    table("Messages per flow", ["flow", "forwarded (1 h)", "failed in F&O (1 h)", "waiting", "parked", "in doubt", "dead-lettered", "duplicates (1 h)", "cancelled (1 h)"], rows, { class: "flows" }),
    chart(v.series),
  );
  heading.focus();
}

/* --- parked and dead-lettered ------------------------------------------------------------------- */

const REASONS = ["rejected", "in_doubt", "invalid_message", "invalid_json", "gap", "no_start", "retries_exhausted", "wrong_queue", "unknown_company", "unknown_type", "too_large", "empty", "fo_failed"];

function filterFrom(query) {
  return {
    flow: query.get("flow") || "", reason: query.get("reason") || "", order: query.get("order") || "",
    company: query.get("company") || "", older_than_min: query.get("older_than_min") || "", max_attempts: query.get("max_attempts") || "",
  };
}

function apiFilter(f) {
  const out = {};
  for (const k of ["flow", "reason", "order", "company", "max_attempts"]) if (f[k]) out[k] = f[k];
  if (f.older_than_min) out.older_than_s = String(Number(f.older_than_min) * 60);
  return out;
}

async function bulkAction(action, selection, extra) {
  let includeInDoubt = false;
  for (;;) {
    const dry = await api(action, { body: { ...selection, ...extra, include_in_doubt: includeInDoubt, dry_run: true } });
    if (!dry.ok) {
      say(dry.data.error, "bad");
      return;
    }
    const d = dry.data;
    const toggle = h("input", { type: "checkbox", id: "include-in-doubt", checked: includeInDoubt });
    const hasDoubt = d.left_out.some((x) => x.why.startsWith("in doubt")) || includeInDoubt;
    const body = [
      h("p", { class: "lead", id: "dry-run-summary" }, `Dry run: ${d.summary}.`),
      d.messages.length ? h("ul", { class: "short-list" }, d.messages.slice(0, 30).map((m) => h("li", {}, `${m.message_id} (${m.flow}, ${m.reason})`)), d.messages.length > 30 ? h("li", {}, `… and ${d.messages.length - 30} more`) : null) : null,
      d.left_out.length ? h("p", {}, "Left out: ", d.left_out.slice(0, 10).map((x) => `${x.message_id}: ${x.why}`).join("; ")) : null,
      hasDoubt ? h("p", { class: "warn-box" }, toggle, " ", h("label", { for: "include-in-doubt" }, "Include in-doubt messages: F&O may already have applied them; check Message processor messages first, or confirm them instead")) : null,
    ];
    let flipped = false;
    toggle.addEventListener("change", () => {
      flipped = true;
      toggle.closest("dialog").close("again");
    });
    const verb = action === "resubmit" ? "Resubmit" : "Cancel";
    const choice = await dialog(`${verb}: what will happen`, body, [
      { label: "Back", value: "" },
      { label: `${verb} ${d.count} message(s)`, value: "go", primary: true, disabled: d.count === 0 },
    ]);
    if (choice === "again" && flipped) {
      includeInDoubt = !includeInDoubt;
      continue;
    }
    if (choice !== "go") return say("Nothing was changed.");
    const done = await api(action, { body: { ...selection, ...extra, include_in_doubt: includeInDoubt, expect: d.count } });
    if (!done.ok) return say(done.data.error, "bad");
    say(`${done.data.summary}.` + (done.data.failed.length ? ` ${done.data.failed.length} failed: ${done.data.failed.map((x) => x.error).join("; ")}` : ""), done.data.failed.length ? "bad" : "ok");
    return route();
  }
}

/* An in-doubt message that travelled in one F&O message with others is decided with them: F&O holds
   the merged message or not. The members named here are those the server acts on with it (the ones
   still in doubt under that F&O message); `members` is their rows when the caller has them. */
function mergedInDoubt(m) {
  return m.reason === "in_doubt" && m.fo_message && !m.fo_message.earlier && m.fo_message.members.length > 1;
}

function actedOn(data) {
  const ids = (data.acted_on || []).map((a) => a.message_id);
  const left = (data.left_alone || []).map((x) => `${x.message_id} (${x.why})`);
  return `${ids.join(", ")} confirmed: ${data.state}.` + (left.length ? ` Left alone: ${left.join("; ")}.` : "");
}

async function confirmInFo(row, members) {
  const note = h("textarea", { id: "confirm-note", rows: 3, required: true });
  const merged = mergedInDoubt(row);
  // From the parked list the members still in doubt are known; from a message page the server finds them.
  const ids = merged && members ? members.map((r) => r.message_id) : [row.message_id];
  const title = merged ? `Confirm F&O message ${row.fo_message.head} is in F&O` : `Confirm ${row.message_id} is in F&O`;
  const what = merged
    ? h("p", {}, `One F&O message carried ${row.fo_message.members.length} MES messages (${row.fo_message.lines} lines): ${row.fo_message.members.join(", ")}. Only when F&O's Message processor messages shows it as processed: the bridge then records every one of them still in doubt as forwarded, moves the order past the last and writes each one's genealogy.`)
    : h("p", {}, "Only when F&O's Message processor messages shows this message as processed: the bridge then records it as forwarded, moves the order past it and writes its genealogy.");
  const choice = await dialog(title, [what, field("Where F&O shows it (required)", note)], [
    { label: "Back", value: "" },
    { label: !merged ? "Confirm applied in F&O" : members ? `Confirm ${ids.length} message(s) applied in F&O` : "Confirm the F&O message applied in F&O", value: "go", primary: true },
  ]);
  if (choice !== "go") return false;
  const result = await api("confirm", { params: { company: row.company, id: row.message_id }, body: { note: note.value } });
  if (!result.ok) {
    say(result.data.error, "bad");
    return false;
  }
  say(actedOn(result.data), "ok");
  return true;
}

/* The parked list, with the in-doubt members of one merged F&O message gathered on one line. */
function parkedLines(rows) {
  const lines = [];
  const merged = new Map();
  for (const r of rows) {
    if (!mergedInDoubt(r)) {
      lines.push({ rows: [r] });
      continue;
    }
    const key = [r.company, r.fo_message.head, r.fo_message.content_hash].join("\u0000");
    if (!merged.has(key)) {
      const line = { rows: [], fo: r.fo_message };
      merged.set(key, line);
      lines.push(line);
    }
    merged.get(key).rows.push(r);
  }
  for (const line of lines) line.rows.sort((a, b) => (a.sequence ?? Infinity) - (b.sequence ?? Infinity));
  return lines;
}

async function parkedPage(query) {
  const view = currentView;
  const f = filterFrom(query);
  view.page("Parked & dead-lettered", h("p", {}, "Loading…"));
  const params = apiFilter(f);
  const [parked, dead] = await Promise.all([api("parked", { params }), api("dead-lettered", { params: { flow: f.flow } })]);
  if (!parked.ok) return view.page("Parked & dead-lettered", h("p", { class: "bad" }, parked.data.error));
  const flow = h("select", { name: "flow" }, h("option", { value: "" }, "any flow"), me.flows.map((x) => h("option", { value: x, selected: x === f.flow }, x)));
  const reason = h("select", { name: "reason" }, h("option", { value: "" }, "any reason"), REASONS.map((x) => h("option", { value: x, selected: x === f.reason }, x)));
  const order = h("input", { name: "order", value: f.order, autocomplete: "off", placeholder: "P000123" });
  const company = h("input", { name: "company", value: f.company, autocomplete: "off", size: 6 });
  const older = h("input", { name: "older_than_min", type: "number", min: 0, value: f.older_than_min, inputmode: "numeric" });
  const attempts = h("input", { name: "max_attempts", type: "number", min: 0, value: f.max_attempts, inputmode: "numeric" });
  const form = h(
    "form", { class: "filters", role: "search", "aria-label": "Filter parked messages" },
    field("Flow", flow), field("Reason", reason), field("Order", order), field("Company", company),
    field("Older than (min)", older), field("At most attempts", attempts),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Filter"), h("button", { type: "reset" }, "Clear")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.value) q.set(el.name, el.value);
    location.hash = "#/parked" + (q.toString() ? "?" + q : "");
  });
  form.addEventListener("reset", () => setTimeout(() => { location.hash = "#/parked"; }));
  const rows = parked.data;
  const lines = parkedLines(rows);
  const boxes = [];
  const selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select every message listed" });
  // A line is one message, or one F&O message with its members: selecting it selects every member.
  const selected = () => boxes.filter((b) => b.checked).flatMap((b) => lines[Number(b.value)].rows);
  const count = h("span", { class: "count", "aria-live": "polite" }, "0 selected");
  const update = () => { count.textContent = `${selected().length} selected`; };
  selectAll.addEventListener("change", () => { boxes.forEach((b) => { b.checked = selectAll.checked; }); update(); });
  const body = lines.map((line, i) => {
    const r = line.rows[0];
    const fo = line.fo;
    const label = fo ? `Select F&O message ${fo.head} (${line.rows.length} messages)` : `Select ${r.message_id}`;
    const box = h("input", { type: "checkbox", value: i, "aria-label": label, onchange: update });
    boxes.push(box);
    const message = fo
      ? [
        h("div", {}, h("strong", {}, "One F&O message"), h("small", {}, ` · ${fo.lines} lines · ${fo.members.length} MES messages`)),
        h("ul", { class: "members", "aria-label": `MES messages in F&O message ${fo.head}` }, line.rows.map((m) =>
          h("li", {}, messageLink(m.company, m.message_id), m.sequence !== null ? h("small", {}, ` #${m.sequence}`) : null))),
        line.rows.length < fo.members.length ? h("small", {}, `${fo.members.length - line.rows.length} other member(s) no longer in doubt`) : null,
      ]
      : messageLink(r.company, r.message_id);
    const sequences = line.rows.map((m) => m.sequence).filter((n) => n !== null);
    const numbers = sequences.length ? ` #${sequences.join(", #")}` : "";
    return h("tr", { class: r.reason === "in_doubt" ? "in-doubt" : "" },
      h("td", {}, box),
      h("td", {}, message),
      h("td", {}, r.flow), h("td", {}, h("span", { class: "badge " + (r.reason === "in_doubt" ? "warn" : "bad") }, r.reason)),
      h("td", {}, orderLink(r.company, r.production_order), numbers ? h("small", {}, numbers) : null),
      h("td", {}, Math.max(...line.rows.map((m) => m.attempts))), h("td", {}, age(since(r.received_at))),
      h("td", { class: "detail" }, (r.detail || "").slice(0, 160)),
      h("td", {}, r.reason === "in_doubt" ? h("button", { type: "button", onclick: async () => { if (await confirmInFo(r, line.rows)) route(); } }, "Confirm in F&O…") : null),
    );
  });
  const ids = () => selected().map((r) => ({ company: r.company, message_id: r.message_id }));
  const needSome = (fn) => () => (selected().length ? fn() : say("Select at least one message first.", "bad"));
  const cancelReason = h("input", { id: "cancel-reason", autocomplete: "off", placeholder: "why it must never reach F&O" });
  const hasFilter = Object.keys(params).length > 0;
  const toolbar = h(
    "div", { class: "toolbar", role: "group", "aria-label": "Actions on parked messages" },
    count,
    h("button", { type: "button", class: "primary", onclick: needSome(() => bulkAction("resubmit", { ids: ids() })) }, "Resubmit selected…"),
    field("Cancel reason", cancelReason),
    h("button", { type: "button", onclick: needSome(() => (cancelReason.value.trim() ? bulkAction("cancel", { ids: ids() }, { cancel_reason: cancelReason.value }) : say("Say why they are cancelled first.", "bad"))) }, "Cancel selected…"),
    h("button", { type: "button", disabled: !hasFilter, title: hasFilter ? "" : "Set a filter first", onclick: () => bulkAction("resubmit", { filter: params }) }, "Resubmit all matching the filter…"),
  );
  const deadRows = (dead.ok ? dead.data : []).map((m) =>
    h("tr", {},
      h("td", {}, m.flow), h("td", {}, m.message_id), h("td", {}, m.reason), h("td", { class: "detail" }, m.description),
      h("td", {}, m.delivery_count), h("td", { class: "detail" }, h("code", {}, m.body.slice(0, 120))),
      h("td", {}, h("button", {
        type: "button",
        onclick: async () => {
          const choice = await dialog("Put back on its queue?", [h("p", {}, `${m.message_id} goes through the pipeline (and its ledger) again, on ${m.queue}.`)], [{ label: "Back", value: "" }, { label: "Put back on the queue", value: "go", primary: true }]);
          if (choice !== "go") return;
          const done = await api("dead-lettered/resubmit", { params: { flow: m.flow, sequence: m.sequence_number }, body: {} });
          say(done.ok ? `${m.message_id} is back on ${m.queue}.` : done.data.error, done.ok ? "ok" : "bad");
          route();
        },
      }, "Put back…")),
    ),
  );
  const heading = view.page(
    "Parked & dead-lettered",
    form,
    h("h2", {}, `Parked (${rows.length})`),
    toolbar,
    table(`Parked messages${hasFilter ? " matching the filter" : ""}`, [selectAll, "message", "flow", "reason", "order", "attempts", "age", "detail", ""], body, { class: "parked" }),
    h("h2", {}, `Dead-lettered (${deadRows.length})`),
    table("Messages the broker gave up on", ["flow", "message", "reason", "description", "deliveries", "body", ""], deadRows),
  );
  heading.focus();
}

/* --- message ------------------------------------------------------------------------------------- */

const schemas = {};
async function schemaOf(flow) {
  if (!(flow in schemas)) {
    const response = await fetch(`/api/console/schemas/${encodeURIComponent(flow)}.schema.json`);
    schemas[flow] = response.ok ? await response.json() : null;
  }
  return schemas[flow];
}

function identityProblems(original, edited) {
  const problems = [];
  for (const [key, label] of [["message_id", "message id"], ["company", "company"], ["production_order", "production order"]]) {
    const before = original && typeof original === "object" ? original[key] : undefined;
    const after = edited[key];
    const same = key === "company" && typeof before === "string" && typeof after === "string" ? before.toUpperCase() === after.toUpperCase() : (before ?? null) === (after ?? null);
    if (!same) problems.push(`${label}: may not change (was ${JSON.stringify(before ?? null)})`);
  }
  return problems;
}

async function editor(m) {
  const schema = await schemaOf(m.flow);
  const text = h("textarea", { id: "payload-editor", rows: 18, spellcheck: "false", class: "code" }, JSON.stringify(m.payload_json ?? m.payload, null, 2));
  const problems = h("ul", { id: "payload-problems", class: "problems", "aria-live": "polite" });
  const send = h("button", { type: "button", class: "primary", id: "send-edited" }, "Resubmit edited message");
  const check = () => {
    let value;
    let found = [];
    try {
      value = JSON.parse(text.value);
    } catch (e) {
      found = [`not JSON: ${e.message}`];
    }
    if (value !== undefined) {
      if (typeof value !== "object" || value === null || Array.isArray(value)) found.push("must be a JSON object");
      else {
        found.push(...identityProblems(m.payload_json, value));
        if (schema) found.push(...window.validateAgainstSchema(schema, value));
        else found.push(`no MES schema for flow ${m.flow}: cannot check it here`);
      }
    }
    problems.replaceChildren(...(found.length ? found.map((p) => h("li", {}, p)) : [h("li", { class: "ok" }, "Valid against the MES schema.")]));
    send.disabled = found.length > 0;
    text.setAttribute("aria-invalid", found.length > 0 ? "true" : "false");
    return found.length === 0;
  };
  text.addEventListener("input", check);
  send.addEventListener("click", async () => {
    if (!check()) return;
    const done = await api("resubmit", { params: { company: m.company, id: m.message_id }, body: text.value });
    if (!done.ok) return say(done.data.error, "bad");
    say(`Resubmitted ${m.message_id} with the edit; following it…`, "ok");
    follow(m);
  });
  const identity = h("dl", { class: "facts" },
    h("dt", {}, "message id"), h("dd", {}, m.message_id),
    h("dt", {}, "company"), h("dd", {}, m.company),
    h("dt", {}, "production order"), h("dd", {}, m.production_order || "none"));
  const box = h("section", { class: "card wide", "aria-labelledby": "h-edit" },
    h("h2", { id: "h-edit" }, "Edit and resubmit"),
    h("p", {}, "The message id, company and order say which message this is and cannot be edited; the original payload stays in the ledger."),
    identity,
    field(`Payload (checked against the ${m.flow} MES schema as you type, schemas/mes/${m.flow}.schema.json)`, text),
    problems, h("div", { class: "actions" }, send));
  check();
  return box;
}

async function follow(m) {
  for (let i = 0; i < 60; i += 1) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await api("message-detail", { params: { company: m.company, id: m.message_id } });
    if (now.ok && (now.data.state !== "Parked" || now.data.history.length > m.history.length + 1)) break;
  }
  route();
}

async function messagePage(company, id) {
  const view = currentView;
  view.page(`Message ${id}`, h("p", {}, "Loading…"));
  const found = await api("message-detail", { params: { company, id } });
  if (!found.ok) return view.page(`Message ${id}`, h("p", { class: "bad" }, found.data.error));
  const m = found.data;
  const actions = [];
  if (m.state === "Parked") {
    actions.push(h("button", {
      type: "button",
      onclick: async () => {
        const warn = m.reason === "in_doubt" ? [h("p", { class: "warn-box" }, "This message is in doubt: F&O may have applied it already. Check Message processor messages first; if F&O has it, confirm it instead.")] : [];
        const merged = mergedInDoubt(m);
        const what = merged
          ? h("p", {}, `It travelled in one F&O message with ${m.fo_message.siblings.join(", ")}: F&O has or lacks that message whole, so every one of them still in doubt is resubmitted with it, in MES sequence, each with its original payload.`)
          : h("p", {}, "It goes through the pipeline again with its original payload.");
        const buttons = merged
          ? [{ label: "Back", value: "" }, { label: "This message only", value: "alone" }, { label: `Resubmit the F&O message (${m.fo_message.members.length})`, value: "go", primary: true }]
          : [{ label: "Back", value: "" }, { label: "Resubmit", value: "go", primary: true }];
        const choice = await dialog(`Resubmit ${m.message_id} as it is?`, [...warn, what], buttons);
        if (choice !== "go" && choice !== "alone") return;
        const done = await api("resubmit", { params: { company: m.company, id: m.message_id, alone: choice === "alone" ? "true" : "" }, body: "" });
        if (!done.ok) return say(done.data.error, "bad");
        const ids = (done.data.acted_on || []).map((a) => a.message_id);
        say(`Resubmitted ${ids.length > 1 ? ids.join(", ") : m.message_id}; following ${m.message_id}…`, "ok");
        follow(m);
      },
    }, "Resubmit as is…"));
    if (m.reason === "in_doubt") actions.push(h("button", { type: "button", class: "primary", onclick: async () => { if (await confirmInFo(m)) route(); } }, "Confirm in F&O…"));
  }
  if (m.state === "Parked" || m.state === "Waiting") {
    actions.push(h("button", {
      type: "button",
      onclick: async () => {
        const why = h("input", { id: "cancel-why", required: true });
        const choice = await dialog(`Cancel ${m.message_id}?`, [h("p", {}, "It will never reach F&O."), field("Why (required)", why)], [{ label: "Back", value: "" }, { label: "Cancel the message", value: "go", primary: true }]);
        if (choice !== "go") return;
        const done = await api("cancel", { params: { company: m.company, id: m.message_id }, body: { reason: why.value } });
        say(done.ok ? `${m.message_id} cancelled.` : done.data.error, done.ok ? "ok" : "bad");
        route();
      },
    }, "Cancel…"));
  }
  const timeline = h("ol", { class: "timeline" }, m.history.map((step) =>
    h("li", {}, h("time", { datetime: step.at }, time(step.at)), " ", badge(step.state), step.reason ? h("strong", {}, ` ${step.reason}`) : "", step.attempt ? h("small", {}, ` attempt ${step.attempt}`) : "", step.detail ? h("div", { class: "detail" }, step.detail) : "")));
  const fo = m.fo;
  const heading = view.page(
    `Message ${m.message_id}`,
    h("p", { class: "lead" }, badge(m.state), m.reason ? h("strong", {}, ` ${m.reason}`) : "", ` · ${m.flow} · company ${m.company}`, m.production_order ? [" · order ", orderLink(m.company, m.production_order)] : "", m.sequence !== null ? ` #${m.sequence}` : "", ` · ${m.attempts} attempt(s)`),
    m.detail ? h("p", { class: m.state === "Parked" ? "bad-box" : "" }, m.detail) : null,
    actions.length ? h("div", { class: "toolbar", role: "group", "aria-label": "Actions on this message" }, actions) : null,
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "h-timeline" }, h("h2", { id: "h-timeline" }, "Timeline"), timeline),
      h("section", { class: "card", "aria-labelledby": "h-fo" }, h("h2", { id: "h-fo" }, "F&O"),
        h("dl", { class: "facts" },
          h("dt", {}, "call"), h("dd", {}, fo.message_type || "not called yet"),
          h("dt", {}, "reference"), h("dd", {}, fo.reference || "-"),
          h("dt", {}, "F&O message"), h("dd", {}, foMessage(m)),
          h("dt", {}, "latency"), h("dd", {}, fo.latency_ms !== null && fo.latency_ms !== undefined ? `${fo.latency_ms} ms` : "-"),
          h("dt", {}, "correlation id"), h("dd", {}, m.correlation_id || "-"),
          h("dt", {}, "received"), h("dd", {}, time(m.received_at)),
          h("dt", {}, "resubmissions"), h("dd", {}, `${m.resubmissions}${m.edited_by ? `, edited by ${m.edited_by}` : ""}`),
          fo.message_page ? [h("dt", {}, "message processor"), h("dd", {}, h("a", { href: fo.message_page, rel: "noopener noreferrer" }, "open in F&O"))] : null),
        h("h3", {}, "Request (what the bridge sends F&O for this payload)"),
        fo.request ? pretty(fo.request) : h("p", {}, "None: the payload is not a message the bridge can read."),
        fo.infolog ? [h("h3", {}, "Infolog (F&O's answer)"), pretty(fo.infolog)] : h("p", {}, "No infolog from F&O."),
        h("h3", {}, "MES outcome"),
        m.mes_outcome ? h("p", {}, `Told the MES: ${m.mes_outcome.outcome}` + (m.mes_outcome.infolog ? ` (${m.mes_outcome.infolog.slice(0, 200)})` : "")) : h("p", {}, m.state === "Forwarded" ? "Waiting for F&O's message processor." : "Nothing sent to the MES yet."),
      ),
    ),
    h("section", { class: "card wide", "aria-labelledby": "h-payload" }, h("h2", { id: "h-payload" }, "Payload as received"), pretty(m.payload_json ?? m.payload)),
    m.state === "Parked" ? await editor(m) : null,
  );
  heading.focus();
}

/* --- order ----------------------------------------------------------------------------------------- */

function lookupForm(fields, go) {
  const controls = fields.map(([name, label, value, extra]) => field(label, extra || h("input", { name, value: value || "", required: true, autocomplete: "off" })));
  const form = h("form", { class: "filters", role: "search" }, controls, h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Show")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(Object.fromEntries(Array.from(form.elements).filter((e) => e.name).map((e) => [e.name, e.value.trim()])));
  });
  return form;
}

async function orderPage(company, order) {
  const view = currentView;
  const form = lookupForm([["company", "Company", company || "USMF"], ["order", "Production order", order]], (v) => {
    location.hash = `#/order/${encodeURIComponent(v.company)}/${encodeURIComponent(v.order)}`;
  });
  if (!order) return view.page("Order", form).focus();
  view.page(`Order ${order}`, form, h("p", {}, "Loading…"));
  const found = await api("order-ladder", { params: { company, order } });
  if (!found.ok) return view.page(`Order ${order}`, form, h("p", { class: "bad" }, found.data.error));
  const o = found.data;
  const ladder = h("ol", { class: "ladder", "aria-label": "MES sequence" }, o.ladder.map((step) => {
    const row = step.row;
    return h("li", { class: "step " + (STATE_CLASS[step.status] || "quiet") },
      h("span", { class: "seq" }, `#${step.sequence}`), " ",
      badge(step.status), " ",
      row ? [messageLink(row.company, row.message_id, `${row.flow}`), row.reason ? h("small", {}, ` ${row.reason}`) : "", h("small", {}, ` ${row.message_id}`)] : h("span", {}, step.status === "missing" ? "not received from the MES" : "skipped by an operator"),
    );
  }));
  const release = o.gaps.length && o.gaps[0] === o.watermark + 1
    ? h("button", {
      type: "button", class: "primary",
      onclick: async () => {
        const why = h("input", { id: "gap-reason", required: true });
        const choice = await dialog(`Release gap #${o.gaps[0]}?`, [h("p", {}, `The order stops waiting for sequence ${o.gaps[0]}; what was parked waiting for it is resubmitted.`), field("Why will the MES never send it? (required)", why)], [{ label: "Back", value: "" }, { label: `Release #${o.gaps[0]}`, value: "go", primary: true }]);
        if (choice !== "go") return;
        const done = await api("release-gap", { params: { company, order, missing: o.gaps[0] }, body: { reason: why.value } });
        say(done.ok ? `Released #${o.gaps[0]}; resubmitted ${done.data.resubmitted.length} message(s).` : done.data.error, done.ok ? "ok" : "bad");
        route();
      },
    }, `Release gap #${o.gaps[0]}…`)
    : null;
  const heading = view.page(
    `Order ${order}`,
    form,
    h("p", { class: "lead" }, `Watermark #${o.watermark} (every message up to it reached F&O) · ${o.started ? "started" : "not started"}${o.ended ? ", ended" : ""}`,
      o.waiting_for ? ` · waiting for #${o.waiting_for}` : "", o.gaps.length ? h("strong", { class: "bad" }, ` · gap at #${o.gaps.join(", #")}`) : ""),
    release,
    h("section", { class: "card wide", "aria-labelledby": "h-ladder" }, h("h2", { id: "h-ladder" }, "Sequence across flows"), ladder),
    o.unsequenced.length ? table("Messages without a sequence number", ["message", "flow", "state", "received"], o.unsequenced.map((r) => h("tr", {}, h("td", {}, messageLink(r.company, r.message_id)), h("td", {}, r.flow), h("td", {}, badge(r.state)), h("td", {}, time(r.received_at))))) : null,
    o.skipped.length ? table("Released gaps", ["sequence", "by", "at", "reason"], o.skipped.map((s) => h("tr", {}, h("td", {}, `#${s.sequence}`), h("td", {}, s.by), h("td", {}, time(s.at)), h("td", {}, s.reason)))) : null,
  );
  heading.focus();
}

/* --- lineage --------------------------------------------------------------------------------------- */

function layout(root, follow) {
  // Columns alternate batch, order, batch, …; each node gets the next free row in its column.
  const nodes = [], edges = [], rows = [];
  function place(column, label, href, kind, parent, sub) {
    rows[column] = (rows[column] || 0) + 1;
    const node = { column, row: rows[column] - 1, label, href, kind, sub };
    nodes.push(node);
    if (parent) edges.push([parent, node]);
    return node;
  }
  function walk(batch, column, parent) {
    const node = place(column, `${batch.item} ${batch.batch}`, `#/lineage/${encodeURIComponent(root.company)}/${encodeURIComponent(batch.item)}/${encodeURIComponent(batch.batch)}?direction=${root.direction}`, "batch", parent, batch.quantity !== undefined ? `qty ${batch.quantity}` : "");
    for (const order of batch.orders || []) {
      const o = place(column + 1, order.order, `#/order/${encodeURIComponent(root.company)}/${encodeURIComponent(order.order)}`, "order", node, "");
      for (const child of order[follow] || []) walk(child, column + 2, o);
    }
  }
  walk(root.tree, 0, null);
  return { nodes, edges };
}

function graph(root) {
  const follow = root.direction === "upstream" ? "consumed" : "produced";
  const { nodes, edges } = layout(root, follow);
  const colW = 190, rowH = 56, nodeW = 168, nodeH = 40;
  const width = Math.max(1, ...nodes.map((n) => n.column + 1)) * colW + 20;
  const height = Math.max(1, ...nodes.map((n) => n.row + 1)) * rowH + 20;
  const svg = h("svg", { svg: true, viewBox: `0 0 ${width} ${height}`, width, height, class: "lineage", role: "group", "aria-label": `${root.direction} genealogy graph` });
  const at = (n) => ({ x: 10 + n.column * colW, y: 10 + n.row * rowH });
  for (const [a, b] of edges) {
    const p = at(a), q = at(b);
    svg.append(h("path", { svg: true, class: "edge", d: `M${p.x + nodeW},${p.y + nodeH / 2} C${p.x + nodeW + 14},${p.y + nodeH / 2} ${q.x - 14},${q.y + nodeH / 2} ${q.x},${q.y + nodeH / 2}` }));
  }
  for (const n of nodes) {
    const p = at(n);
    const link = h("a", { svg: true, href: n.href, class: "node " + n.kind, "aria-label": `${n.kind === "order" ? "production order" : "batch"} ${n.label}` });
    link.append(
      h("rect", { svg: true, x: p.x, y: p.y, width: nodeW, height: nodeH, rx: n.kind === "order" ? 2 : 12 }),
      h("text", { svg: true, x: p.x + 8, y: p.y + 17 }, n.label.length > 24 ? n.label.slice(0, 23) + "…" : n.label),
      h("text", { svg: true, x: p.x + 8, y: p.y + 32, class: "sub" }, n.kind === "order" ? "production order" : n.sub || "batch"),
    );
    svg.append(link);
  }
  return svg;
}

function lineageList(batch, follow, company, direction) {
  return h("ul", {}, h("li", {},
    h("a", { href: `#/lineage/${encodeURIComponent(company)}/${encodeURIComponent(batch.item)}/${encodeURIComponent(batch.batch)}?direction=${direction}` }, `${batch.item} ${batch.batch}`),
    batch.quantity !== undefined ? ` (${batch.quantity})` : "",
    (batch.orders || []).length ? h("ul", {}, batch.orders.map((o) => h("li", {}, "order ", orderLink(company, o.order), (o[follow] || []).map((c) => lineageList(c, follow, company, direction))))) : null));
}

async function lineagePage(company, item, batch, query) {
  const view = currentView;
  const direction = query.get("direction") || "upstream";
  const select = h("select", { name: "direction" }, ["upstream", "downstream"].map((d) => h("option", { value: d, selected: d === direction }, d === "upstream" ? "upstream (what went into it)" : "downstream (where it went)")));
  const form = lookupForm([["company", "Company", company || "USMF"], ["item", "Item", item], ["batch", "Batch", batch], ["direction", "Direction", direction, select]], (v) => {
    location.hash = `#/lineage/${encodeURIComponent(v.company)}/${encodeURIComponent(v.item)}/${encodeURIComponent(v.batch)}?direction=${v.direction}`;
  });
  if (!item || !batch) return view.page("Lineage", form).focus();
  view.page(`Lineage of ${item} ${batch}`, form, h("p", {}, "Loading…"));
  const found = await api("lineage", { params: { company, item, batch, direction, depth: 6 } });
  if (!found.ok) return view.page(`Lineage of ${item} ${batch}`, form, h("p", { class: "bad" }, found.data.error));
  const root = { company, direction, tree: found.data.root };
  const follow = direction === "upstream" ? "consumed" : "produced";
  const empty = !(root.tree.orders || []).length;
  const heading = view.page(
    `Lineage of ${item} ${batch}`,
    form,
    empty ? h("p", {}, `No ${direction} genealogy recorded for ${item} ${batch}.`) : h("div", { class: "card wide scroll" }, graph(root)),
    empty ? null : h("details", {}, h("summary", {}, "The same as a list"), lineageList(root.tree, follow, company, direction)),
  );
  heading.focus();
}

/* --- routing ----------------------------------------------------------------------------------------- */

/* A page renders only while it is still the one asked for: an answer that arrives after the
   operator moved on is dropped instead of replacing the newer page. */
let routeSeq = 0;
let currentView = { page };
function makeView() {
  const seq = ++routeSeq;
  return { page: (...args) => (seq === routeSeq ? page(...args) : h("h1")) };
}

async function route() {
  const [path, queryText] = (location.hash.replace(/^#\/?/, "") || "overview").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const query = new URLSearchParams(queryText || "");
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.page === parts[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  currentView = makeView();
  try {
    if (parts[0] === "parked") await parkedPage(query);
    else if (parts[0] === "message") await messagePage(parts[1], parts.slice(2).join("/"));
    else if (parts[0] === "order") await orderPage(parts[1], parts[2]);
    else if (parts[0] === "lineage") await lineagePage(parts[1], parts[2], parts[3], query);
    else await overviewPage();
  } catch (error) {
    page("Something went wrong", h("p", { class: "bad" }, String(error)));
  }
}

async function start() {
  const who = await api("me");
  if (!who.ok) {
    page("Sign-in needed", h("p", {}, who.data.error));
    return;
  }
  me = who.data;
  document.getElementById("who").textContent = `${me.name}${me.may_operate ? "" : ` (no ${me.role} role: read-only)`}`;
  if (!me.may_operate) {
    page("Not an operator", h("p", {}, `${me.name} is signed in but does not have the ${me.role} app role. Ask for it in Entra ID (Enterprise applications).`));
    return;
  }
  window.addEventListener("hashchange", () => { say(""); route(); });
  route();
}

document.addEventListener("DOMContentLoaded", start);
