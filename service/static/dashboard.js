// tidegate live dashboard: reads the operators' feed (GET /v1/live, server-sent events) with
// the staff token in the Authorization header (never in a URL), and one site's occupancy
// curve and gates from GET /v1/sites/{site}/occupancy.
"use strict";

const TOKEN_KEY = "tidegate.token";
const sitesEl = document.getElementById("sites");
const statusEl = document.getElementById("status");
const template = document.getElementById("site-card");
let selected = null;

function token() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function askForToken() {
  const form = document.getElementById("login");
  form.hidden = false;
  statusEl.textContent = "a staff token is needed";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
    form.hidden = true;
    watch();
  }, { once: true });
}

function card(site) {
  let el = document.getElementById(`site-${site.site}`);
  if (!el) {
    el = template.content.firstElementChild.cloneNode(true);
    el.id = `site-${site.site}`;
    el.querySelector(".name").addEventListener("click", () => select(site.site));
    sitesEl.append(el);
  }
  return el;
}

function render(sites) {
  for (const site of sites) {
    const el = card(site);
    el.dataset.level = site.level;
    el.querySelector(".name").textContent = site.name;
    el.querySelector(".level").textContent = site.level;
    el.querySelector(".action").textContent = site.action;
    const sendTo = el.querySelector(".send-to");
    const places = site.send_to || [];
    sendTo.hidden = places.length === 0;
    sendTo.textContent = places.length
      ? "Send visitors to: " + places.map((p) => `${p.name} (${p.distance_km} km, ${p.comfort})`).join(", ")
      : "";
    el.querySelector(".inside").textContent = site.inside;
    el.querySelector(".instant-cap").textContent = site.instant_cap;
    el.querySelector(".entered").textContent = site.entered_today;
    el.querySelector(".daily-cap").textContent = site.daily_cap;
    el.querySelector(".left").textContent = site.places_left_today;
    el.querySelector(".flow-in").textContent = site.entries_last_minute;
    el.querySelector(".flow-out").textContent = site.exits_last_minute;
    el.querySelector(".bar .fill").style.width = `${Math.min(site.load, 1) * 100}%`;
    el.querySelector(".bar.day .fill").style.width = `${Math.min(site.day_load, 1) * 100}%`;
  }
  if (!selected && sites.length) select(sites[0].site);
}

async function select(siteId) {
  selected = siteId;
  await detail();
}

async function detail() {
  if (!selected) return;
  const answer = await fetch(`/v1/sites/${selected}/occupancy`, {
    headers: { Authorization: `Bearer ${token()}` },
  });
  if (!answer.ok) return;
  const now = await answer.json();
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-name").textContent = `${selected}: ${now.inside} inside`;
  drawCurve(now.curve, now.forecast, now.instant_cap);
  const error = now.forecast_error;
  document.getElementById("forecast-error").textContent = error.points
    ? `forecast off by ${error.mean_abs} people on average (${(error.mean_abs_share * 100).toFixed(1)}% of the cap) over ${error.points} quarter hours`
    : "";
  document.getElementById("suggested-gate").textContent = now.suggested_gate
    ? `Send arriving visitors to ${now.suggested_gate.name}`
    : "";
  const rows = now.gates.map((g) =>
    `<tr><td>${g.gate}</td><td>${g.entries_today}</td><td>${g.exits_today}</td>` +
    `<td>${g.entries_last_minute}</td><td>${g.exits_last_minute}</td></tr>`);
  document.querySelector("#gates tbody").innerHTML = rows.join("");
}

// The counted curve (so far) and the forecast (the whole day) on one time axis.
function drawCurve(points, forecast, cap) {
  const svg = document.getElementById("curve");
  const all = points.concat(forecast);
  const times = all.map((p) => Date.parse(p.at));
  const first = Math.min(...times), last = Math.max(...times);
  const top = Math.max(cap, ...all.map((p) => p.inside), 1);
  const width = 600, height = 200;
  const x = (p) => (last > first ? ((Date.parse(p.at) - first) / (last - first)) * width : 0);
  const y = (p) => height - (p.inside / top) * height;
  const line = (series) => series.map((p) => `${x(p).toFixed(1)},${y(p).toFixed(1)}`).join(" ");
  const capY = (height - (cap / top) * height).toFixed(1);
  svg.innerHTML = `<line class="cap" x1="0" x2="${width}" y1="${capY}" y2="${capY}"></line>` +
    `<polyline class="forecast" points="${line(forecast)}"></polyline>` +
    `<polyline class="measured" points="${line(points)}"></polyline>`;
}

// Server-sent events over fetch, so that the token travels in a header.
async function watch() {
  if (!token()) return askForToken();
  statusEl.textContent = "connecting…";
  try {
    const answer = await fetch("/v1/live", { headers: { Authorization: `Bearer ${token()}` } });
    if (answer.status === 401 || answer.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      return askForToken();
    }
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (data) {
          render(JSON.parse(data));
          statusEl.textContent = `updated ${new Date().toLocaleTimeString()}`;
          detail();
        }
      }
    }
  } catch (error) {
    statusEl.textContent = "connection lost, retrying…";
  }
  setTimeout(watch, 2000);
}

watch();
