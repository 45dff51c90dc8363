// vertex-yolo console: plain JavaScript, no build step, nothing fetched from the internet.
// Every call goes to this console's own /api/...; an error is shown as the CLI's one line.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
  "#bcf60c", "#fabebe", "#008080", "#9a6324", "#800000", "#808000", "#000075"];
const colour = (id) => PALETTE[((id % PALETTE.length) + PALETTE.length) % PALETTE.length];
// The routes each task's model answers (client/console/work.py's ROUTES_OF_TASK).
const ROUTES_OF_TASK = { detect: ["detect"], segment: ["segment", "detect"], classify: ["classify"], pose: ["pose"], obb: ["obb"] };
const SPLIT_COLOURS = ["#1a73e8", "#e8710a", "#188038", "#9334e6", "#d01884", "#12859e"];
const MIN_SHOWN = 480;  // CSS pixels: the narrowest a drawn image is shown
const state = { endpoint: null, models: {}, pgFile: null, cmpFile: null, lastJson: null, camera: null };

// --- calls ------------------------------------------------------------------------------------

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("error: the console cannot be reached (" + e.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `error: ${response.status} ${response.statusText}`);
  }
  return body;
}

function showError(id, err) {
  const el = $(id);
  if (!err) { el.hidden = true; el.textContent = ""; return; }
  const line = String(err.message || err).split("\n")[0];
  el.textContent = line.startsWith("error:") ? line : "error: " + line;
  el.hidden = false;
}

function form(fields, file) {
  const data = new FormData();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null && v !== "") data.append(k, v);
  if (file) data.append("file", file, file.name || "upload");
  return data;
}

// --- tabs -------------------------------------------------------------------------------------

function show(view) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === view);
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  document.body.dataset.view = view;
  if (view === "rollout") refreshRollout();
}

// --- endpoint view ----------------------------------------------------------------------------

function fmt(v, digits = 1) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }

function renderEndpoint(ep) {
  state.endpoint = ep;
  $("where").textContent = ep.where;
  const s = ep.status;
  $("ep-summary").innerHTML = "";
  const add = (text) => { const span = document.createElement("span"); span.textContent = text; $("ep-summary").append(span); };
  if (s) {
    add(`endpoint ${s.display_name} (${s.endpoint_id})`);
    add(`dedicated DNS ${s.dedicated_endpoint_dns || "-"}`);
    add(`inference timeout ${s.inference_timeout_s ? s.inference_timeout_s + " s" : "default"}`);
  } else {
    add(`one server: ${ep.where}`);
  }
  add(`${ep.deployed_models.length} deployed model(s)`);
  const split = $("ep-split");
  split.innerHTML = "";
  ep.deployed_models.forEach((d, i) => {
    if (!d.traffic_percentage) return;
    const part = document.createElement("div");
    part.style.width = d.traffic_percentage + "%";
    part.style.background = SPLIT_COLOURS[i % SPLIT_COLOURS.length];
    part.textContent = `${d.display_name} ${d.traffic_percentage}%`;
    split.append(part);
  });
  const status = s ? Object.fromEntries(s.deployed_models.map((d) => [d.id, d])) : {};
  const body = document.querySelector("#ep-models tbody");
  body.innerHTML = "";
  for (const d of ep.deployed_models) {
    const st = status[d.id] || {};
    const tr = document.createElement("tr");
    tr.dataset.deployedModelId = d.id;
    tr.dataset.name = d.display_name;
    tr.dataset.traffic = d.traffic_percentage;
    const replicas = st.replicas || [];
    tr.dataset.replicas = replicas.length;
    const models = d.models ? d.models.models.map((m) =>
      `${m.default ? "* " : ""}${m.name} (${m.task}) v${m.version}`).join("<br>") : `<span class="error">${esc(d.error || "-")}</span>`;
    let machine = st.machine_type || (s ? "?" : "-");
    if (st.accelerator_type) machine += ` + ${st.accelerator_count || 1} x ${st.accelerator_type}`;
    const counts = s ? `<br>replicas ${st.min_replica_count ?? "?"}-${st.max_replica_count ?? "?"}` +
      (st.available_replica_count === null || st.available_replica_count === undefined ? "" : `, ${st.available_replica_count} up`) : "";
    const reps = replicas.map((r) =>
      `<div class="replica" data-state="${esc(r.state)}">${esc(r.id)} <span class="state-${esc(r.state)}">${esc(r.state)}</span>, restarts ${r.restarts}, pid ${r.pid || "-"}, port ${r.port}</div>`).join("")
      || (s ? '<span class="muted">not shown by Vertex</span>' : "-");
    tr.innerHTML = `<td>${esc(d.display_name)}</td><td>${esc(d.id)}</td><td>${d.traffic_percentage}%</td>` +
      `<td>${models}</td><td>${esc(machine)}${counts}</td><td>${reps}</td>`;
    body.append(tr);
  }
  fillTargets(ep);
  $("ep-refreshed").textContent = new Date().toLocaleTimeString();
  document.body.dataset.endpointLoaded = "1";
}

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function refreshEndpoint() {
  try {
    renderEndpoint(await api("/api/endpoint"));
    showError("ep-error", null);
  } catch (e) {
    showError("ep-error", e);
  } finally {
    setTimeout(refreshEndpoint, 3000);
  }
}

function fillTargets(ep) {
  const key = ep.deployed_models.map((d) => d.id + (d.routes || []).join()).join("|");
  if (state.targetsKey === key) return;
  state.targetsKey = key;
  for (const sel of document.querySelectorAll("select.targets")) {
    const was = sel.value;
    sel.innerHTML = "";
    if (!sel.classList.contains("pinned")) sel.append(new Option("the traffic split", ""));
    for (const d of ep.deployed_models) sel.append(new Option(`${d.display_name} (${d.id})`, d.id));
    if ([...sel.options].some((o) => o.value === was)) sel.value = was;
  }
  if ($("cmp-b").options.length > 1 && $("cmp-a").value === $("cmp-b").value) $("cmp-b").selectedIndex = 1;
  const routes = [...new Set(ep.deployed_models.flatMap((d) => d.routes || []))];
  for (const id of ["pg-route", "cmp-route"]) {
    const sel = $(id), was = sel.value;
    sel.innerHTML = "";
    for (const r of routes) sel.append(new Option("/" + r, r));
    if (routes.includes(was)) sel.value = was;
  }
  fillModels();
}

function fillModels() {
  const ep = state.endpoint;
  if (!ep) return;
  const target = $("pg-target").value, route = $("pg-route").value;
  const served = ep.deployed_models.filter((d) => !target || d.id === target).flatMap((d) => d.models ? d.models.models : []);
  const sel = $("pg-model"), was = sel.value;
  sel.innerHTML = "";
  sel.append(new Option("the server's default", ""));
  const names = new Set();
  let defaultServes = false;
  for (const m of served) {
    const routes = ROUTES_OF_TASK[m.task] || [];
    if (!routes.includes(route)) continue;
    defaultServes = defaultServes || m.default;
    if (!names.has(m.name)) { names.add(m.name); sel.append(new Option(`${m.name} (${m.task})`, m.name)); }
  }
  if ([...sel.options].some((o) => o.value === was) && (was || defaultServes)) sel.value = was;
  else if (!defaultServes && sel.options.length > 1) sel.selectedIndex = 1;  // a model for the route
}

// --- drawing ----------------------------------------------------------------------------------

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("error: the browser cannot show this file as an image"));
    img.src = src;
  });
}

// Draws one image's answer over the image; returns what it drew (image pixels), also kept in
// the canvas's data-drawn attribute as JSON (what the tests read).
function draw(canvas, img, answer, layout, trails) {
  const width = answer && answer.width ? answer.width : img.naturalWidth || img.videoWidth || img.width;
  const height = answer && answer.height ? answer.height : img.naturalHeight || img.videoHeight || img.height;
  canvas.width = width;
  canvas.height = height;
  canvas.style.width = Math.max(width, MIN_SHOWN) + "px";  // small images shown larger
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, width, height);
  for (const [id, points] of Object.entries(trails || {})) {  // where each track has been
    ctx.strokeStyle = colour(Number(id));
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  }
  const drawn = [];
  const line = Math.max(2, Math.round(Math.max(width, height) / 300));
  ctx.lineWidth = line;
  ctx.font = `${Math.max(12, line * 6)}px system-ui, sans-serif`;
  for (const d of (answer && answer.detections) || []) {
    const c = colour(d.track_id ?? d.class_id);
    ctx.strokeStyle = c;
    ctx.fillStyle = c;
    if (d.mask) {
      for (const poly of d.mask.polygons) {
        ctx.beginPath();
        poly.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        ctx.closePath();
        ctx.globalAlpha = 0.5;
        ctx.fill();
        ctx.globalAlpha = 1;
        ctx.setLineDash([line * 2, line * 2]);
        ctx.stroke();
        ctx.setLineDash([]);
      }
    }
    const b = d.box;
    if (d.rotated_box) {
      ctx.beginPath();
      d.rotated_box.corners.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
      ctx.stroke();
    } else {
      ctx.strokeRect(b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1);
    }
    if (d.keypoints) {
      const skeleton = (layout && layout.skeleton) || [];
      ctx.beginPath();
      for (const [i, j] of skeleton) {
        const p = d.keypoints[i], q = d.keypoints[j];
        if (p && q) { ctx.moveTo(p.x, p.y); ctx.lineTo(q.x, q.y); }
      }
      ctx.stroke();
      for (const k of d.keypoints) {
        if (k.confidence !== undefined && k.confidence !== null && k.confidence < 0.5) continue;
        ctx.beginPath(); ctx.arc(k.x, k.y, line * 1.5, 0, 2 * Math.PI); ctx.fill();
      }
    }
    const label = `${d.class_name} ${d.confidence.toFixed(2)}${d.track_id !== undefined && d.track_id !== null ? " #" + d.track_id : ""}`;
    const tw = ctx.measureText(label).width + 6, th = parseInt(ctx.font, 10) + 4;
    const ty = Math.max(0, b.y1 - th), tx = Math.max(0, Math.min(b.x1, width - tw));
    ctx.fillRect(tx, ty, tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, tx + 3, ty + th - 5);
    drawn.push({ class_name: d.class_name, confidence: d.confidence, x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2,
      track_id: d.track_id ?? null, mask: !!d.mask, keypoints: d.keypoints ? d.keypoints.length : 0, rotated: !!d.rotated_box });
  }
  const classes = answer && answer.classes;
  if (classes) {
    ctx.fillStyle = "rgba(0,0,0,.6)";
    ctx.fillRect(0, 0, Math.min(width, 260), 20 + 18 * Math.min(classes.length, 5));
    ctx.fillStyle = "#fff";
    ctx.font = "14px system-ui, sans-serif";
    classes.slice(0, 5).forEach((k, i) => ctx.fillText(`${k.class_name} ${k.confidence.toFixed(3)}`, 8, 18 + 18 * i));
    for (const k of classes) drawn.push({ class_name: k.class_name, confidence: k.confidence });
  }
  canvas.dataset.drawn = JSON.stringify(drawn);
  return drawn;
}

function servedLine(r, latency) {
  const who = `${r.model} v${r.version} on deployed model ${r.deployed_model_id}` + (r.replica_id ? `, replica ${r.replica_id}` : "");
  const n = r.results ? r.results.reduce((a, x) => a + (x.detections ? x.detections.length : x.classes.length), 0) : 0;
  return `${who}; ${n} ${r.task === "classify" ? "classes" : "detections"}` + (latency !== undefined ? `; ${fmt(latency)} ms` : "");
}

function setJson(value) {
  state.lastJson = value;
  const text = JSON.stringify(value, null, 2);
  $("pg-json").textContent = text.length > 200000 ? text.slice(0, 200000) + "\n..." : text;
  const a = $("pg-download");
  if (a.href) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([JSON.stringify(value, null, 2)], { type: "application/json" }));
  a.hidden = false;
}

// --- playground -------------------------------------------------------------------------------

function isVideo(file) { return file && (file.type.startsWith("video/") || file.type === "image/gif" || /\.(mp4|mov|webm|mkv|avi|gif)$/i.test(file.name)); }

function pgParams() {
  return {
    route: $("pg-route").value, model: $("pg-model").value, deployed_model_id: $("pg-target").value,
    conf: $("pg-conf").value, iou: $("pg-iou").value, classes: $("pg-classes").value, imgsz: $("pg-imgsz").value,
  };
}

async function runPlayground() {
  const file = state.pgFile;
  showError("pg-error", null);
  if (!file) { showError("pg-error", "error: choose an image or a video first"); return; }
  const button = $("pg-run");
  button.disabled = true;
  document.body.dataset.pgState = "running";
  $("pg-info").textContent = "";
  $("pg-download").hidden = true;
  const canvas = $("pg-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  canvas.dataset.drawn = "[]";
  canvas.dataset.history = "[]";
  try {
    if (isVideo(file)) await runVideo(file);
    else await runImage(file);
    document.body.dataset.pgState = "done";
  } catch (e) {
    showError("pg-error", e);
    document.body.dataset.pgState = "error";
  } finally {
    button.disabled = false;
  }
}

async function runImage(file) {
  const answer = await api("/api/infer", { method: "POST", body: form(pgParams(), file) });
  const url = URL.createObjectURL(file);
  let img;
  try { img = await loadImage(url); } finally { setTimeout(() => URL.revokeObjectURL(url), 0); }
  const r = answer.result;
  draw($("pg-canvas"), img, r.results[0], r.keypoints);
  $("pg-info").textContent = servedLine(r, answer.latency_ms);
  setJson(answer);
}

async function runVideo(file) {
  const params = { ...pgParams(), track: $("pg-track").value };
  delete params.route;
  let response;
  try {
    response = await fetch("/api/stream", { method: "POST", body: form(params, file) });
  } catch (e) {
    throw new Error("error: the console cannot be reached (" + e.message + ")");
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    throw new Error((body && body.error) || `error: ${response.status}`);
  }
  const canvas = $("pg-canvas");
  const history = [];
  const events = [];
  const trails = {};
  let start = null;
  canvas.dataset.history = "[]";
  for await (const [name, data] of sseEvents(response)) {
    events.push({ event: name, data: name === "frame" ? data.frame : data });
    if (name === "start") {
      start = data;
      $("pg-info").textContent = `${data.model} v${data.version} on deployed model ${data.deployed_model_id}` +
        (data.replica_id ? `, replica ${data.replica_id}` : "") + `; ${data.frames ?? "?"} frames, tracking ${data.track}`;
    } else if (name === "frame") {
      const f = data.frame;
      if (data.image) {
        const img = await loadImage(data.image);
        for (const d of f.detections) {
          if (d.track_id === undefined || d.track_id === null) continue;
          (trails[d.track_id] = trails[d.track_id] || []).push([(d.box.x1 + d.box.x2) / 2, (d.box.y1 + d.box.y2) / 2]);
        }
        const drawn = draw(canvas, img, { width: start.width, height: start.height, detections: f.detections, classes: f.classes }, start.keypoints, trails);
        history.push({ index: f.index, drawn });
        canvas.dataset.history = JSON.stringify(history);
      }
      $("pg-info").textContent = `${start.model} v${start.version} on deployed model ${start.deployed_model_id}` +
        (start.replica_id ? `, replica ${start.replica_id}` : "") +
        `; frame ${f.index + 1}${start.frames ? " of " + start.frames : ""}, ${f.detections.length} detections, inference ${fmt(f.inference_ms)} ms`;
    } else if (name === "end") {
      $("pg-info").textContent += `; done: ${data.frames} frames at ${fmt(data.fps)} fps, ${data.tracks} tracks`;
    } else if (name === "failed") {
      setJson(events);
      throw new Error(data.error);
    }
  }
  setJson(events);
}

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield [name, JSON.parse(data)];
    }
  }
}

async function toggleCamera() {
  if (state.camera) { state.camera.stop = true; return; }
  showError("pg-error", null);
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (e) {
    showError("pg-error", "error: no camera: " + e.message);
    return;
  }
  const video = $("pg-video");
  video.srcObject = media;
  await video.play();
  const cam = { stop: false };
  state.camera = cam;
  document.body.dataset.camera = "on";
  let answered = 0;
  $("pg-camera").textContent = "Stop camera";
  const grab = document.createElement("canvas");
  try {
    while (!cam.stop) {
      grab.width = video.videoWidth; grab.height = video.videoHeight;
      grab.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", 0.9));
      const snap = await createImageBitmap(blob);
      try {
        const answer = await api("/api/infer", { method: "POST", body: form(pgParams(), new File([blob], "camera.jpg", { type: "image/jpeg" })) });
        draw($("pg-canvas"), snap, answer.result.results[0], answer.result.keypoints);
        $("pg-info").textContent = "camera: " + servedLine(answer.result, answer.latency_ms);
        showError("pg-error", null);
        document.body.dataset.cameraAnswers = String(++answered);
      } catch (e) {
        showError("pg-error", e);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  } finally {
    media.getTracks().forEach((t) => t.stop());
    state.camera = null;
    document.body.dataset.camera = "off";
    $("pg-camera").textContent = "Camera";
  }
}

// --- compare ----------------------------------------------------------------------------------

async function runCompare() {
  const file = state.cmpFile;
  showError("cmp-error", null);
  if (!file) { showError("cmp-error", "error: choose an image or a video first"); return; }
  const button = $("cmp-run");
  button.disabled = true;
  document.body.dataset.cmpState = "running";
  for (const key of ["a", "b"]) { $(`cmp-info-${key}`).textContent = ""; $(`cmp-canvas-${key}`).dataset.drawn = "[]"; }
  $("cmp-agreement").textContent = "";
  try {
    const fields = { a: $("cmp-a").value, b: $("cmp-b").value, route: $("cmp-route").value, conf: $("cmp-conf").value };
    const answer = await api("/api/compare", { method: "POST", body: form(fields, file) });
    let img;
    if (answer.images.length) img = await loadImage(answer.images[0]);
    else {
      const url = URL.createObjectURL(file);
      try { img = await loadImage(url); } finally { setTimeout(() => URL.revokeObjectURL(url), 0); }
    }
    const names = Object.fromEntries((state.endpoint ? state.endpoint.deployed_models : []).map((d) => [d.id, d.display_name]));
    for (const side of answer.sides) {
      const key = side.label.toLowerCase();
      const call = side.calls[0];
      $(`cmp-title-${key}`).textContent = `${side.label}: ${names[side.deployed_model_id] || side.deployed_model_id} (${side.deployed_model_id})`;
      const canvas = $(`cmp-canvas-${key}`);
      if (call.result) {
        draw(canvas, img, call.result.results[0], call.result.keypoints);
        $(`cmp-info-${key}`).textContent = servedLine(call.result) +
          `; latency p50 ${fmt(side.latency.p50_ms)} ms over ${side.latency.count} call(s), ${side.errors} error(s)`;
      } else {
        draw(canvas, img, null, null);
        $(`cmp-info-${key}`).textContent = call.error;
      }
      canvas.dataset.deployedModelId = side.deployed_model_id;
    }
    const g = answer.agreement;
    const box = $("cmp-agreement");
    box.dataset.f1 = g.f1;
    box.innerHTML = "";
    for (const text of [`B against A over ${g.images} of ${answer.frames} image(s)`, `matched ${g.matched} (A ${g.reference_boxes}, B ${g.candidate_boxes})`,
      `precision ${fmt(g.precision, 3)}`, `recall ${fmt(g.recall, 3)}`, `F1 ${fmt(g.f1, 3)}`, `mean IoU ${fmt(g.mean_iou, 3)}`]
      .concat(g.mean_oks !== null && g.mean_oks !== undefined ? [`mean OKS ${fmt(g.mean_oks, 3)}`] : [])) {
      const span = document.createElement("span"); span.textContent = text; box.append(span);
    }
    document.body.dataset.cmpState = "done";
  } catch (e) {
    showError("cmp-error", e);
    document.body.dataset.cmpState = "error";
  } finally {
    button.disabled = false;
  }
}

// --- rollout ----------------------------------------------------------------------------------

let rolloutTimer = null;

function splitText(split, names) {
  return Object.entries(split).map(([id, p]) => `${names[id] || id} ${p}%`).join(", ");
}

async function refreshRollout() {
  clearTimeout(rolloutTimer);
  try {
    const answer = await api("/api/rollout");
    showError("ro-error", null);
    renderRollout(answer);
  } catch (e) {
    showError("ro-error", e);
  } finally {
    if (document.body.dataset.view === "rollout") rolloutTimer = setTimeout(refreshRollout, 2000);
  }
}

function renderRollout(answer) {
  const box = $("ro-summary"), body = document.querySelector("#ro-steps tbody");
  box.innerHTML = ""; body.innerHTML = "";
  const add = (text, cls) => { const s = document.createElement("span"); s.textContent = text; if (cls) s.className = cls; box.append(s); };
  if (!answer.path) { add("No report to show: start the console with --rollout-report FILE.json, the file `client rollout --report FILE.json` writes."); return; }
  const r = answer.report;
  if (!r) { add(`Waiting for ${answer.path} (written by client rollout --report).`); return; }
  box.dataset.verdict = r.verdict;
  const names = r.names || {};
  add(`${r.from_name || r.from_id} -> ${r.to_name || r.to_id}`);
  add(`verdict ${r.verdict}`, "verdict-" + r.verdict.split(" ")[0]);
  add(`steps ${r.steps.join(", ")}%` + (r.skipped.length ? ` (skipped ${r.skipped.join(", ")})` : ""));
  add(`hold ${r.hold_s} s, ${r.probes} probes on /${r.route}`);
  const g = r.guards;
  add(`guards: error rate <= ${g.max_error_rate ?? "off"}, latency ratio <= ${g.max_latency_ratio ?? "off"}, agreement >= ${g.min_agreement ?? "off"}`);
  add(`split now ${splitText(r.final_split, names)}` + (r.restored ? " (start split restored)" : ""));
  for (const f of r.failed) add(`failed: ${f.guard} ${fmt(f.figure, 3)} vs ${f.threshold} (${f.detail})`, "verdict-fail");
  for (const s of r.timeline) {
    const tr = document.createElement("tr");
    tr.dataset.verdict = s.verdict;
    const side = (x) => `${x.calls} / ${x.errors}, ${fmt(x.latency.p95_ms)} ms`;
    tr.innerHTML = `<td>${s.step}</td><td>${s.percent}%</td><td>${esc(splitText(s.split, names))}</td><td>${side(s.a)}</td><td>${side(s.b)}</td>` +
      `<td>${fmt(s.error_rate, 3)}</td><td>${fmt(s.latency_ratio, 2)}</td><td>${s.agreement ? fmt(s.agreement.f1, 3) : "-"}</td>` +
      `<td class="verdict-${esc(s.verdict)}">${esc(s.verdict)}${s.failed.length ? ": " + esc(s.failed.map((f) => f.guard).join(", ")) : ""}</td>`;
    body.append(tr);
  }
}

// --- wiring -----------------------------------------------------------------------------------

function wireDrop(zoneId, inputId, onFile) {
  const zone = $(zoneId), input = $(inputId);
  input.addEventListener("change", () => input.files[0] && onFile(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files[0]) onFile(e.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.view));
  wireDrop("pg-drop", "pg-file", (f) => { state.pgFile = f; runPlayground(); });
  wireDrop("cmp-drop", "cmp-file", (f) => { state.cmpFile = f; });
  $("pg-run").addEventListener("click", runPlayground);
  $("pg-camera").addEventListener("click", toggleCamera);
  $("pg-route").addEventListener("change", fillModels);
  $("pg-target").addEventListener("change", fillModels);
  $("cmp-run").addEventListener("click", runCompare);
  show("endpoint");
  refreshEndpoint();
});
