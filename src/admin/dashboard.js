// The dashboard: polls /api/status every second, follows /api/events, keeps ten minutes of
// CPU and RSS per slot in memory and draws them as SVG lines. No library, nothing fetched
// from elsewhere: the page works offline.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const headers = token ? { Authorization: "Bearer " + token } : { "X-Herdsman-Action": "1" };
const WINDOW_MS = 10 * 60 * 1000;
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const history = new Map(); // slot -> [{t, cpu, rss}]
let slotsShown = "";

function get(path) {
  return fetch(path, { headers: token ? { Authorization: "Bearer " + token } : {} });
}

function duration(ms) {
  if (ms == null) return "";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
  return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function showWorkers(status) {
  document.getElementById("title").textContent = "herdsman: " + status.name;
  document.getElementById("summary").textContent =
    `${status.state} · ${status.address} · balance ${status.balance} · generation ${status.generation}` +
    ` · reloads ${status.reloads} · up ${duration(status.uptime_ms)}`;
  const body = document.getElementById("workers");
  body.replaceChildren();
  for (const slot of status.slots) {
    const row = document.createElement("tr");
    row.dataset.slot = slot.slot;
    row.dataset.pid = slot.pid == null ? "" : slot.pid;
    cell(row, slot.slot);
    cell(row, slot.pid).className = "pid";
    cell(row, slot.generation).className = "generation";
    cell(row, slot.state, slot.state.replace(" ", "-"));
    cell(row, duration(slot.uptime_ms));
    cell(row, slot.restarts);
    cell(row, slot.cpu_percent == null ? "" : slot.cpu_percent.toFixed(1));
    cell(row, slot.rss_bytes == null ? "" : (slot.rss_bytes / 1048576).toFixed(1) + " MB");
    cell(row, slot.connections == null ? "–" : slot.connections).className = "connections";
    const restart = document.createElement("button");
    restart.textContent = "Restart";
    restart.onclick = () => act("/api/restart?slot=" + slot.slot);
    row.appendChild(document.createElement("td")).appendChild(restart);
    body.appendChild(row);
  }
  const slots = [...new Set(status.slots.map((slot) => slot.slot))].join(",");
  if (slots !== slotsShown) {
    slotsShown = slots;
    const select = document.getElementById("log-slot");
    const chosen = select.value;
    select.replaceChildren();
    for (const slot of slots.split(",")) {
      const option = document.createElement("option");
      option.value = option.textContent = slot;
      select.appendChild(option);
    }
    if (chosen && slots.split(",").includes(chosen)) select.value = chosen;
  }
}

function record(status) {
  const now = Date.now();
  for (const slot of status.slots) {
    if (slot.pid == null) continue;
    if (!history.has(slot.slot)) history.set(slot.slot, []);
    history.get(slot.slot).push({ t: now, cpu: slot.cpu_percent || 0, rss: (slot.rss_bytes || 0) / 1048576 });
  }
  for (const [slot, samples] of history) {
    while (samples.length && samples[0].t < now - WINDOW_MS) samples.shift();
    if (!samples.length) history.delete(slot);
  }
}

function chart(id, field) {
  const svg = document.getElementById(id);
  const width = svg.width.baseVal.value, height = svg.height.baseVal.value;
  const now = Date.now();
  let top = 1;
  for (const samples of history.values()) for (const sample of samples) top = Math.max(top, sample[field]);
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4); label.setAttribute("y", 12); label.setAttribute("font-size", 10);
  label.textContent = "max " + top.toFixed(1);
  svg.appendChild(label);
  for (const [slot, samples] of history) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLOURS[(slot - 1) % COLOURS.length]);
    line.setAttribute("points", samples.map((sample) =>
      `${(width * (1 - (now - sample.t) / WINDOW_MS)).toFixed(1)},${(height - 2 - (height - 16) * sample[field] / top).toFixed(1)}`).join(" "));
    svg.appendChild(line);
  }
}

async function poll() {
  try {
    const response = await get("/api/status");
    if (response.ok) {
      const status = await response.json();
      showWorkers(status);
      record(status);
      chart("cpu-chart", "cpu");
      chart("rss-chart", "rss");
    }
  } catch (error) {
    document.getElementById("summary").textContent = "the primary does not answer: " + error;
  }
}

async function showLogs() {
  const slot = document.getElementById("log-slot").value;
  if (!slot) return;
  const response = await get("/api/logs?lines=50&slot=" + slot);
  if (!response.ok) return;
  const lines = await response.json();
  const logs = document.getElementById("logs");
  logs.textContent = lines.map((line) => `${line.time} ${line.pid} ${line.stream}: ${line.line}`).join("\n");
  logs.scrollTop = logs.scrollHeight;
}

async function act(path) {
  const message = document.getElementById("message");
  message.textContent = "…";
  const response = await fetch(path, { method: "POST", headers });
  const text = await response.text();
  try { message.textContent = JSON.parse(text).message; } catch { message.textContent = text; }
  poll();
}

// The restart/reload timeline, from the typed lifecycle events of /api/events.
function describe(kind, data) {
  switch (kind) {
    case "worker": {
      const who = `worker ${data.slot} (pid ${data.pid}, generation ${data.generation})`;
      if (data.change === "exited") return `${who} exited: ${data.description} (${data.reason})`;
      return `${who} ${data.change}`;
    }
    case "reload": {
      const what = data.slot === null ? "reload" : `restart of slot ${data.slot}`;
      return `${what} ${data.change} (generation ${data.generation})` +
        (data.change === "aborted" ? `: ${data.message}` : "");
    }
    case "scale": return `scaled from ${data.from} to ${data.to} workers`;
  }
  return kind;
}

function addToTimeline(kind, data) {
  const timeline = document.getElementById("timeline");
  const entry = document.createElement("div");
  entry.className = `event ${kind} ${data.change || ""}`;
  entry.textContent = `${data.time} ${describe(kind, data)}`;
  timeline.appendChild(entry);
  while (timeline.childElementCount > 500) timeline.firstElementChild.remove();
  timeline.scrollTop = timeline.scrollHeight;
}

function followEvents() {
  const source = new EventSource("/api/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  for (const kind of ["worker", "reload", "scale"]) {
    source.addEventListener(kind, (event) => {
      addToTimeline(kind, JSON.parse(event.data));
      poll();
    });
  }
}

document.getElementById("reload").onclick = () => act("/api/reload");
document.getElementById("scale").onclick = () =>
  act("/api/scale?to=" + encodeURIComponent(document.getElementById("scale-to").value));
document.getElementById("log-slot").onchange = showLogs;
poll().then(showLogs);
followEvents();
setInterval(poll, 1000);
setInterval(showLogs, 2000);
