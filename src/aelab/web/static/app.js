// The aelab latent-space explorer: the map of a run's test codes on a canvas, the selected item's images and
// code, one slider per latent dimension, interpolations and samples; for a multimodal run, a text box whose
// word is turned into images, the word and nearest recordings of whatever code is on screen, and (with audio)
// the test recordings as MFCC pictures and as points on the map. It talks only to the server that sent it.
//
// Every answer is checked against what is asked now: an answer for another run (the picker moved on) or for
// an older request of the same kind is dropped, so the page never shows one run while talking to another.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const NO_LABEL = "#7a8290";
  const MAX_SLIDERS = 16; // beyond this many dimensions, a chooser picks which 16 are shown
  const PICK_RADIUS = 8; // CSS pixels from a point that still count as on it
  const BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"; // 1 clear pixel
  const ACTIVE = 1e-6; // a unit of a sparse code above this is active

  const state = {
    run: null, info: null,
    n: 0, wx: null, wy: null, labels: null, items: null, // the map: world coordinates, label, test index
    sx: null, sy: null, grid: new Map(), // screen coordinates of the last draw and a grid over them
    bounds: null, zoom: 1, panX: 0, panY: 0,
    hover: -1, selected: -1, second: -1, marker: null,
    code: null, base: null, dims: [],
    decoding: false, decodeAgain: false, drawn: 0,
    texting: false, textAgain: false, textAsked: 0, // the text box: one request in flight, the latest text next
    asked: 0, // requests for the selection are numbered: an answer to an older one is dropped
    generation: 0, settled: 0, // each load of a run is numbered: answers for an older one are dropped
    activeUnits: false, // a sparse code's sliders: the units active in the code on screen
    recs: null, recSelected: -1, recAsked: 0, // a run with audio: its recordings on the map, the one picked
  };
  const canvas = $("map");
  const ctx = canvas.getContext("2d");

  // ------------------------------------------------------------------ talking to the server
  function withRun(path) {
    if (!state.run) return path;
    return path + (path.includes("?") ? "&" : "?") + "run=" + encodeURIComponent(state.run);
  }

  async function api(path, body) {
    const init = body === undefined ? {} :
      { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
    const response = await fetch(withRun(path), init);
    let answer = null;
    try { answer = await response.json(); } catch (error) { answer = null; }
    if (!response.ok || answer === null) throw new Error(inWords(answer && answer.detail, response.status));
    return answer;
  }

  // A server error in words: FastAPI's validation errors come as a list of {loc, msg}
  function inWords(detail, status) {
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail.map((e) => {
        const field = (e.loc || []).filter((part) => !["body", "query", "path"].includes(part)).join(" ");
        return (field ? `${field}: ` : "") + String(e.msg || "is not valid").replace(/^Value error, /, "");
      }).join("; ");
    }
    return `the server could not answer (HTTP ${status})`;
  }

  // An answer asked for by a run the page no longer shows: dropped, without a word to the user
  class Stale extends Error {}
  function forThisRun(promise) {
    const generation = state.generation;
    return promise.then((answer) => {
      if (generation !== state.generation) throw new Stale("stale");
      return answer;
    });
  }
  function sayUnlessStale(error) { if (!(error instanceof Stale)) say(error.message); }

  let statusTimer = null;
  function say(message) {
    const el = $("status");
    el.textContent = message;
    el.classList.add("shown");
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => el.classList.remove("shown"), 3500);
  }

  function fmt(v) {
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  function colour(label) {
    return label < 0 ? NO_LABEL : PALETTE[label % PALETTE.length];
  }

  // Text on a class colour: black on the light ones (yellow-green, cyan), white on the rest
  // The text colour for a chip of colour `hex`: near-black or white, whichever contrasts more by WCAG 2's
  // relative luminance (white on the palette's yellow-green 8 or cyan 9 reads at about 2:1; dark at 8-9:1)
  function ink(hex) {
    const lin = (c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    const [r, g, b] = [1, 3, 5].map((k) => lin(parseInt(hex.slice(k, k + 2), 16) / 255));
    const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    const dark = 0.0056; // #111
    return (lum + 0.05) / (dark + 0.05) > 1.05 / (lum + 0.05) ? "#111" : "#fff";
  }

  // ------------------------------------------------------------------ the map
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    draw();
  }

  function setBounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < state.n; i++) {
      x0 = Math.min(x0, state.wx[i]); x1 = Math.max(x1, state.wx[i]);
      y0 = Math.min(y0, state.wy[i]); y1 = Math.max(y1, state.wy[i]);
    }
    for (let r = 0; state.recs && r < state.recs.n; r++) { // the recordings too: all in view at first
      x0 = Math.min(x0, state.recs.x[r]); x1 = Math.max(x1, state.recs.x[r]);
      y0 = Math.min(y0, state.recs.y[r]); y1 = Math.max(y1, state.recs.y[r]);
    }
    if (!isFinite(x0)) { x0 = -1; x1 = 1; y0 = -1; y1 = 1; }
    const padX = (x1 - x0) * 0.05 || 1, padY = (y1 - y0) * 0.05 || 1;
    state.bounds = { x0: x0 - padX, x1: x1 + padX, y0: y0 - padY, y1: y1 + padY };
    state.zoom = 1; state.panX = 0; state.panY = 0;
  }

  // world -> CSS pixels of the canvas (y up), and back
  function scale() {
    const rect = canvas.getBoundingClientRect(), b = state.bounds;
    const s = Math.min(rect.width / (b.x1 - b.x0), rect.height / (b.y1 - b.y0)) * state.zoom;
    return { s, cx: rect.width / 2 + state.panX, cy: rect.height / 2 + state.panY,
      mx: (b.x0 + b.x1) / 2, my: (b.y0 + b.y1) / 2 };
  }

  function toScreen(x, y, t = scale()) {
    return [t.cx + (x - t.mx) * t.s, t.cy - (y - t.my) * t.s];
  }

  function toWorld(px, py, t = scale()) {
    return [t.mx + (px - t.cx) / t.s, t.my - (py - t.cy) / t.s];
  }

  function draw() {
    if (!state.bounds) return;
    const ratio = canvas.width / Math.max(1, canvas.getBoundingClientRect().width);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const rect = canvas.getBoundingClientRect();
    ctx.clearRect(0, 0, rect.width, rect.height);
    const t = scale();
    const size = state.n > 5000 ? 2.5 : 3.5;
    state.grid = new Map();
    let drawn = 0;
    const byColour = new Map();
    for (let i = 0; i < state.n; i++) {
      const [px, py] = toScreen(state.wx[i], state.wy[i], t);
      state.sx[i] = px; state.sy[i] = py;
      if (px < -size || py < -size || px > rect.width + size || py > rect.height + size) continue;
      drawn++;
      const key = Math.floor(px / 16) + "," + Math.floor(py / 16);
      if (!state.grid.has(key)) state.grid.set(key, []);
      state.grid.get(key).push(i);
      const c = colour(state.labels[i]);
      if (!byColour.has(c)) byColour.set(c, []);
      byColour.get(c).push(i);
    }
    ctx.globalAlpha = 0.75;
    for (const [c, ids] of byColour) { // one fill style per class: 10,000 points in a few milliseconds
      ctx.fillStyle = c;
      for (const i of ids) ctx.fillRect(state.sx[i] - size / 2, state.sy[i] - size / 2, size, size);
    }
    ctx.globalAlpha = 1;
    drawRecordings(t, rect);
    ring(state.hover, "#1d2330", 6);
    ring(state.second, "#d0021b", 8);
    ring(state.selected, "#000", 8);
    if (state.marker) {
      const [px, py] = toScreen(state.marker[0], state.marker[1], t);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.moveTo(px - 7, py); ctx.lineTo(px + 7, py); ctx.moveTo(px, py - 7); ctx.lineTo(px, py + 7);
      ctx.stroke();
    }
    state.drawn = drawn;
    canvas.dataset.points = String(drawn);
  }

  // A run with audio: its recordings' codes as diamonds, coloured by digit, over the image codes
  function drawRecordings(t, rect) {
    const recs = state.recs;
    let drawn = 0;
    if (recs && $("rec-layer").checked) {
      ctx.lineWidth = 1.5;
      for (let r = 0; r < recs.n; r++) {
        const [px, py] = toScreen(recs.x[r], recs.y[r], t);
        recs.sx[r] = px; recs.sy[r] = py;
        if (px < -6 || py < -6 || px > rect.width + 6 || py > rect.height + 6) continue;
        drawn++;
        ctx.strokeStyle = colour(recs.digit[r]);
        ctx.beginPath(); ctx.moveTo(px, py - 4.5); ctx.lineTo(px + 4.5, py); ctx.lineTo(px, py + 4.5);
        ctx.lineTo(px - 4.5, py); ctx.closePath(); ctx.stroke();
      }
      if (state.recSelected >= 0) {
        const r = state.recSelected;
        ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
        ctx.beginPath(); ctx.arc(recs.sx[r], recs.sy[r], 9, 0, 2 * Math.PI); ctx.stroke();
      }
    }
    canvas.dataset.recordings = String(drawn);
  }

  // What is under (px, py): [test item, -1] or [-1, recording], whichever is drawn nearer; -1s for nothing
  function pointAt(px, py) {
    const i = nearest(px, py), r = nearestRecording(px, py);
    if (i < 0 || r < 0) return [i, r];
    const di = (state.sx[i] - px) ** 2 + (state.sy[i] - py) ** 2;
    const dr = (state.recs.sx[r] - px) ** 2 + (state.recs.sy[r] - py) ** 2;
    return dr < di ? [-1, r] : [i, -1];
  }

  // The recording drawn within PICK_RADIUS of (px, py), nearest first; -1 when none (or the layer is off)
  function nearestRecording(px, py) {
    const recs = state.recs;
    if (!recs || !$("rec-layer").checked) return -1;
    let best = -1, bestD = PICK_RADIUS * PICK_RADIUS;
    for (let r = 0; r < recs.n; r++) {
      const d = (recs.sx[r] - px) ** 2 + (recs.sy[r] - py) ** 2;
      if (d <= bestD) { bestD = d; best = r; }
    }
    return best;
  }

  function ring(i, stroke, radius) {
    if (i < 0) return;
    ctx.strokeStyle = stroke; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(state.sx[i], state.sy[i], radius, 0, 2 * Math.PI); ctx.stroke();
  }

  function nearest(px, py) {
    let best = -1, bestD = PICK_RADIUS * PICK_RADIUS;
    const gx = Math.floor(px / 16), gy = Math.floor(py / 16);
    for (let dx = -1; dx <= 1; dx++) {
      for (let dy = -1; dy <= 1; dy++) {
        for (const i of state.grid.get((gx + dx) + "," + (gy + dy)) || []) {
          const d = (state.sx[i] - px) ** 2 + (state.sy[i] - py) ** 2;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  function mousePos(event) {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  let drag = null;
  canvas.addEventListener("mousedown", (event) => {
    const [px, py] = mousePos(event);
    drag = { px, py, panX: state.panX, panY: state.panY, moved: false };
  });
  window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  canvas.addEventListener("mousemove", (event) => {
    const [px, py] = mousePos(event);
    if (drag && (event.buttons & 1)) {
      if (Math.abs(px - drag.px) + Math.abs(py - drag.py) > 3) drag.moved = true;
      if (drag.moved) {
        state.panX = drag.panX + px - drag.px; state.panY = drag.panY + py - drag.py;
        hideTooltip(); draw(); return;
      }
    }
    const [i, r] = pointAt(px, py);
    if (i !== state.hover) { state.hover = i; draw(); }
    if (i >= 0) showTooltip(i, state.sx[i], state.sy[i]);
    else if (r >= 0) showRecordingTooltip(r);
    else hideTooltip();
  });
  canvas.addEventListener("mouseleave", () => { state.hover = -1; hideTooltip(); draw(); });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [px, py] = mousePos(event);
    const before = toWorld(px, py);
    state.zoom = Math.min(200, Math.max(0.5, state.zoom * Math.exp(-event.deltaY * 0.0015)));
    const [sx, sy] = toScreen(before[0], before[1]);
    state.panX += px - sx; state.panY += py - sy;
    hideTooltip(); draw();
  }, { passive: false });
  canvas.addEventListener("click", (event) => {
    if (drag && drag.moved) return;
    const [px, py] = mousePos(event);
    const [i, r] = pointAt(px, py);
    if (i >= 0) {
      choose(i, event.shiftKey);
    } else if (r >= 0) {
      pickRecording(r);
    } else if (state.info.map.linear) {
      decodePosition(...toWorld(px, py));
    } else {
      say("a t-SNE map has no inverse: click a point, or serve the run with --map pca to decode any position");
    }
  });
  $("reset-view").addEventListener("click", () => { state.zoom = 1; state.panX = 0; state.panY = 0; draw(); });

  // Select point i (shift: interpolate to it from the selected one)
  function choose(i, second) {
    const done = second && state.selected >= 0 && i !== state.selected ? pickSecond(i) : select(i);
    done.catch(sayUnlessStale);
  }

  // The keyboard: the arrows move a cursor (the hover ring) to the nearest point in their direction, Enter
  // selects it (shift+Enter interpolates to it), as a click would
  const DIRECTIONS = { ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  canvas.addEventListener("keydown", (event) => {
    if (!state.bounds || state.n === 0) return;
    if (event.key in DIRECTIONS) {
      event.preventDefault();
      const from = state.hover >= 0 ? state.hover : state.selected;
      const next = from >= 0 ? neighbour(from, ...DIRECTIONS[event.key]) : central();
      if (next >= 0) { state.hover = next; draw(); showTooltip(next, state.sx[next], state.sy[next]); }
    } else if (event.key === "Enter" && state.hover >= 0) {
      event.preventDefault();
      choose(state.hover, event.shiftKey);
    }
  });

  // The drawn point nearest point i within the 90-degree cone around direction (dx, dy) (screen pixels, y down)
  function neighbour(i, dx, dy) {
    const rect = canvas.getBoundingClientRect();
    let best = -1, bestD = Infinity;
    for (let j = 0; j < state.n; j++) {
      const ex = state.sx[j] - state.sx[i], ey = state.sy[j] - state.sy[i];
      const along = ex * dx + ey * dy, across = Math.abs(ex * dy - ey * dx);
      if (j === i || along <= 0 || across > along || !onCanvas(j, rect)) continue;
      const d = ex * ex + ey * ey;
      if (d < bestD) { bestD = d; best = j; }
    }
    return best >= 0 ? best : i;
  }

  // The drawn point nearest the middle of the canvas: where the keyboard starts
  function central() {
    const rect = canvas.getBoundingClientRect();
    let best = -1, bestD = Infinity;
    for (let j = 0; j < state.n; j++) {
      const d = (state.sx[j] - rect.width / 2) ** 2 + (state.sy[j] - rect.height / 2) ** 2;
      if (onCanvas(j, rect) && d < bestD) { bestD = d; best = j; }
    }
    return best;
  }

  function onCanvas(j, rect) {
    return state.sx[j] >= 0 && state.sy[j] >= 0 && state.sx[j] <= rect.width && state.sy[j] <= rect.height;
  }

  function showTooltip(i, px, py) {
    const index = state.items[i];
    const img = $("tooltip-img");
    const src = withRun(`/api/images/${index}`);
    if (img.getAttribute("src") !== src) img.src = src;
    img.hidden = false;
    const label = state.labels[i];
    const name = label < 0 ? "" : (state.info.classes ? state.info.classes[label] : String(label));
    $("tooltip-label").textContent = `#${index}${name ? " · " + name : ""}`;
    placeTooltip(px, py);
  }

  function showRecordingTooltip(r) {
    $("tooltip-img").hidden = true;
    $("tooltip-label").textContent = `recording ${recordingName(r)} · spoken ${state.recs.digit[r]}`;
    placeTooltip(state.recs.sx[r], state.recs.sy[r]);
  }

  function placeTooltip(px, py) {
    const tip = $("tooltip");
    tip.hidden = false;
    const rect = canvas.getBoundingClientRect();
    tip.style.left = `${Math.min(px + 12, rect.width - 90)}px`;
    tip.style.top = `${Math.max(py - 100, 4)}px`;
  }

  function hideTooltip() { $("tooltip").hidden = true; }

  // ------------------------------------------------------------------ the selected code
  async function select(i) {
    state.selected = i; state.second = -1; state.marker = null;
    draw();
    const asked = ++state.asked;
    const item = await forThisRun(api(`/api/items/${state.items[i]}`));
    if (asked !== state.asked) return;
    $("sel-title").textContent = `test item #${item.index}${item.class !== null ? " · " + item.class : ""}`;
    $("sel-image").src = item.image;
    $("sel-recon").src = item.reconstruction;
    $("sel-recon-caption").textContent = "reconstruction";
    $("sel-text").textContent = item.text ? `its own text: "${item.text}"` : "";
    showCodeModal(item); // the item's word and recordings are its code's: shown now, and again when decoded
    state.base = item.z.slice();
    $("reset-code").disabled = false;
    setCode(item.z);
    $("strip").replaceChildren();
    $("strip-hint").textContent = "shift-click a second point";
  }

  async function pickSecond(i) {
    state.second = i;
    draw();
    const a = state.items[state.selected], b = state.items[i];
    const asked = ++state.asked;
    const answer = await forThisRun(api("/api/interpolate", { a, b, steps: 10 }));
    if (asked !== state.asked) return;
    $("strip-hint").textContent = `from #${a} to #${b} · click a step to load its code`;
    const strip = $("strip");
    strip.replaceChildren(...answer.images.map((src, k) => {
      const img = new Image();
      img.src = src;
      img.title = `step ${k + 1} of ${answer.images.length}`;
      img.addEventListener("click", () => setCode(answer.z[k]));
      return img;
    }));
  }

  function decodePosition(x, y) {
    const m = state.info.map;
    const z = m.origin.map((o, d) => o + x * m.axes[0][d] + y * m.axes[1][d]);
    state.marker = [x, y]; state.selected = -1; state.second = -1; state.asked++;
    draw();
    $("sel-title").textContent = `map position (${fmt(x)}, ${fmt(y)})`;
    $("sel-image").src = BLANK; // no test item here
    $("sel-recon").src = BLANK;
    $("sel-recon-caption").textContent = "reconstruction";
    $("sel-text").textContent = "";
    loadCode(z);
  }

  // A code from elsewhere than the map (a generated image, a recording): the selected test item stays as it
  // is, the second figure shows what the code came from, captioned so
  function showForeignCode(title, src, caption, z) {
    state.asked++;
    $("sel-title").textContent = title;
    $("sel-recon").src = src;
    $("sel-recon-caption").textContent = caption;
    loadCode(z);
  }

  function loadCode(z) {
    state.base = z.slice();
    $("reset-code").disabled = false;
    setCode(z);
  }

  function setCode(z) {
    state.code = z.slice();
    if (state.activeUnits) state.dims = activeDims(state.code);
    buildSliders();
    drawBars();
    requestDecode();
  }

  // The code on screen to its image, and (multimodal runs) its word and nearest recordings; one request at a
  // time, the latest code sent when it is back
  function requestDecode() {
    if (state.decoding) { state.decodeAgain = true; return; }
    state.decoding = true;
    forThisRun(api("/api/decode", { z: state.code })).then((answer) => {
      $("decoded").src = answer.image;
      showCodeModal(answer);
    }).catch(sayUnlessStale).finally(() => {
      state.decoding = false;
      if (state.decodeAgain) { state.decodeAgain = false; requestDecode(); }
    });
  }

  function drawBars() {
    const bars = $("code-bars"), c = bars.getContext("2d");
    const ratio = window.devicePixelRatio || 1, rect = bars.getBoundingClientRect();
    bars.width = Math.round(rect.width * ratio); bars.height = Math.round(rect.height * ratio);
    c.setTransform(ratio, 0, 0, ratio, 0, 0);
    c.clearRect(0, 0, rect.width, rect.height);
    if (!state.code) return;
    const st = state.info.stats, d = state.code.length;
    let reach = 1e-6;
    for (let k = 0; k < d; k++) reach = Math.max(reach, Math.abs(st.min[k]), Math.abs(st.max[k]), Math.abs(state.code[k]));
    const mid = rect.height / 2, w = rect.width / d;
    c.strokeStyle = "#c5cbd4"; c.beginPath(); c.moveTo(0, mid); c.lineTo(rect.width, mid); c.stroke();
    for (let k = 0; k < d; k++) {
      const v = state.code[k], h = (v / reach) * (mid - 4);
      c.fillStyle = v >= 0 ? "#1f77b4" : "#ff7f0e";
      c.fillRect(k * w + w * 0.12, Math.min(mid, mid - h), Math.max(1, w * 0.76), Math.abs(h));
    }
  }

  // ------------------------------------------------------------------ multimodal runs
  // The code on screen in the other modalities: the word decoded from it, the test recordings nearest it.
  // ``answer``: the decoding of the code (or a test item, whose code it is); null hides both rows.
  function showCodeModal(answer) {
    const hasWord = !!answer && typeof answer.word === "string";
    const recordings = answer && Array.isArray(answer.nearest_recordings) ? answer.nearest_recordings : null;
    $("sel-word-row").hidden = !hasWord;
    $("sel-rec-row").hidden = !recordings;
    $("sel-modal").hidden = !hasWord && !recordings;
    if (hasWord) $("sel-word").textContent = answer.word === "" ? "(nothing)" : answer.word;
    if (recordings) $("sel-recordings").replaceChildren(...recordingChips(recordings));
  }

  // Recordings as chips of their digit's colour; a click picks the recording
  function recordingChips(recordings) {
    return recordings.map((r) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.textContent = String(r.digit);
      chip.style.background = colour(r.digit);
      chip.style.color = ink(colour(r.digit));
      chip.dataset.id = String(r.id);
      chip.title = `recording ${r.recording !== null ? "#" + r.recording : "of test item #" + r.row}, ` +
        `distance ${fmt(r.distance)}; click: its MFCC picture and what its code gives`;
      chip.addEventListener("click", () => pickRecording(r.id));
      return chip;
    });
  }

  // The text box: checked in the page first (alphabet, length), then turned into images by the server.
  // Whatever the box holds, the images shown are of that text or there are none.
  function requestText() {
    const input = $("text-input");
    const text = input.value;
    const t = state.info.text;
    $("text-count").textContent = `${text.length} / ${t.max_length}`;
    $("text-count").classList.toggle("bad", text.length > t.max_length);
    const bad = [...text].find((c) => !t.alphabet.includes(c));
    const problem = bad !== undefined ? `"${bad}" is not in the model's alphabet (letters, digits, spaces and ${t.alphabet.slice(1, 7)})`
      : text.length > t.max_length ? `the text has ${text.length} characters; this model reads at most ${t.max_length}: shorten it`
      : "";
    input.classList.toggle("bad", problem !== "");
    if (problem || text.trim() === "") {
      clearText();
      $("text-word").textContent = problem;
      $("text-word").classList.toggle("bad", problem !== "");
      return;
    }
    if (state.texting) { state.textAgain = true; return; } // the latest text is sent when this answer is back
    state.texting = true;
    const asked = ++state.textAsked;
    forThisRun(api("/api/text", { text, n: 8, seed: 0 })).then((answer) => {
      if (asked === state.textAsked) showText(text, answer);
    }).catch((error) => {
      if (error instanceof Stale || asked !== state.textAsked) return;
      clearText();
      $("text-word").textContent = error.message;
      $("text-word").classList.add("bad");
    }).finally(() => {
      state.texting = false;
      if (state.textAgain) { state.textAgain = false; requestText(); }
    });
  }

  function clearText() {
    state.textAsked++; // an answer still on its way is for an older text
    $("text-images").replaceChildren();
    $("text-unknown").hidden = true;
    $("text-rec-row").hidden = true;
    delete document.body.dataset.text;
  }

  function showText(text, answer) {
    $("text-word").classList.remove("bad");
    $("text-word").textContent = `reads back as "${answer.word}" · click an image to load its code`;
    const unknown = answer.unknown || [];
    $("text-unknown").hidden = unknown.length === 0;
    $("text-unknown").textContent = unknown.length === 0 ? "" : `${unknown.map((w) => `"${w}"`).join(", ")} ` +
      `${unknown.length === 1 ? "is not a word" : "are not words"} of the texts the model was trained on: ` +
      "it reads the letters, but has never seen them together";
    $("text-images").replaceChildren(...answer.images.map((src, k) => {
      const img = new Image();
      img.src = src;
      img.title = k === 0 ? `the code of "${text}"` : `drawn from q(z | "${text}")`;
      img.addEventListener("click", () => {
        const what = `generated from "${text}"` + (k === 0 ? "" : ` (draw ${k})`);
        showForeignCode(what, src, what, answer.z[k]);
      });
      return img;
    }));
    const recordings = Array.isArray(answer.nearest_recordings) ? answer.nearest_recordings : null;
    $("text-rec-row").hidden = !recordings;
    if (recordings) $("text-recordings").replaceChildren(...recordingChips(recordings));
    document.body.dataset.text = text; // for scripts and tests: the text whose images are shown
  }
  $("text-input").addEventListener("input", requestText);
  // A paste longer than the box's limit is kept whole (the browser would cut it silently) and flagged
  $("text-input").addEventListener("paste", (event) => {
    const input = event.target, pasted = event.clipboardData ? event.clipboardData.getData("text") : "";
    const length = input.value.length - (input.selectionEnd - input.selectionStart) + pasted.length;
    if (!state.info.text || length <= state.info.text.max_length) return;
    event.preventDefault();
    input.setRangeText(pasted, input.selectionStart, input.selectionEnd, "end");
    requestText();
  });

  // ------------------------------------------------------------------ sound (multimodal runs with audio)
  function recordingName(r) {
    const id = state.recs.recording[r];
    return id >= 0 ? `#${id}` : `of test item #${state.recs.row[r]}`;
  }

  // Recording r: its MFCC picture and the image and word its code gives; its code goes on screen
  async function pickRecording(r) {
    state.recSelected = r;
    $("rec-picker").value = String(r);
    draw();
    const asked = ++state.recAsked;
    let rec;
    try {
      rec = await forThisRun(api(`/api/recordings/${r}`));
    } catch (error) { sayUnlessStale(error); return; }
    if (asked !== state.recAsked) return;
    const name = `recording ${recordingName(r)} · spoken ${rec.digit}`;
    $("rec-mfcc").src = rec.mfcc;
    $("rec-mfcc-caption").textContent = `MFCCs of ${name}`;
    $("rec-recon").src = rec.reconstruction;
    $("rec-image").src = rec.image;
    $("rec-word-row").hidden = typeof rec.word !== "string";
    $("rec-word").textContent = rec.word === "" ? "(nothing)" : (rec.word || "");
    showForeignCode(name, rec.image, `from ${name}`, rec.z);
    document.body.dataset.recording = String(r); // for scripts and tests: the recording shown
  }

  $("rec-picker").addEventListener("change", () => {
    if ($("rec-picker").value !== "") pickRecording(Number($("rec-picker").value));
  });
  $("rec-layer").addEventListener("change", () => { hideTooltip(); draw(); });

  function showRecordings(answer) {
    const list = answer ? answer.recordings : [];
    const n = list.length;
    state.recs = answer ? {
      n, x: Float32Array.from(list, (r) => r.x), y: Float32Array.from(list, (r) => r.y),
      digit: Int32Array.from(list, (r) => r.digit), row: Int32Array.from(list, (r) => r.row),
      recording: Int32Array.from(list, (r) => (r.recording === null ? -1 : r.recording)),
      sx: new Float32Array(n), sy: new Float32Array(n), placement: answer.placement,
    } : null;
    state.recSelected = -1;
    $("sound-panel").hidden = !answer;
    $("rec-layer-label").hidden = !answer;
    const order = [...list.keys()].sort((a, b) => list[a].digit - list[b].digit || a - b);
    $("rec-picker").replaceChildren(new Option(answer ? `pick one of ${n} test recordings` : "", ""),
      ...order.map((r) => new Option(`spoken ${list[r].digit} · recording ${recordingName(r)}`, String(r))));
    for (const id of ["rec-mfcc", "rec-recon", "rec-image"]) $(id).src = BLANK;
    $("rec-mfcc-caption").textContent = "MFCCs over time";
    $("rec-word-row").hidden = true;
    delete document.body.dataset.recording;
  }

  // ------------------------------------------------------------------ sliders
  // Beyond MAX_SLIDERS dimensions a chooser picks the sliders: the most spread units, blocks of 16, and for a
  // sparse code (where the most spread units are mostly zero for any one item) the units active in the code on
  // screen, the default there.
  function chooserOptions() {
    const d = state.info.latent_dim, std = state.info.stats.std;
    const chooser = $("dim-chooser");
    const spread = [...Array(d).keys()].sort((a, b) => std[b] - std[a]).slice(0, MAX_SLIDERS);
    const options = [{ label: `the ${MAX_SLIDERS} most spread`, dims: spread }];
    if (state.info.sparse) options.unshift({ label: "this item's active units", active: true });
    for (let start = 0; start < d; start += MAX_SLIDERS) {
      const end = Math.min(d, start + MAX_SLIDERS);
      options.push({ label: `z${start + 1} to z${end}`, dims: [...Array(end - start).keys()].map((k) => k + start) });
    }
    chooser.replaceChildren(...options.map((o, k) => new Option(o.label, String(k))));
    chooser.hidden = false;
    const use = (option) => {
      state.activeUnits = !!option.active;
      state.dims = option.active ? (state.code ? activeDims(state.code) : spread) : option.dims;
      codeHint();
    };
    chooser.onchange = () => { use(options[Number(chooser.value)]); buildSliders(); };
    chooser.value = "0";
    use(options[0]);
  }

  // The units of ``code`` that are active (above ACTIVE), largest first, at most MAX_SLIDERS
  function activeDims(code) {
    return [...code.keys()].filter((k) => Math.abs(code[k]) > ACTIVE)
      .sort((a, b) => Math.abs(code[b]) - Math.abs(code[a])).slice(0, MAX_SLIDERS);
  }

  function codeHint() {
    const d = state.info.latent_dim;
    let hint = d > MAX_SLIDERS ? `${state.dims.length} of ${d} dimensions` : "";
    if (state.activeUnits && state.code) {
      const active = state.code.filter((v) => Math.abs(v) > ACTIVE).length;
      hint = `${active} of ${d} units active in this code` + (active > MAX_SLIDERS ? `: the ${MAX_SLIDERS} largest` : "");
    }
    $("code-hint").textContent = hint;
  }

  function buildSliders() {
    const sliders = $("sliders");
    const st = state.info.stats;
    codeHint();
    sliders.replaceChildren(...state.dims.map((d) => {
      const span = (st.max[d] - st.min[d]) || 2 * (st.std[d] || 1);
      const lo = Math.min(st.min[d] - 0.25 * span, state.code ? state.code[d] : 0);
      const hi = Math.max(st.max[d] + 0.25 * span, state.code ? state.code[d] : 0);
      const row = document.createElement("label");
      row.className = "slider";
      const name = document.createElement("span");
      name.textContent = `z${d + 1}`;
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: String(lo), max: String(hi), step: String((hi - lo) / 400) });
      input.dataset.dim = String(d);
      input.value = String(state.code ? state.code[d] : st.mean[d]);
      input.disabled = !state.code;
      const out = document.createElement("output");
      out.textContent = state.code ? fmt(state.code[d]) : "";
      input.addEventListener("input", () => {
        state.code[d] = Number(input.value);
        out.textContent = fmt(state.code[d]);
        drawBars();
        requestDecode();
      });
      row.append(name, input, out);
      return row;
    }));
  }

  $("reset-code").addEventListener("click", () => { if (state.base) setCode(state.base); });

  $("sample-button").addEventListener("click", () => {
    forThisRun(api("/api/sample", { n: 8 })).then((answer) => {
      $("samples").replaceChildren(...answer.images.map((src) => { const img = new Image(); img.src = src; return img; }));
    }).catch(sayUnlessStale);
  });

  // ------------------------------------------------------------------ loading a run
  function showInfo(info) {
    const parts = [info.model, info.dataset, `latent ${info.latent_dim}`, `${info.epochs} epoch${info.epochs === 1 ? "" : "s"}`];
    if (info.test_loss !== null && info.test_loss !== undefined) parts.push(`test loss ${Number(info.test_loss).toPrecision(4)}`);
    if (info.modalities) parts.push(info.modalities.join(" + "));
    parts.push(info.device);
    $("run-info").textContent = parts.join(" · ");
    document.title = `${info.run} · aelab latent-space explorer`;
    $("run-files").replaceChildren(...info.files.filter((f) => f.endsWith(".html")).map((f) => {
      const a = document.createElement("a");
      a.href = withRun(`/files/${encodeURIComponent(f)}`); a.textContent = f; a.target = "_blank";
      return a;
    }));
    const warnings = info.warnings || []; // the metrics of evaluation.json that sit at chance, each with its fix
    $("run-warnings").hidden = warnings.length === 0;
    $("run-warnings").replaceChildren(...warnings.map((w) => {
      const li = document.createElement("li");
      li.textContent = `This run learned little: ${w}`;
      return li;
    }));
    const m = info.map;
    const what = { tsne: "t-SNE", pca: "PCA", direct: "the codes themselves" }[m.method] || m.method;
    document.body.classList.toggle("flat", !!info.flat); // a table's rows: bars, wide, and "row" in the captions
    $("sel-image-caption").textContent = info.flat ? "test row" : "test image";
    const of = info.modalities ? ` of the ${info.map_modality}s` : (info.flat ? " of the rows" : "");
    const recs = state.recs ? ` · ◇ ${state.recs.n.toLocaleString()} test recordings (` +
      (state.recs.placement === "projected" ? "their codes, projected" : "each among the image codes nearest its code") + ")" : "";
    $("map-title").textContent = `${m.points.toLocaleString()} test codes${of}, ${what}${recs}`;
    $("map-axes").textContent = m.linear ? `x: ${m.axis_labels[0]}` + (m.axis_labels[1] ? ` · y: ${m.axis_labels[1]}` : "") : "";
    $("map-hint").textContent = (m.linear ? "hover: image · click: select, or decode an empty spot" : "hover: image · click: select") +
      " · shift-click: interpolate · wheel: zoom · arrow keys and Enter: the same from the keyboard";
    $("sample-panel").hidden = !info.can_sample;
    $("text-panel").hidden = !info.text;
    if (info.text) {
      // the box's limit, shown and kept by the browser when typing; a longer paste is kept and flagged
      $("text-input").maxLength = info.text.max_length;
      $("text-input").placeholder = `e.g. seven · at most ${info.text.max_length} characters`;
      $("text-count").textContent = `0 / ${info.text.max_length}`;
    }
    const labels = new Set(state.labels);
    $("legend").replaceChildren(...[...labels].sort((a, b) => a - b).map((label) => {
      const span = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour(label);
      span.append(dot, label < 0 ? "no label" : (info.classes ? info.classes[label] : String(label)));
      return span;
    }));
  }

  // Show run ``run``; a load overtaken by a later one (the picker moved again) is dropped when its answers come
  async function load(run) {
    const generation = ++state.generation;
    state.run = run; state.asked++; state.textAsked++; state.recAsked++;
    try {
      const [info, points] = await Promise.all([api("/api/info"), api("/api/points")]);
      const recordings = info.recordings && generation === state.generation ? await api("/api/recordings") : null;
      if (generation !== state.generation) return;
      show(run, info, points, recordings);
    } finally {
      state.settled++;
      document.body.dataset.settled = String(state.settled); // for scripts and tests: loads answered or dropped
    }
  }

  function show(run, info, points, recordings) {
    state.info = info;
    const n = points.points.length;
    Object.assign(state, {
      n, wx: new Float32Array(n), wy: new Float32Array(n), labels: new Int32Array(n), items: new Int32Array(n),
      sx: new Float32Array(n), sy: new Float32Array(n), hover: -1, selected: -1, second: -1, marker: null,
      code: null, base: null, activeUnits: false,
    });
    points.points.forEach((p, i) => { state.wx[i] = p.x; state.wy[i] = p.y; state.labels[i] = p.label; state.items[i] = p.index; });
    showRecordings(recordings);
    $("dim-chooser").hidden = true;
    if (info.latent_dim > MAX_SLIDERS) chooserOptions(); else state.dims = [...Array(info.latent_dim).keys()];
    for (const id of ["sel-image", "sel-recon", "decoded"]) $(id).src = BLANK;
    $("sel-title").textContent = "click a point on the map";
    $("sel-recon-caption").textContent = "reconstruction";
    $("sel-text").textContent = "";
    $("reset-code").disabled = true;
    $("strip").replaceChildren(); $("samples").replaceChildren();
    $("text-input").value = ""; $("text-input").classList.remove("bad");
    $("text-word").textContent = ""; $("text-word").classList.remove("bad");
    clearText(); showCodeModal(null);
    $("strip-hint").textContent = "shift-click a second point";
    showInfo(info);
    buildSliders();
    setBounds();
    resize();
    drawBars();
    $("run-picker").value = run;
    document.body.dataset.run = run; // for scripts and tests: the run shown
  }

  // The served folder's own reports (a comparison of its runs), linked in the header
  function showFolderReports(reports) {
    $("folder-files").replaceChildren(...reports.map((name) => {
      const a = document.createElement("a");
      a.href = `/reports/${encodeURIComponent(name)}`; a.target = "_blank";
      a.textContent = `comparison of the runs (${name})`;
      return a;
    }));
  }

  async function start() {
    const runs = await api("/api/runs");
    showFolderReports(runs.reports || []);
    const picker = $("run-picker");
    picker.replaceChildren(...runs.runs.map((r) => new Option(`${r.name} (${r.model}, latent ${r.latent_dim})`, r.name)));
    if (runs.runs.length > 1) {
      picker.addEventListener("change", () => { load(picker.value).catch(sayUnlessStale); });
      $("run-picker-label").hidden = false;
    }
    await load(runs.default);
    new ResizeObserver(() => resize()).observe(canvas);
    document.body.dataset.ready = "1";
  }

  // For scripts and tests: the page's state, where test item ``index`` (or recording ``r``) is drawn, in CSS
  // pixels of the page, the API helper and its wording of the server's errors
  window.aelab = {
    state,
    api,
    inWords,
    colour,
    ink,
    pagePosition(index) {
      const i = state.items.indexOf(index);
      if (i < 0) return null;
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + state.sx[i], y: rect.top + state.sy[i] };
    },
    recordingPosition(r) {
      if (!state.recs || r < 0 || r >= state.recs.n) return null;
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + state.recs.sx[r], y: rect.top + state.recs.sy[r] };
    },
  };
  start().catch(sayUnlessStale);
})();
