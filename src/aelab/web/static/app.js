// The aelab latent-space explorer: the map of a run's test codes on a canvas, the selected item's images and
// code, one slider per latent dimension, interpolations and samples; for a multimodal run, a text box whose
// word is turned into images, and the selected image's decoded word and nearest recordings. It talks only to
// the server that sent it.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const NO_LABEL = "#7a8290";
  const MAX_SLIDERS = 16; // beyond this many dimensions, a chooser picks which 16 are shown
  const PICK_RADIUS = 8; // CSS pixels from a point that still count as on it
  const BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"; // 1 clear pixel

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
    const answer = await response.json();
    if (!response.ok) {
      const detail = typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail);
      throw new Error(detail);
    }
    return answer;
  }

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
    const i = nearest(px, py);
    if (i !== state.hover) { state.hover = i; draw(); }
    if (i < 0) { hideTooltip(); return; }
    showTooltip(i, state.sx[i], state.sy[i]);
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
    const i = nearest(px, py);
    if (i >= 0) {
      const done = event.shiftKey && state.selected >= 0 && i !== state.selected ? pickSecond(i) : select(i);
      done.catch((error) => say(error.message));
    } else if (state.info.map.linear) {
      decodePosition(...toWorld(px, py));
    } else {
      say("a t-SNE map has no inverse: click a point, or serve the run with --map pca to decode any position");
    }
  });
  $("reset-view").addEventListener("click", () => { state.zoom = 1; state.panX = 0; state.panY = 0; draw(); });

  function showTooltip(i, px, py) {
    const tip = $("tooltip");
    const index = state.items[i];
    const img = $("tooltip-img");
    const src = withRun(`/api/images/${index}`);
    if (img.getAttribute("src") !== src) img.src = src;
    const label = state.labels[i];
    const name = label < 0 ? "" : (state.info.classes ? state.info.classes[label] : String(label));
    $("tooltip-label").textContent = `#${index}${name ? " · " + name : ""}`;
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
    const item = await api(`/api/items/${state.items[i]}`);
    if (asked !== state.asked) return;
    $("sel-title").textContent = `test item #${item.index}${item.class !== null ? " · " + item.class : ""}`;
    $("sel-image").src = item.image;
    $("sel-recon").src = item.reconstruction;
    showModal(item);
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
    const answer = await api("/api/interpolate", { a, b, steps: 10 });
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
    showModal(null);
    state.base = z.slice();
    $("reset-code").disabled = false;
    setCode(z);
  }

  function setCode(z) {
    state.code = z.slice();
    buildSliders();
    drawBars();
    requestDecode();
  }

  function requestDecode() {
    if (state.decoding) { state.decodeAgain = true; return; } // the latest code is sent when this one is back
    state.decoding = true;
    api("/api/decode", { z: state.code }).then((answer) => {
      $("decoded").src = answer.image;
    }).catch((error) => say(error.message)).finally(() => {
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
  // The selected image's other modalities: the word decoded from its code, the nearest test recordings' digits.
  function showModal(item) {
    const hasWord = !!item && typeof item.word === "string";
    const recordings = item && Array.isArray(item.nearest_recordings) ? item.nearest_recordings : null;
    $("sel-word-row").hidden = !hasWord;
    $("sel-rec-row").hidden = !recordings;
    $("sel-modal").hidden = !hasWord && !recordings;
    if (hasWord) {
      $("sel-word").textContent = item.word === "" ? "(nothing)" : item.word;
      $("sel-text").textContent = item.text ? `its own text: "${item.text}"` : "";
    }
    if (recordings) {
      $("sel-recordings").replaceChildren(...recordings.map((r) => {
        const chip = document.createElement("span");
        chip.textContent = String(r.digit);
        chip.style.background = colour(r.digit);
        chip.title = `recording ${r.recording !== null ? "#" + r.recording : "of test item #" + r.row}, ` +
          `distance ${fmt(r.distance)}`;
        return chip;
      }));
    }
  }

  function requestText() {
    const input = $("text-input");
    const text = input.value;
    const t = state.info.text;
    const bad = [...text].find((c) => !t.alphabet.includes(c));
    input.classList.toggle("bad", bad !== undefined);
    if (bad !== undefined) { $("text-word").textContent = `"${bad}" is not in the model's alphabet`; return; }
    if (text.trim() === "") {
      state.textAsked++;
      $("text-images").replaceChildren(); $("text-word").textContent = "";
      return;
    }
    if (state.texting) { state.textAgain = true; return; } // the latest text is sent when this answer is back
    state.texting = true;
    const asked = ++state.textAsked;
    api("/api/text", { text, n: 8, seed: 0 }).then((answer) => {
      if (asked !== state.textAsked) return;
      $("text-word").textContent = `reads back as "${answer.word}" · click an image to load its code`;
      $("text-images").replaceChildren(...answer.images.map((src, k) => {
        const img = new Image();
        img.src = src;
        img.title = k === 0 ? `the code of "${text}"` : `drawn from q(z | "${text}")`;
        img.addEventListener("click", () => {
          state.selected = -1; state.second = -1; state.marker = null; state.asked++;
          draw();
          $("sel-title").textContent = `generated from "${text}"` + (k === 0 ? "" : ` (draw ${k})`);
          $("sel-image").src = BLANK; $("sel-recon").src = src;
          showModal(null);
          state.base = answer.z[k].slice();
          $("reset-code").disabled = false;
          setCode(answer.z[k]);
        });
        return img;
      }));
      document.body.dataset.text = text; // for scripts and tests: the text whose images are shown
    }).catch((error) => say(error.message)).finally(() => {
      state.texting = false;
      if (state.textAgain) { state.textAgain = false; requestText(); }
    });
  }
  $("text-input").addEventListener("input", requestText);

  // ------------------------------------------------------------------ sliders
  function chooserOptions() {
    const d = state.info.latent_dim, std = state.info.stats.std;
    const chooser = $("dim-chooser");
    const spread = [...Array(d).keys()].sort((a, b) => std[b] - std[a]).slice(0, MAX_SLIDERS);
    const options = [{ label: `the ${MAX_SLIDERS} most spread`, dims: spread }];
    for (let start = 0; start < d; start += MAX_SLIDERS) {
      const end = Math.min(d, start + MAX_SLIDERS);
      options.push({ label: `z${start + 1} to z${end}`, dims: [...Array(end - start).keys()].map((k) => k + start) });
    }
    chooser.replaceChildren(...options.map((o, k) => new Option(o.label, String(k))));
    chooser.hidden = false;
    chooser.onchange = () => { state.dims = options[Number(chooser.value)].dims; buildSliders(); };
    state.dims = spread;
  }

  function buildSliders() {
    const sliders = $("sliders");
    const st = state.info.stats;
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
    api("/api/sample", { n: 8 }).then((answer) => {
      $("samples").replaceChildren(...answer.images.map((src) => { const img = new Image(); img.src = src; return img; }));
    }).catch((error) => say(error.message));
  });

  // ------------------------------------------------------------------ loading a run
  function showInfo(info) {
    const parts = [info.model, info.dataset, `latent ${info.latent_dim}`, `${info.epochs} epoch${info.epochs === 1 ? "" : "s"}`];
    if (info.test_loss !== null && info.test_loss !== undefined) parts.push(`test loss ${Number(info.test_loss).toPrecision(4)}`);
    if (info.modalities) parts.push(info.modalities.join(" + "));
    parts.push(info.device);
    $("run-info").textContent = parts.join(" · ");
    $("run-files").replaceChildren(...info.files.filter((f) => f.endsWith(".html")).map((f) => {
      const a = document.createElement("a");
      a.href = withRun(`/files/${encodeURIComponent(f)}`); a.textContent = f; a.target = "_blank";
      return a;
    }));
    const m = info.map;
    const what = { tsne: "t-SNE", pca: "PCA", direct: "the codes themselves" }[m.method] || m.method;
    document.body.classList.toggle("flat", !!info.flat); // a table's rows: bars, wide, and "row" in the captions
    $("sel-image-caption").textContent = info.flat ? "test row" : "test image";
    const of = info.modalities ? ` of the ${info.map_modality}s` : (info.flat ? " of the rows" : "");
    $("map-title").textContent = `${m.points.toLocaleString()} test codes${of}, ${what}`;
    $("map-axes").textContent = m.linear ? `x: ${m.axis_labels[0]}` + (m.axis_labels[1] ? ` · y: ${m.axis_labels[1]}` : "") : "";
    $("map-hint").textContent = m.linear ? "hover: image · click: select, or decode an empty spot · shift-click: interpolate · wheel: zoom"
      : "hover: image · click: select · shift-click: interpolate · wheel: zoom";
    $("code-hint").textContent = info.latent_dim > MAX_SLIDERS ? `${MAX_SLIDERS} of ${info.latent_dim} dimensions` : "";
    $("sample-panel").hidden = !info.can_sample;
    $("text-panel").hidden = !info.text;
    if (info.text) $("text-input").maxLength = info.text.max_length;
    const labels = new Set(state.labels);
    $("legend").replaceChildren(...[...labels].sort((a, b) => a - b).map((label) => {
      const span = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colour(label);
      span.append(dot, label < 0 ? "no label" : (info.classes ? info.classes[label] : String(label)));
      return span;
    }));
  }

  async function load(run) {
    state.run = run;
    const [info, points] = await Promise.all([api("/api/info"), api("/api/points")]);
    state.info = info;
    const n = points.points.length;
    Object.assign(state, {
      n, wx: new Float32Array(n), wy: new Float32Array(n), labels: new Int32Array(n), items: new Int32Array(n),
      sx: new Float32Array(n), sy: new Float32Array(n), hover: -1, selected: -1, second: -1, marker: null,
      code: null, base: null,
    });
    points.points.forEach((p, i) => { state.wx[i] = p.x; state.wy[i] = p.y; state.labels[i] = p.label; state.items[i] = p.index; });
    $("dim-chooser").hidden = true;
    if (info.latent_dim > MAX_SLIDERS) chooserOptions(); else state.dims = [...Array(info.latent_dim).keys()];
    for (const id of ["sel-image", "sel-recon", "decoded"]) $(id).src = BLANK;
    $("sel-title").textContent = "click a point on the map";
    $("reset-code").disabled = true;
    $("strip").replaceChildren(); $("samples").replaceChildren();
    $("text-images").replaceChildren(); $("text-word").textContent = ""; $("text-input").value = "";
    state.textAsked++; showModal(null); delete document.body.dataset.text;
    $("strip-hint").textContent = "shift-click a second point";
    showInfo(info);
    buildSliders();
    setBounds();
    resize();
    drawBars();
    document.body.dataset.run = run; // for scripts and tests: the run shown
  }

  async function start() {
    const runs = await api("/api/runs");
    if (runs.runs.length > 1) {
      const picker = $("run-picker");
      picker.replaceChildren(...runs.runs.map((r) => new Option(`${r.name} (${r.model}, latent ${r.latent_dim})`, r.name)));
      picker.value = runs.default;
      picker.addEventListener("change", () => { state.asked++; load(picker.value).catch((e) => say(e.message)); });
      $("run-picker-label").hidden = false;
    }
    await load(runs.default);
    new ResizeObserver(() => resize()).observe(canvas);
    document.body.dataset.ready = "1";
  }

  // For scripts and tests: where test item ``index`` is drawn, in CSS pixels of the page.
  window.aelab = {
    state,
    pagePosition(index) {
      const i = state.items.indexOf(index);
      if (i < 0) return null;
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + state.sx[i], y: rect.top + state.sy[i] };
    },
  };
  start().catch((error) => say(error.message));
})();
