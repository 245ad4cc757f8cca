// hotshot Render Video workspace. Plain JavaScript, no dependencies: it polls the server's JSON
// (the same documents as the status files), draws the timeline, and sends requests built from the form.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

const state = {
  shots: [], shotId: null, shot: null, form: null, group: "basic",
  selected: null,          // key of the selected track
  range: null,             // [first, last] in the chosen source's own frame numbers
  playing: null,           // the track shown in the viewport
  estimateTimer: null, estimateSeq: 0, promptTask: null, suggestion: null,
  zoom: 1,                 // timeline magnification (1 = the whole clip fits the pane)
};

async function api(path, options = {}) {
  const response = await fetch(path, {headers: {"Content-Type": "application/json"}, ...options});
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  return {ok: response.ok, status: response.status, body};
}

// ---- shots ---------------------------------------------------------------------------------------

async function loadShots() {
  const {ok, body} = await api("/api/shots");
  if (!ok) return;
  state.shots = body.shots;
  showDaemon(body.daemon);
  drawShots();
  if (state.shotId === null) {
    const wanted = Number(new URLSearchParams(location.hash.slice(1)).get("shot"));
    const first = state.shots.find((s) => s.id === wanted) || state.shots[0];
    if (first) openShot(first.id);
  }
}

function drawShots() {
  const filter = $("#shot-filter").value.trim().toLowerCase();
  const list = $("#shot-list");
  list.replaceChildren(...state.shots.filter((s) => s.name.toLowerCase().includes(filter)).map((shot) => el("li", {
    class: shot.id === state.shotId ? "active" : "", dataset: {shot: shot.id}, onclick: () => openShot(shot.id),
  }, el("div", {class: "name", text: shot.name}),
     el("div", {class: "facts"}, `${shot.sources} source${shot.sources === 1 ? "" : "s"} · ${shot.renders} render${shot.renders === 1 ? "" : "s"}`,
        shot.active ? el("span", {class: "active-jobs", text: ` · ${shot.active} active`}) : null))));
}

function showDaemon(daemon) {
  const pill = $("#daemon-state");
  pill.className = "pill " + (!daemon.running ? "stopped" : daemon.paused ? "paused" : "running");
  pill.textContent = !daemon.running ? "daemon not running" + (daemon.paused ? " (paused)" : "")
    : daemon.paused ? `daemon paused (pid ${daemon.pid})` : `daemon running (pid ${daemon.pid})`;
  $("#pause").hidden = daemon.paused;
  $("#resume").hidden = !daemon.paused;
}

async function openShot(id) {
  if (state.shotId !== id) {
    state.shotId = id; state.shot = null; state.selected = null; state.range = null; state.playing = null;
    state.suggestion = null;
    history.replaceState(null, "", `#shot=${id}`);
    $("#player").removeAttribute("src"); $("#player-empty").hidden = false;
  }
  drawShots();
  await refreshShot();
}

async function refreshShot() {
  if (state.shotId === null) return;
  const {ok, body} = await api(`/api/shots/${state.shotId}`);
  if (!ok) return;
  const first = state.shot === null;
  state.shot = body;
  if (state.dragging) return;
  showDaemon(body.daemon);
  $("#shot-title").textContent = body.name;
  fillSources(first);
  fillFileFields();
  drawTimeline();
  if (first) {
    const source = sourceTrack();
    if (source) play(source);
    scheduleEstimate();
  }
}

// ---- timeline ------------------------------------------------------------------------------------

function allTracks() { return (state.shot?.groups || []).flatMap((g) => g.tracks); }
function trackByKey(key) { return allTracks().find((t) => t.key === key); }
function trackByName(name) { return allTracks().find((t) => t.media && t.name === name); }
function sourceTrack() { return trackByName($("#source").value) || allTracks()[0]; }
function groupOf(track) { return (state.shot?.groups || []).find((g) => g.tracks.includes(track)); }

function drawTimeline() {
  const box = $("#tracks");
  const groups = state.shot?.groups || [];
  if (!groups.length) {
    box.replaceChildren(el("p", {class: "hint", text: "No video in this shot yet."}));
    return;
  }
  const nodes = [];
  for (const group of groups) {
    const total = Math.max(1, group.frames || 1);
    const pct = (frame) => `${(100 * frame / total).toFixed(3)}%`;
    const ruler = el("div", {class: "ruler"});
    const step = niceStep(total);
    for (let f = 0; f < total; f += step) ruler.append(el("span", {style: `left:${pct(f)}`, text: f}));
    const section = el("div", {class: "group", dataset: {source: group.source}}, ruler);
    for (const track of group.tracks) section.append(drawTrack(track, group, pct));
    nodes.push(section);
  }
  for (const job of state.shot.unplaced || []) nodes.push(el("div", {class: "unplaced"}, `${job.name}: ${job.job?.message || ""}`));
  for (const name of state.shot.submitted || []) {
    nodes.push(el("div", {class: "track submitted", dataset: {request: name}},
      el("div", {class: "head"}, el("span", {class: "name", text: name}), el("span", {class: "badge submitted", text: "submitted"})),
      el("div", {class: "detail", text: "written to the shot; waiting for the daemon to pick it up"})));
  }
  box.replaceChildren(...nodes);
  drawPlayhead();
}

function niceStep(total) {
  const marks = 6 * state.zoom;
  for (const step of [1, 2, 5, 10, 12, 24, 25, 50, 100, 200, 250, 500, 1000, 2500, 5000]) if (total / step <= marks) return step;
  return Math.ceil(total / marks);
}

function setZoom(zoom) {
  // Keep the frame at the middle of the pane where it is.
  const pane = $(".timeline");
  const middle = (pane.scrollLeft + pane.clientWidth / 2) / Math.max(1, $("#tracks").scrollWidth);
  state.zoom = Math.min(64, Math.max(1, zoom));
  $("#tracks").style.setProperty("--zoom", state.zoom);
  drawTimeline();
  pane.scrollLeft = middle * $("#tracks").scrollWidth - pane.clientWidth / 2;
}

function drawTrack(track, group, pct) {
  const job = track.job;
  const status = job ? job.state : "source";
  const isSource = track.kind === "original";
  const tree = track.depth ? "  ".repeat(track.depth - 1) + "└" : "";
  const tools = el("span", {class: "tools"});
  if (job && ["waiting", "queued", "running"].includes(job.state)) {
    tools.append(el("button", {class: "small", dataset: {action: "cancel"}, onclick: (e) => { e.stopPropagation(); command(`/api/jobs/${job.job}/cancel`); }, text: "Cancel"}));
  }
  if (job && ["failed", "cancelled"].includes(job.state)) {
    tools.append(el("button", {class: "small", dataset: {action: "retry"}, onclick: (e) => { e.stopPropagation(); command(`/api/jobs/${job.job}/retry`); }, text: "Retry"}));
  }
  const badge = el("span", {class: `badge ${isSource ? "source" : status}`, dataset: {state: isSource ? "source" : status},
    text: isSource ? "source" : status === "running" && job.progress ? `running ${Math.round(job.progress.percent || 0)}%` : status});
  const head = el("div", {class: "head"}, tree ? el("span", {class: "tree", text: tree}) : null,
    el("span", {class: "name", text: track.name, title: track.name}),
    el("span", {class: "span", text: `${track.first}–${track.last}`}), badge, tools);
  const width = `calc(${pct(track.last - track.first + 1)} )`;
  const bar = el("div", {class: "bar" + (track.media ? "" : " pending") + (job && ["failed", "cancelled"].includes(job.state) ? ` ${job.state}` : ""),
    style: `left:${pct(track.first)};width:${width}`});
  if (track.media && track.media_state === "ready") {
    // As many poster frames as fit the bar at the clip's aspect, so the strip is never squashed.
    const [w, h] = (track.size || "16x9").split("x").map(Number);
    const laneWidth = ($("#tracks").clientWidth || 400) * (track.last - track.first + 1) / group.frames;  // zoomed width
    const tiles = Math.max(1, Math.min(16, Math.round(laneWidth / ((isSource ? 54 : 46) * (w / h || 1.78)))));
    bar.style.backgroundImage = `url(/files/media/${track.media}/strip.jpg?tiles=${tiles})`;
  }
  if (job && job.state === "running") {
    const percent = job.progress?.percent || 0;
    bar.append(el("div", {class: "progress", style: `width:${percent}%`}));
    bar.append(el("span", {class: "label", text: `chunk ${job.progress?.chunk ?? 0}/${job.progress?.chunks ?? "?"}`}));
  }
  const lane = el("div", {class: "lane" + (isSource ? " source" : "")}, bar);
  if (track.media && track.name === $("#source").value) { lane.classList.add("pickable"); attachRangeDrag(lane, track, group); }
  const detail = el("div", {class: "detail" + (job && ["failed", "cancelled"].includes(job.state) ? " error" : "")});
  detail.textContent = trackDetail(track);
  const node = el("div", {class: "track" + (state.selected === track.key ? " selected" : ""),
    dataset: {key: track.key, name: track.name, state: isSource ? "source" : status, depth: track.depth},
    style: `margin-left:${track.depth * 14}px`}, head, lane, detail);
  head.addEventListener("click", () => selectTrack(track));
  bar.addEventListener("click", (e) => { if (!lane.classList.contains("pickable")) selectTrack(track); e.stopPropagation(); });
  return node;
}

function trackDetail(track) {
  const job = track.job;
  const facts = [];
  if (track.frames) facts.push(`${track.frames} frames`);
  if (track.size) facts.push(track.size);
  if (track.fps) facts.push(`${parseRate(track.fps).toFixed(3).replace(/\.?0+$/, "")} fps`);
  if (!job) return facts.join(" · ");
  if (job.model) facts.push(job.model);
  switch (job.state) {
    case "running": {
      const eta = job.progress?.eta_seconds;
      return `${job.message}${job.worker ? " on " + job.worker : ""}` + (eta !== undefined && eta !== null ? ` · ETA ${formatSeconds(eta)}` : "");
    }
    case "waiting": return job.message + (job.window ? ` · window ${job.window}` : "") + (job.starts_at ? ` · starts ${job.starts_at}` : "");
    case "queued": return `queued${job.estimate ? ` · estimate ${formatSeconds(job.estimate.seconds)}` : ""}` + (job.window ? ` · window ${job.window}` : "");
    case "failed": case "cancelled": return job.error || job.state;
    case "done": return facts.join(" · ") + (job.outputs?.seconds !== undefined ? ` · took ${formatSeconds(job.outputs.seconds)}` : "");
    default: return job.message || "";
  }
}

function clip(text, length) { return text && text.length > length ? text.slice(0, length - 1) + "…" : text; }

function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  seconds = Number(seconds);
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function attachRangeDrag(lane, track, group) {
  const frameAt = (event) => {
    const box = lane.getBoundingClientRect();
    const total = Math.max(1, group.frames || 1);
    const frame = Math.floor(total * (event.clientX - box.left) / box.width);
    return Math.min(track.last, Math.max(track.first, frame)) - track.first;
  };
  let anchor = null;
  lane.addEventListener("pointerdown", (event) => {
    anchor = frameAt(event);
    state.dragging = true;
    lane.setPointerCapture(event.pointerId);
    setRange([anchor, anchor], false);
    event.preventDefault();
  });
  lane.addEventListener("pointermove", (event) => {
    if (anchor === null) return;
    const at = frameAt(event);
    setRange([Math.min(anchor, at), Math.max(anchor, at)], false);
  });
  lane.addEventListener("pointerup", (event) => {
    if (anchor === null) return;
    const at = frameAt(event);
    anchor = null;
    state.dragging = false;
    setRange(state.range, true);
    if (state.playing === track) seekFrame(at);
  });
  if (state.range) drawSelection(lane, track, group);
}

function moveSelection() {
  // While dragging, only the selection box moves: the lane holding the pointer capture stays in place.
  $("#range-first").value = state.range[0];
  $("#range-last").value = state.range[1];
  $("#range-count").textContent = `${state.range[1] - state.range[0] + 1} frames`;
  const track = trackByName($("#source").value);
  const group = track && groupOf(track);
  const lane = document.querySelector(`.track[data-key="${track?.key}"] .lane`);
  if (!lane || !group) return;
  lane.querySelectorAll(".selection").forEach((n) => n.remove());
  drawSelection(lane, track, group);
}

function drawSelection(lane, track, group) {
  const total = Math.max(1, group.frames || 1);
  const [a, b] = state.range;
  lane.append(el("div", {class: "selection", style: `left:${100 * (track.first + a) / total}%;width:${100 * (b - a + 1) / total}%`}));
}

function setRange(range, estimate = true, typing = false) {
  state.range = range;
  if (state.dragging) { moveSelection(); return; }
  if (!typing) {  // while the editor types, a half-typed range leaves the other box alone
    $("#range-first").value = range ? range[0] : "";
    $("#range-last").value = range ? range[1] : "";
  }
  $("#range-count").textContent = range ? `${range[1] - range[0] + 1} frames` : "";
  $("#generate").disabled = !range;
  drawTimeline();
  if (estimate) scheduleEstimate();
}

function selectTrack(track) {
  state.selected = track.key;
  if (track.media) play(track);
  if (track.job && track.job.has_manifest) loadRenderInfo(track.job.job);
  drawTimeline();
}

// ---- viewport ------------------------------------------------------------------------------------

function play(track) {
  const player = $("#player");
  state.playing = track;
  player.src = `/files/media/${track.media}/video`;
  $("#player-empty").hidden = true;
  $("#clip-name").textContent = track.name;
  showFrame();
}

function parseRate(value) {
  // ffprobe's rates are fractions ("30000/1001"); plain numbers pass through.
  if (typeof value === "string" && value.includes("/")) { const [a, b] = value.split("/").map(Number); return b ? a / b : NaN; }
  return Number(value);
}
function fpsOf(track) { return parseRate(track?.fps) || 24; }
function currentFrame() {
  const track = state.playing;
  if (!track) return null;
  const player = $("#player");
  const frame = Math.floor(player.currentTime * fpsOf(track) + 1e-3);
  return Math.min(Math.max(0, frame), (track.frames || 1) - 1);
}
function seekFrame(frame) { const p = $("#player"); p.currentTime = (frame + 0.5) / fpsOf(state.playing); }

function showFrame() {
  const frame = currentFrame();
  const track = state.playing;
  const readout = $("#frame-readout");
  if (frame === null) { readout.textContent = "frame —"; return; }
  let text = `frame ${frame} / ${(track.frames || 1) - 1}`;
  if (track.kind !== "original") text += ` · source ${track.first + frame}`;
  readout.textContent = text;
  readout.dataset.frame = frame;
  drawPlayhead();
}

function drawPlayhead() {
  document.querySelectorAll(".playhead").forEach((n) => n.remove());
  const track = state.playing;
  if (!track) return;
  const group = groupOf(trackByKey(track.key) || track);
  const frame = currentFrame();
  if (!group || frame === null) return;
  const lane = document.querySelector(`.group[data-source="${CSS.escape(group.source)}"] .lane.source`);
  if (lane) lane.append(el("div", {class: "playhead", style: `left:${100 * (track.first + frame) / Math.max(1, group.frames)}%`}));
}

// ---- settings form -------------------------------------------------------------------------------

async function loadForm() {
  const {ok, body} = await api("/api/form");
  if (!ok) { $("#fields").textContent = body?.error || "cannot read the model catalog"; return; }
  state.form = body;
  $("#model").replaceChildren(...body.models.map((m) => el("option", {value: m.id, selected: m.id === body.default_model},
    `${m.id}${m.weights_present ? "" : " (weights not here)"}`)));
  $("#preset").replaceChildren(el("option", {value: ""}, "none"), ...body.presets.map((p) => el("option", {value: p.name, disabled: !p.available}, p.name)));
  drawFields();
}

function currentModel() { return state.form?.models.find((m) => m.id === $("#model").value); }

function fieldVisible(field, model) {
  const base = state.form.needs[field.name] || field.name;
  if (!state.form.capability_fields.includes(base)) return true;
  const capability = model?.capabilities?.[base];
  return Array.isArray(capability) ? capability.length > 0 : Boolean(capability);
}

function drawFields() {
  const model = currentModel();
  const previous = collectValues(false);
  const box = $("#fields"), jobBox = $("#job-fields");
  box.replaceChildren(); jobBox.replaceChildren();
  for (const field of state.form.fields) {
    if (!fieldVisible(field, model)) continue;
    const target = field.group === "job" ? jobBox : box;
    const node = fieldNode(field, model);
    if (field.group !== "job") node.forEach((n) => { n.dataset.group = field.group; n.hidden = field.group !== state.group; });
    target.append(...node);
  }
  restoreValues(previous);
  fillFileFields();
}

function fieldNode(field, model) {
  const id = `f-${field.name.replace(".", "-")}`;
  const placeholder = model?.defaults?.[field.name] ?? (field.default ?? "");
  let input;
  switch (field.kind) {
    case "bool":
      input = el("input", {type: "checkbox", id, checked: field.default === true});
      break;
    case "int": case "float":
      input = el("input", {type: "text", inputmode: "decimal", id, placeholder: String(placeholder)});
      break;
    case "choice":
      input = el("select", {id}, el("option", {value: ""}, field.default ?? "none"), ...field.choices.map((c) => el("option", {value: c}, c)));
      break;
    case "file":
      input = el("select", {id, class: "file-select", dataset: {field: field.name}});
      break;
    case "controlnets":
      input = el("div", {id}, ...(model?.capabilities?.controlnets || []).map((type) => el("div", {class: "controlnet"},
        el("input", {type: "checkbox", dataset: {control: type}, id: `${id}-${type}`}),
        el("label", {for: `${id}-${type}`, text: type}),
        el("input", {type: "text", inputmode: "decimal", placeholder: "1.0", dataset: {strength: type}, title: "strength 0–2"}))));
      break;
    default:
      if (field.name.endsWith("prompt")) {
        input = el("textarea", {id, rows: field.name === "prompt" ? 3 : 2, placeholder: field.name === "negative_prompt" ? "the model's default" : "what the render should look like"});
      } else if (field.name === "when") {
        // Offer the configured render windows; any date-time may still be typed.
        input = el("input", {type: "text", id, placeholder: "now", list: "windows"});
        $("#windows")?.remove();
        document.body.append(el("datalist", {id: "windows"}, ["now", ...state.form.windows].map((w) => el("option", {value: w}))));
      } else {
        input = el("input", {type: "text", id, placeholder: String(placeholder)});
      }
  }
  input.dataset.name = field.name;
  input.dataset.kind = field.kind;
  input.addEventListener("change", () => { clearErrors(); scheduleEstimate(); });
  const wide = ["prompt", "negative_prompt", "controlnets"].includes(field.name);
  let control = input;
  if (field.kind === "file") {
    const upload = el("input", {type: "file", accept: "image/png,image/jpeg,image/tiff", hidden: true,
      onchange: (e) => uploadStill(e.target, input)});
    control = el("div", {class: "file-field"}, input,
      el("button", {class: "small", title: "upload an image into the shot", onclick: () => upload.click(), text: "Upload"}), upload);
  }
  const rowNode = el("div", {class: "row" + (wide ? " wide" : "") + (field.kind === "bool" ? " check" : ""), dataset: {field: field.name}},
    el("label", {for: id, text: field.label, title: field.description || ""}), control);
  const nodes = [rowNode];
  if (field.name === "prompt") {
    nodes.push(el("div", {class: "auto-prompt"},
      el("button", {class: "small", id: "auto-prompt", onclick: autoPrompt, text: state.suggestion ? "Regenerate" : "Auto Prompt"}),
      el("button", {class: "small", id: "use-prompt", disabled: !state.suggestion, onclick: usePrompt, text: "Use Prompt"}),
      el("span", {class: "muted", id: "prompt-status"})));
    nodes.push(el("div", {class: "suggestion", id: "suggestion", text: state.suggestion || ""}));
  }
  nodes.push(el("div", {class: "err", dataset: {for: field.name}}));
  return nodes;
}

function fillSources(keep) {
  const select = $("#source");
  const videos = allTracks().filter((t) => t.media && t.media_state === "ready");
  const current = select.value;
  select.replaceChildren(...videos.map((t) => el("option", {value: t.name}, (t.depth ? "  ".repeat(t.depth) + "└ " : "") + t.name)));
  if (videos.some((t) => t.name === current)) select.value = current;
}

function fillFileFields() {
  if (!state.shot) return;
  document.querySelectorAll("select.file-select").forEach((select) => {
    const current = select.value;
    const options = [el("option", {value: ""}, "none")];
    if (select.dataset.field === "style_frame" || select.dataset.field === "reference_frame") {
      options.push(el("option", {value: "@keyframe"}, "keyframe at the viewport's frame"));
    }
    const names = select.dataset.field === "mask" ? [...state.shot.images, ...state.shot.videos] : state.shot.images;
    options.push(...names.map((n) => el("option", {value: n}, n)));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  });
}

function restoreValues(values) {
  for (const [name, value] of Object.entries(values)) {
    const input = document.querySelector(`[data-name="${name}"]`);
    if (!input) continue;
    if (input.type === "checkbox") input.checked = value;
    else if (input.dataset.kind !== "controlnets") input.value = value;
  }
}

// The request the form describes: only what the editor set, so everything else keeps its default
// (and the Render Info says so). With `typed`, numbers are numbers where they parse.
function collectValues(typed = true) {
  const values = {};
  document.querySelectorAll("#fields [data-name], #job-fields [data-name]").forEach((input) => {
    const name = input.dataset.name, kind = input.dataset.kind;
    let value;
    if (kind === "bool") { if (!input.checked) return; value = true; }
    else if (kind === "controlnets") {
      const list = [];
      input.querySelectorAll("[data-control]").forEach((box) => {
        if (!box.checked) return;
        const strength = input.querySelector(`[data-strength="${CSS.escape(box.dataset.control)}"]`).value.trim();
        list.push(strength ? {type: box.dataset.control, strength: typed ? numberOr(strength) : strength} : {type: box.dataset.control});
      });
      if (!list.length) return;
      value = list;
    } else {
      const raw = input.value.trim();
      if (raw === "") return;
      if (!typed) value = raw;
      else if (kind === "int" || kind === "float") value = numberOr(raw);
      else if (kind === "json") { try { value = JSON.parse(raw); } catch (_) { value = raw; } }
      else if (kind === "file" && raw === "@keyframe") value = {keyframe: state.playing && state.playing.name === $("#source").value ? currentFrame() : 0};
      else value = raw;
    }
    values[name] = value;
  });
  return values;
}

function numberOr(raw) { const n = Number(raw); return raw !== "" && Number.isFinite(n) ? n : raw; }

function requestValues(full) {
  const values = collectValues(true);
  const request = {};
  for (const [name, value] of Object.entries(values)) {
    if (name.startsWith("context.")) (request.context ||= {})[name.slice(8)] = value;
    else request[name] = value;
  }
  request.source = $("#source").value || null;
  request.model = $("#model").value || null;
  if ($("#preset").value) request.preset = $("#preset").value;
  if (!full && state.range) request.frame_range = [state.range[0], state.range[1]];
  return request;
}

function clearErrors() { document.querySelectorAll(".err").forEach((n) => { n.textContent = ""; }); document.querySelectorAll(".invalid").forEach((n) => n.classList.remove("invalid")); }

function showErrors(errors) {
  clearErrors();
  for (const [field, message] of Object.entries(errors || {})) {
    const box = document.querySelector(`.err[data-for="${CSS.escape(field)}"]`) || document.querySelector('.err[data-for=""]');
    box.textContent = message;
    const input = document.querySelector(`[data-name="${CSS.escape(field)}"]`);
    if (input) {
      input.classList.add("invalid");
      const row = input.closest(".row");
      if (row && row.dataset.group && row.dataset.group !== state.group) switchGroup(row.dataset.group);
    }
  }
}

function switchGroup(group) {
  state.group = group;
  document.querySelectorAll(".subtab").forEach((b) => b.classList.toggle("active", b.dataset.group === group));
  document.querySelectorAll("#fields [data-group]").forEach((n) => { n.hidden = n.dataset.group !== group; });
}

// ---- estimates and Generate ---------------------------------------------------------------------

function scheduleEstimate() {
  clearTimeout(state.estimateTimer);
  state.estimateTimer = setTimeout(runEstimates, 300);
}

async function runEstimates() {
  if (state.shotId === null || !state.form || !$("#source").value) return;
  const seq = ++state.estimateSeq;
  $("#cost").classList.add("pending");
  const jobs = [api(`/api/shots/${state.shotId}/estimate`, {method: "POST", body: JSON.stringify(requestValues(true))})];
  if (state.range) jobs.push(api(`/api/shots/${state.shotId}/estimate`, {method: "POST", body: JSON.stringify(requestValues(false))}));
  const [full, ranged] = await Promise.all(jobs);
  if (seq !== state.estimateSeq) return;
  $("#cost").classList.remove("pending");
  $("#full-cost").textContent = full.body?.ok ? costText(full.body, true) : "";
  const shown = ranged || full;
  if (!shown.body?.ok) {
    showErrors(shown.body?.errors || {"": shown.body?.error || "cannot estimate"});
    $("#cost").textContent = "";
    return;
  }
  clearErrors();
  $("#cost").textContent = ranged ? costText(ranged.body, false) : "Drag on the source track (or type frame numbers) to render a range.";
}

function costText(result, brief) {
  if (result.state !== "queued" || !result.estimate) return result.reason || result.state;
  const e = result.estimate, s = result.settings;
  const [first, last] = s.frame_range.value;
  if (brief) return `frames ${first}–${last}: ≈ ${formatSeconds(e.seconds)} GPU, ${e.credits} credits`;
  return `frames ${first}–${last} (${e.frames} frames) · ${e.chunks} chunk${e.chunks === 1 ? "" : "s"} · ` +
    `${e.width}×${e.height} · ${e.steps} steps · ≈ ${formatSeconds(e.seconds)} GPU on ${e.calibration.device} · ${e.credits} credits`;
}

async function generate(full) {
  const request = requestValues(full);
  const button = full ? $("#generate-full") : $("#generate");
  button.disabled = true;
  const {body} = await api(`/api/shots/${state.shotId}/generate`, {method: "POST", body: JSON.stringify(request)});
  button.disabled = !full && !state.range;
  if (body?.ok) {
    clearErrors();
    notice(`Wrote ${body.written} into the shot; the daemon takes it from here.`);
    await refreshShot();
  } else {
    showErrors(body?.errors || {"": body?.error || "the request was refused"});
  }
}

function notice(text) { const n = $("#notice"); n.textContent = text; n.hidden = false; }

async function command(path) {
  const {ok, body} = await api(path, {method: "POST", body: "{}"});
  notice(ok ? body.message : body?.error || "refused");
  $("#notice").style.color = ok ? "" : "var(--bad)";
  refreshShot(); loadShots();
}

async function uploadStill(fileInput, select) {
  const file = fileInput.files[0];
  if (!file) return;
  const response = await fetch(`/api/shots/${state.shotId}/upload?name=${encodeURIComponent(file.name)}`, {method: "PUT", body: file});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { showErrors({[select.dataset.field]: body.error || "upload refused"}); return; }
  await refreshShot();
  select.value = body.written;
  scheduleEstimate();
}

// ---- Auto Prompt ---------------------------------------------------------------------------------

async function autoPrompt() {
  const status = $("#prompt-status");
  status.textContent = "describing the shot…";
  const payload = {source: $("#source").value, frame_range: state.range};
  const reference = $("#f-style_frame")?.value;
  if (reference && !reference.startsWith("@")) payload.reference = reference;
  const {ok, body} = await api(`/api/shots/${state.shotId}/prompt`, {method: "POST", body: JSON.stringify(payload)});
  if (!ok) { status.textContent = body?.error || "refused"; return; }
  const taskId = body.id;
  const poll = async () => {
    const {body: task} = await api(`/api/prompt/${taskId}`);
    if (task.state === "running") { status.textContent = `describing the shot… ${Math.round(task.seconds)} s`; setTimeout(poll, 700); return; }
    if (task.state === "failed") { status.textContent = task.error; return; }
    state.suggestion = task.prompt;
    status.textContent = "";
    $("#suggestion").textContent = task.prompt;
    $("#use-prompt").disabled = false;
    $("#auto-prompt").textContent = "Regenerate";
  };
  poll();
}

function usePrompt() {
  if (!state.suggestion) return;
  $("#f-prompt").value = state.suggestion;
  scheduleEstimate();
}

// ---- Render Info ---------------------------------------------------------------------------------

async function loadRenderInfo(jobId) {
  const {ok, body} = await api(`/api/jobs/${jobId}/render-info`);
  const box = $("#render-info");
  if (!ok) { box.replaceChildren(el("p", {class: "hint", text: body?.error || "no Render Info"})); return; }
  const m = body, out = m.output || {}, model = m.model || {}, plan = m.chunk_plan || {}, timing = m.timing || {};
  const settingsRows = Object.entries(m.settings || {}).map(([name, entry]) => el("tr", {},
    el("th", {text: name}), el("td", {class: "value", title: JSON.stringify(entry.value), text: clip(JSON.stringify(entry.value), 90)}),
    el("td", {}, el("span", {class: `from ${entry.from}`, text: entry.from}))));
  const chunkRows = (plan.chunks || []).map((c) => el("tr", {},
    el("td", {text: c.index}), el("td", {class: "value", text: (c.output_frames || c.source_frames || []).join("–")}),
    el("td", {class: "value", text: c.seed}), el("td", {text: c.seconds !== undefined ? `${Number(c.seconds).toFixed(1)} s` : ""}),
    el("td", {text: c.resumed ? "resumed" : ""})));
  box.replaceChildren(
    el("h3", {text: m.render_id || "render"}),
    el("div", {class: "muted"}, `${out.video} · ${out.width}×${out.height} · ${out.frames} frames at ${out.fps} fps · job ${m.job}`),
    el("h4", {text: "Lineage"}),
    el("div", {class: "chain", text: (m.lineage?.chain || []).join(" → ") + `  (source frames ${(m.frame_range || []).join("–")})`}),
    el("h4", {text: "Model"}),
    el("div", {}, `${model.id} · ${model.backend} · ${model.dtype} on ${model.device}`),
    el("h4", {text: "Settings"}),
    el("table", {class: "settings"}, el("tbody", {}, settingsRows)),
    el("h4", {text: "Chunk plan"}),
    el("div", {class: "muted"}, `context ${plan.context_size?.used} (asked ${plan.context_size?.requested}), overlap ${plan.context_overlap?.used}, constraint ${plan.frame_constraint}`),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {text: "#"}), el("th", {text: "output frames"}), el("th", {text: "seed"}), el("th", {text: "time"}), el("th"))), el("tbody", {}, chunkRows)),
    el("h4", {text: "Timing"}),
    el("div", {}, `${timing.seconds} s (estimate ${timing.estimate_seconds} s)`),
    ...(m.warnings?.length ? [el("h4", {text: "Warnings"}), el("ul", {}, m.warnings.map((w) => el("li", {text: w})))] : []),
    el("p", {}, el("a", {href: `/files/jobs/${jobId}/render-info.json`, target: "_blank", id: "render-info-json", text: "Render Info JSON"})),
  );
  box.dataset.job = jobId;
}

// ---- wiring --------------------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  $("#settings").hidden = name !== "settings";
  $("#info").hidden = name !== "info";
}

function init() {
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
  document.querySelectorAll(".subtab").forEach((t) => t.addEventListener("click", () => switchGroup(t.dataset.group)));
  $("#shot-filter").addEventListener("input", drawShots);
  $("#model").addEventListener("change", () => { drawFields(); clearErrors(); scheduleEstimate(); });
  $("#source").addEventListener("change", () => { setRange(null, false); const t = trackByName($("#source").value); if (t) play(t); scheduleEstimate(); drawTimeline(); });
  $("#preset").addEventListener("change", () => {
    const preset = state.form.presets.find((p) => p.name === $("#preset").value);
    $("#preset-description").textContent = preset?.description || "";
    if (preset?.values?.model && state.form.models.some((m) => m.id === preset.values.model)) { $("#model").value = preset.values.model; drawFields(); }
    scheduleEstimate();
  });
  const typed = () => {
    const a = parseInt($("#range-first").value, 10), b = parseInt($("#range-last").value, 10);
    setRange(Number.isInteger(a) && Number.isInteger(b) ? [a, b] : null, true, true);
  };
  $("#range-first").addEventListener("change", typed);
  $("#range-last").addEventListener("change", typed);
  $("#generate").addEventListener("click", () => generate(false));
  $("#generate-full").addEventListener("click", () => generate(true));
  $("#pause").addEventListener("click", () => command("/api/daemon/pause"));
  $("#zoom-in").addEventListener("click", () => setZoom(state.zoom * 2));
  $("#zoom-out").addEventListener("click", () => setZoom(state.zoom / 2));
  $("#zoom-fit").addEventListener("click", () => setZoom(1));
  $("#resume").addEventListener("click", () => command("/api/daemon/resume"));
  const player = $("#player");
  player.addEventListener("timeupdate", showFrame);
  player.addEventListener("seeked", showFrame);
  player.addEventListener("loadedmetadata", showFrame);
  player.addEventListener("play", () => { $("#play").textContent = "❚❚"; });
  player.addEventListener("pause", () => { $("#play").textContent = "▶"; });
  $("#play").addEventListener("click", () => (player.paused ? player.play() : player.pause()));
  $("#step-back").addEventListener("click", () => { player.pause(); seekFrame(Math.max(0, (currentFrame() ?? 0) - 1)); });
  $("#step-fwd").addEventListener("click", () => { player.pause(); seekFrame((currentFrame() ?? 0) + 1); });
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, textarea, select")) return;
    if (e.key === " ") { e.preventDefault(); $("#play").click(); }
    if (e.key === "ArrowLeft") $("#step-back").click();
    if (e.key === "ArrowRight") $("#step-fwd").click();
  });
  const frameLoop = () => { if (!player.paused) showFrame(); requestAnimationFrame(frameLoop); };
  requestAnimationFrame(frameLoop);
  loadForm().then(loadShots);
  setInterval(refreshShot, 1000);
  setInterval(loadShots, 5000);
}

init();
