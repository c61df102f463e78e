// gr-rfdetect web pages: shared helpers (no external libraries: works air-gapped)
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const fmt = (v, d = 3) => (v === null || v === undefined || v === "") ? "-" : (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(d)) : esc(v));

async function api(path, opts = {}) {
  const o = {...opts};
  if (o.json !== undefined) { o.body = JSON.stringify(o.json); o.headers = {"Content-Type": "application/json"}; o.method = o.method || "POST"; }
  const r = await fetch(path, o);
  const ct = r.headers.get("content-type") || "";
  const body = ct.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((body && body.detail) ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : String(body));
  return body;
}

function nav(active) {
  const links = [["/training", "Training"], ["/live", "Live view"], ["/recordings", "Recordings and models"], ["/docs", "API"]];
  const n = document.createElement("nav");
  n.innerHTML = `<span class="brand">gr-rfdetect</span>` + links.map(([h, t]) => `<a href="${h}" class="${h === active ? "on" : ""}">${t}</a>`).join("");
  document.body.prepend(n);
}

// A line chart on a canvas: series = [{name, color, points: [[x, y], ...]}]
function lineChart(canvas, series, opts = {}) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 48, R = 10, T = 18, B = 26;
  ctx.clearRect(0, 0, W, H);
  const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
  ctx.font = "11px sans-serif"; ctx.fillStyle = "#6b7488";
  if (!pts.length) { ctx.fillText(opts.empty || "waiting for the first epoch...", L, H / 2); return; }
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = opts.ymin ?? Math.min(...pts.map((p) => p[1])), y1 = opts.ymax ?? Math.max(...pts.map((p) => p[1]));
  if (x1 === x0) x1 = x0 + 1; if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), Y = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  ctx.strokeStyle = "#dde1e8"; ctx.beginPath();
  for (let i = 0; i <= 4; i++) { const y = y0 + (y1 - y0) * i / 4; ctx.moveTo(L, Y(y)); ctx.lineTo(W - R, Y(y)); ctx.fillText(y.toPrecision(3), 2, Y(y) + 4); }
  ctx.stroke();
  ctx.fillText(opts.xlabel || "epoch", W / 2, H - 6); ctx.fillText(String(x0), L, H - 12); ctx.fillText(String(x1), W - R - 20, H - 12);
  let lx = L + 6;
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = 2; ctx.beginPath();
    s.points.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
    ctx.stroke();
    s.points.forEach((p) => ctx.fillRect(X(p[0]) - 2, Y(p[1]) - 2, 4, 4));
    ctx.fillText(s.name, lx, 12); lx += ctx.measureText(s.name).width + 16;
  }
  ctx.lineWidth = 1;
  canvas.dataset.points = String(pts.length);
}

function stateCell(s) { return `<span class="state-${esc(s)}">${esc(s)}</span>`; }
