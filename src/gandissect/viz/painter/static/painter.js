// GAN Paint: paint concepts into (or out of) a generated image by switching on (or off) the generator units
// that draw them. The state is a list of strokes per seed; every change POSTs the whole list to /api/edit,
// so undo and redo only move through the list's history. No frameworks and no network beyond this server.
'use strict';

(() => {
  const STRIP_SIZE = 8;            // samples in the strip
  const SEND_DELAY_MS = 120;       // least time between two /api/edit requests while painting
  const FRACTION_ROWS = 8;         // rows of the concept pixel table
  const HOLD_MS = 300;             // pressing "Before / after" longer than this shows the original only while held
  const DOWNLOAD_SCALE = 8;        // the upscaled download: this many times the image's own size
  const STROKE_RGB = { add: '31, 157, 85', remove: '214, 69, 69', erase: '122, 131, 148' };

  const $ = (id) => document.getElementById(id);
  const el = {
    body: document.body, modelInfo: $('model-info'), reportLink: $('report-link'),
    message: $('message'), messageText: $('message-text'), messageClose: $('message-close'),
    seedForm: $('seed-form'), seedInput: $('seed-input'), newRandom: $('new-random'), strip: $('strip'),
    undo: $('undo'), redo: $('redo'), reset: $('reset'), compare: $('compare'), showStrokes: $('show-strokes'),
    download: $('download'), downloadNative: $('download-native'), downloadSize: $('download-size'),
    downloadNativeSize: $('download-native-size'), sideBySide: $('side-by-side'), smooth: $('smooth'),
    layout: $('layout'), before: $('before'), beforeWrap: $('before-wrap'), strengthHelp: $('strength-help'),
    wrap: $('canvas-wrap'), image: $('image'), overlay: $('overlay'),
    viewBadge: $('view-badge'), spinner: $('spinner'), status: $('status'),
    conceptFilter: $('concept-filter'), concepts: $('concepts'), eraser: $('eraser'),
    showUntested: $('show-untested'), untestedCount: $('untested-count'),
    layer: $('layer-select'), size: $('size'), sizeOut: $('size-out'), strength: $('strength'),
    strengthOut: $('strength-out'), alpha: $('alpha'), alphaOut: $('alpha-out'), currentTool: $('current-tool'),
    fractions: $('fractions'), fractionsNote: $('fractions-note'), edits: $('edits'), editsEmpty: $('edits-empty'),
  };

  const state = {
    info: null,
    concepts: new Map(),           // name -> concept entry of /api/concepts
    seed: null,
    strip: [],
    histories: new Map(),          // seed -> {states: [strokes, ...], index}: undo/redo walk `states`
    tool: { action: 'add', concept: null },
    painting: null,                // the stroke under the pointer, not yet in the history
    cursor: null,                  // brush position in overlay pixels, or null when off the canvas
    original: null,                // ImageBitmap of the unedited sample
    edited: null,                  // ImageBitmap of the last edit for the current strokes, or null
    comparing: false,
    side: false,                   // the original shown beside the edited image
    loading: true,                 // the current seed's sample is on its way
    request: null,                 // AbortController of the request in flight
    seq: 0,                        // number of the latest request; older answers are dropped
    sendTimer: 0,
    resend: false,                 // strokes changed while painting with a request in flight
    pixelsOffered: true,           // false once /api/concept-pixels answers 404/405
  };

  // ------------------------------------------------------------------------------------------ API and errors

  class ApiError extends Error {}

  function detailText(detail) {
    if (typeof detail === 'string') return detail;
    if (Array.isArray(detail)) {   // FastAPI validation errors: [{loc, msg}, ...]
      return detail.map((d) => (d && d.msg ? `${(d.loc || []).join('.')}: ${d.msg}` : JSON.stringify(d))).join('; ');
    }
    return JSON.stringify(detail);
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new ApiError(`cannot reach the painter server (${path}): ${error.message}`);
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        if (body && body.detail !== undefined) detail = detailText(body.detail);
      } catch (_) { /* not JSON: keep the status line */ }
      const error = new ApiError(`${path.split('?')[0]}: ${detail}`);
      error.status = response.status;
      throw error;
    }
    return response;
  }

  const getJSON = async (path) => (await api(path)).json();
  const postJSON = (path, body, signal) => api(path, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal,
  });

  function showMessage(text, kind = 'error') {
    el.messageText.textContent = text;
    el.message.classList.toggle('info', kind === 'info');
    el.message.hidden = false;
  }

  function hideMessage() { el.message.hidden = true; }

  function report(error) {
    if (error && error.name === 'AbortError') return;   // superseded by a newer request
    console.warn(error);
    showMessage(error && error.message ? error.message : String(error));
  }

  // ------------------------------------------------------------------------------------------ history

  function seedHistory(seed = state.seed) {
    if (!state.histories.has(seed)) state.histories.set(seed, { states: [[]], index: 0 });
    return state.histories.get(seed);
  }

  const committed = () => { const h = seedHistory(); return h.states[h.index]; };
  const strokes = () => (state.painting ? [...committed(), state.painting] : committed());

  // A new list of strokes: it drops what could be redone, and is sent at once unless `send` is false.
  function commit(next, send = true) {
    const h = seedHistory();
    h.states = h.states.slice(0, h.index + 1);
    h.states.push(next);
    h.index += 1;
    if (send) changed(true);
  }

  function undo() {
    const h = seedHistory();
    if (state.painting || h.index === 0) return;
    h.index -= 1;
    changed(true);
  }

  function redo() {
    const h = seedHistory();
    if (state.painting || h.index >= h.states.length - 1) return;
    h.index += 1;
    changed(true);
  }

  function reset() {
    if (committed().length) commit([]);
  }

  // The strokes changed: redraw what is on the client and send them, now or (while painting) at most once
  // every SEND_DELAY_MS, so the picture follows the brush without a request per pointer move.
  function changed(now) {
    updateHistoryButtons();
    drawOverlay();
    markStrip();
    if (now) sendEdit();
    else if (!state.sendTimer) state.sendTimer = setTimeout(sendEdit, SEND_DELAY_MS);
  }

  function updateHistoryButtons() {
    const h = seedHistory();
    el.undo.disabled = h.index === 0 || !!state.painting;
    el.redo.disabled = h.index >= h.states.length - 1 || !!state.painting;
    el.reset.disabled = committed().length === 0;
  }

  // ------------------------------------------------------------------------------------------ rendering

  function setBusy(busy) {
    el.body.dataset.busy = busy ? '1' : '0';
    el.spinner.hidden = !busy;
  }

  // POST the strokes; show the image, the edits, and (once a stroke is done) the concept pixels. While a
  // stroke is being painted only one request is in flight, and the newest strokes follow when it is answered;
  // any other change cancels the request in flight (the answer would be stale).
  async function sendEdit() {
    clearTimeout(state.sendTimer);
    state.sendTimer = 0;
    const final = !state.painting;
    if (!final && state.request) {
      state.resend = true;
      return;
    }
    state.resend = false;
    if (state.request) state.request.abort();
    const controller = new AbortController();
    state.request = controller;
    const seq = ++state.seq;
    const seed = state.seed;
    const list = strokes();
    const started = performance.now();
    setBusy(true);
    try {
      let edits = [];
      if (list.length) {
        const response = await postJSON('/api/edit', { seed, strokes: list }, controller.signal);
        edits = parseEdits(response.headers.get('X-Gandissect-Edit'));
        const bitmap = await createImageBitmap(await response.blob());
        if (seq !== state.seq) return;
        state.edited = bitmap;
      } else {
        state.edited = null;
      }
      drawImage();
      renderEdits(list, edits);
      el.image.dataset.seed = String(seed);
      el.image.dataset.strokes = String(list.length);
      const ms = Math.round(performance.now() - started);
      el.status.textContent = `Seed ${seed} · ${plural(list.length, 'stroke')}` + (list.length ? ` · ${ms} ms` : '');
      if (final) await updateFractions(seed, list, controller.signal, seq);
    } catch (error) {
      if (seq === state.seq) report(error);
    } finally {
      if (seq === state.seq) {
        state.request = null;
        if (state.resend) sendEdit();
        else setBusy(false);
      }
    }
  }

  function parseEdits(header) {
    if (!header) return [];
    try {
      const edits = JSON.parse(header);
      return Array.isArray(edits) ? edits : [];
    } catch (error) {
      showMessage(`the server sent an unreadable X-Gandissect-Edit header: ${error.message}`);
      return [];
    }
  }

  function paintCanvas(canvas, bitmap) {
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (bitmap) ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  }

  function drawImage() {
    const bitmap = state.comparing || !state.edited ? state.original : state.edited;
    paintCanvas(el.image, bitmap);
    if (state.side) paintCanvas(el.before, state.original);
    const before = state.comparing && !!state.edited;
    el.image.dataset.view = state.comparing ? 'before' : 'after';
    el.viewBadge.hidden = !state.comparing && !state.side;
    el.viewBadge.textContent = !state.comparing ? 'edited' : before ? 'original' : 'original (no edits)';
    el.compare.setAttribute('aria-pressed', String(state.comparing));
    drawOverlay();
  }

  // Strokes (unless hidden or comparing) and the brush outline, on a canvas sized to the screen's pixels.
  function drawOverlay() {
    const canvas = el.overlay;
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!state.info) return;
    const [height, width] = state.info.image_size;
    const sx = canvas.width / width;
    const sy = canvas.height / height;
    if (el.showStrokes.checked && !state.comparing) {
      for (const stroke of strokes()) {
        ctx.save();
        ctx.globalAlpha = 0.15 + 0.13 * (stroke.action === 'erase' ? 1 : stroke.alpha);
        ctx.strokeStyle = ctx.fillStyle = `rgb(${STROKE_RGB[stroke.action]})`;
        ctx.lineWidth = 2 * stroke.radius * sx;
        ctx.lineCap = ctx.lineJoin = 'round';
        const [x0, y0] = stroke.points[0];
        if (stroke.points.length === 1) {
          ctx.beginPath();
          ctx.arc(x0 * sx, y0 * sy, stroke.radius * sx, 0, 2 * Math.PI);
          ctx.fill();
        } else {
          ctx.beginPath();
          ctx.moveTo(x0 * sx, y0 * sy);
          for (const [x, y] of stroke.points.slice(1)) ctx.lineTo(x * sx, y * sy);
          ctx.stroke();
        }
        ctx.restore();
      }
    }
    if (state.cursor) {
      const r = brushRadius() * sx;
      ctx.lineWidth = 1.5 * (window.devicePixelRatio || 1);
      for (const [colour, grow] of [['rgba(0, 0, 0, .6)', 1], ['rgba(255, 255, 255, .95)', 0]]) {
        ctx.beginPath();
        ctx.arc(state.cursor.x, state.cursor.y, r + grow * ctx.lineWidth, 0, 2 * Math.PI);
        ctx.strokeStyle = colour;
        ctx.stroke();
      }
    }
  }

  function fitOverlay() {
    const box = el.overlay.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    el.overlay.width = Math.max(1, Math.round(box.width * ratio));
    el.overlay.height = Math.max(1, Math.round(box.height * ratio));
    drawOverlay();
  }

  function setComparing(on) {
    state.comparing = on;
    drawImage();
  }

  // Side by side: the original left of the edited image, both smaller, so the page keeps its three columns.
  function setSide(on) {
    state.side = on;
    el.layout.classList.toggle('side', on);
    el.beforeWrap.hidden = !on;
    el.sideBySide.setAttribute('aria-pressed', String(on));
    if (on && state.comparing) state.comparing = false;
    drawImage();
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const percent = (f) => `${(100 * f).toFixed(f > 0 && f < 0.01 ? 2 : 1)}%`;

  // ------------------------------------------------------------------------------------------ edits and fractions

  function unitLink(layer, unit) {
    const reportPage = state.info && state.info.report;
    if (!reportPage) {
      const span = document.createElement('span');
      span.textContent = String(unit);
      return span;
    }
    const a = document.createElement('a');
    a.href = `${reportPage}#unit/${encodeURIComponent(layer)}/${unit}`;
    a.target = '_blank';
    a.rel = 'noopener';
    a.textContent = String(unit);
    a.title = `unit ${unit} of ${layer} in the dissection report`;
    a.className = 'unit-link';
    a.dataset.layer = layer;
    a.dataset.unit = String(unit);
    return a;
  }

  function renderEdits(list, edits) {
    el.edits.replaceChildren();
    list.forEach((stroke, i) => {
      const edit = edits[i] || {};
      const li = document.createElement('li');
      li.className = 'edit';
      const action = edit.action || stroke.action;
      const badge = document.createElement('span');
      badge.className = `action ${action}`;
      badge.textContent = action;
      li.append(badge, ' ');
      if (action === 'erase') {
        li.append(`r=${stroke.radius}`);
      } else {
        const units = Array.isArray(edit.units) ? edit.units : [];
        li.append(`${edit.concept || stroke.concept}`);
        if (edit.layer) li.append(` at ${edit.layer}`);
        if (edit.source) li.append(` · ${edit.source}${edit.ranking ? ` ${edit.ranking} ranking` : ''}`);
        li.dataset.source = edit.source || '';
        if (edit.alpha !== undefined && edit.alpha !== null) li.append(` · α ${Number(edit.alpha).toFixed(2)}`);
        const span = document.createElement('span');
        span.className = 'units';
        span.append(` · ${plural(units.length, 'unit')}: `);
        units.forEach((unit, j) => {
          if (j) span.append(', ');
          span.append(unitLink(edit.layer, unit));
        });
        li.append(span);
        li.dataset.layer = edit.layer || '';
        li.dataset.units = units.join(',');
      }
      el.edits.append(li);
    });
    el.editsEmpty.hidden = list.length > 0;
  }

  async function updateFractions(seed, list, signal, seq) {
    if (!state.pixelsOffered) return;
    let result;
    try {
      result = await (await postJSON('/api/concept-pixels', { seed, strokes: list }, signal)).json();
    } catch (error) {
      if (error.status === 404 || error.status === 405) {   // an older back end: no segmenter on offer
        state.pixelsOffered = false;
        el.fractions.hidden = true;
        el.fractionsNote.textContent = 'This server does not measure concept pixels.';
        return;
      }
      throw error;
    }
    if (seq === state.seq) renderFractions(result, list);
  }

  function renderFractions(result, list) {
    const before = result.before || {};
    const after = result.after || {};
    const painted = new Set(list.map((s) => s.concept).filter(Boolean));
    const change = (name) => (after[name] || 0) - (before[name] || 0);
    // the painted concepts, then the largest changes and the largest shares, at most FRACTION_ROWS rows
    const names = [...new Set([...painted, ...Object.keys(before), ...Object.keys(after)])]
      .filter((name) => painted.has(name) || Math.max(before[name] || 0, after[name] || 0) >= 0.005)
      .sort((a, b) => (painted.has(b) - painted.has(a)) || Math.abs(change(b)) - Math.abs(change(a))
        || (before[b] || 0) - (before[a] || 0))
      .slice(0, Math.max(FRACTION_ROWS, painted.size));
    const body = el.fractions.tBodies[0];
    body.replaceChildren();
    for (const name of names) {
      const tr = document.createElement('tr');
      tr.dataset.concept = name;
      tr.dataset.before = String(before[name] || 0);
      tr.dataset.after = String(after[name] || 0);
      if (painted.has(name)) tr.className = 'painted';
      const d = change(name);
      const cells = [name, percent(before[name] || 0), percent(after[name] || 0),
        Math.abs(d) < 5e-5 ? '–' : `${d > 0 ? '+' : '−'}${percent(Math.abs(d))}`];
      cells.forEach((text, i) => {
        const td = document.createElement('td');
        td.textContent = text;
        if (i === 3 && Math.abs(d) >= 5e-5) td.className = d > 0 ? 'up' : 'down';
        tr.append(td);
      });
      body.append(tr);
    }
    el.fractionsNote.textContent = 'Share of the image the segmenter labels with each concept.';
  }

  // ------------------------------------------------------------------------------------------ samples

  function randomSeed() {
    return Math.floor(Math.random() * Math.max(1, state.info.max_seed));
  }

  function renderStrip() {
    el.strip.replaceChildren();
    for (const seed of state.strip) {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.seed = String(seed);
      button.setAttribute('aria-label', `Sample seed ${seed}`);
      const img = document.createElement('img');
      img.alt = '';
      img.width = img.height = 64;
      img.src = `/api/sample?seed=${seed}`;
      img.addEventListener('error', () => showMessage(`could not load the sample of seed ${seed}`));
      const label = document.createElement('span');
      label.className = 'seed-label';
      label.textContent = String(seed);
      button.append(img, label);
      button.addEventListener('click', () => selectSeed(seed));
      li.append(button);
      el.strip.append(li);
    }
    markStrip();
  }

  function markStrip() {
    for (const button of el.strip.querySelectorAll('button')) {
      const seed = Number(button.dataset.seed);
      button.setAttribute('aria-current', String(seed === state.seed));
      const edited = state.histories.has(seed) && seedHistory(seed).states[seedHistory(seed).index].length > 0;
      let dot = button.querySelector('.edited-dot');
      if (edited && !dot) {
        dot = document.createElement('span');
        dot.className = 'edited-dot';
        dot.title = 'edited';
        button.append(dot);
      } else if (!edited && dot) {
        dot.remove();
      }
    }
  }

  async function selectSeed(seed) {
    if (!Number.isInteger(seed) || seed < 0 || seed > state.info.max_seed) {
      showMessage(`a seed is a whole number from 0 to ${state.info.max_seed}`);
      return;
    }
    if (state.painting) return;
    if (!state.strip.includes(seed)) {
      state.strip = [seed, ...state.strip].slice(0, STRIP_SIZE);
      renderStrip();
    }
    if (state.request) state.request.abort();
    state.request = null;
    state.seq += 1;                 // answers for the previous seed are stale now
    state.seed = seed;
    state.edited = null;
    state.loading = true;           // no painting until this seed's sample is here
    el.seedInput.value = String(seed);
    window.history.replaceState(null, '', `#seed=${seed}`);
    markStrip();
    setBusy(true);
    try {
      const response = await api(`/api/sample?seed=${seed}`);
      const bitmap = await createImageBitmap(await response.blob());
      if (state.seed !== seed) return;
      state.original = bitmap;
      state.loading = false;
      drawImage();
      changed(true);                // draws this seed's strokes and sends them (or shows the sample)
    } catch (error) {
      report(error);
      setBusy(false);
    }
  }

  // ------------------------------------------------------------------------------------------ tools

  const brushRadius = () => Number(el.size.value);
  const VERBS = { remove: 'Remove', add: 'Add' };

  // The layer a stroke of `action` on `concept` paints at: the menu's choice, else the direction's default.
  function toolLayer(concept, action) {
    return el.layer.value || concept.default_layers[action] || concept.default_layer;
  }

  function directionAt(concept, action, layer) {
    const entry = concept.layers.find((l) => l.layer === layer) || concept.layers[0];
    return { layer: entry.layer, ...entry[action] };
  }

  // The current tool's direction: the units it offers, at the layer it paints at.
  function toolDirection() {
    const concept = state.concepts.get(state.tool.concept);
    if (!concept || state.tool.action === 'erase') return null;
    return directionAt(concept, state.tool.action, toolLayer(concept, state.tool.action));
  }

  // The held-out set measured at the largest strength up to `strength`, or null.
  function figureAt(direction, strength) {
    const measured = direction.sets.filter((s) => s.strength <= strength);
    return measured.length ? measured.reduce((a, b) => (b.strength > a.strength ? b : a)) : null;
  }

  // Where a direction's units come from and what they did on held-out samples at `strength`, in one line.
  function reliability(name, action, direction, strength) {
    const head = `${VERBS[action]} ${name}`;
    if (!direction.available) {
      const what = direction.source === 'untested' ? 'untested' : 'not offered';
      return `${head} · ${what}: ${direction.reason}` + (direction.hint ? ` · measure it: ${direction.hint}` : '');
    }
    const parts = [head, `causal ranking, ${plural(direction.significant, 'significant unit')}`];
    if (!direction.checked) {
      parts.push('not checked on held-out samples');
    } else {
      const figure = figureAt(direction, strength);
      if (figure) {
        parts.push(`${figure.description} on held-out samples at strength ${figure.strength}`
          + (figure.significant ? '' : ' (not significant)'));
      } else {
        parts.push('no set measured up to this strength');
      }
    }
    return parts.join(' · ');
  }

  function setTool(action, conceptName) {
    state.tool = { action, concept: action === 'erase' ? null : conceptName };
    if (action !== 'erase') state.lastConcept = state.tool;   // the eraser (and "e") toggles back to it
    for (const button of el.concepts.querySelectorAll('button')) {
      const on = button.dataset.concept === state.tool.concept && button.dataset.action === action;
      button.setAttribute('aria-pressed', String(on));
    }
    el.eraser.setAttribute('aria-pressed', String(action === 'erase'));
    const erasing = action === 'erase';
    for (const input of [el.layer, el.strength, el.alpha]) input.disabled = erasing;
    if (!erasing) fillLayers(state.concepts.get(conceptName), action);
    showValues();
  }

  function toggleEraser() {
    const last = state.lastConcept;
    if (state.tool.action === 'erase' && last) setTool(last.action, last.concept);
    else if (state.tool.action !== 'erase') setTool('erase', null);
  }

  // The layer menu of a concept and direction: its default layer first; layers where the direction is not
  // offered are listed but disabled. The strength slider follows the chosen layer.
  function fillLayers(concept, action) {
    const previous = el.layer.value;
    el.layer.replaceChildren();
    const auto = document.createElement('option');
    auto.value = '';
    auto.textContent = `default (${concept.default_layers[action] || concept.default_layer})`;
    el.layer.append(auto);
    for (const entry of concept.layers) {
      const direction = entry[action];
      const option = document.createElement('option');
      option.value = entry.layer;
      option.disabled = !direction.available;
      option.textContent = direction.available
        ? `${entry.layer} · causal · ${plural(direction.max_strength, 'unit')}`
        : `${entry.layer} · ${direction.source === 'untested' ? 'untested' : 'no significant set'}`;
      el.layer.append(option);
    }
    const keep = concept.layers.some((l) => l.layer === previous && l[action].available);
    el.layer.value = keep ? previous : '';
    fitStrength();
  }

  // The strength slider: 1 to the direction's significant units, at its default (its best held-out set).
  function fitStrength() {
    const direction = toolDirection();
    if (!direction) return;
    el.strength.max = String(Math.max(1, direction.max_strength));
    el.strength.value = String(direction.default_strength || 1);
    showValues();
  }

  function showValues() {
    el.sizeOut.textContent = `${brushRadius()} px`;
    el.strengthOut.textContent = `${el.strength.value} / ${el.strength.max}`;
    el.alphaOut.textContent = Number(el.alpha.value).toFixed(2);
    describeTool();
    drawOverlay();
  }

  // What strength means for the current direction, and what each measured strength did on held-out samples:
  // more units is not always more of the concept (on the demo run most directions do not rise steadily).
  function describeStrength(direction) {
    const parts = ['Strength: how many of the significant units are switched, strongest first. More units is '
      + 'not always more effect.'];
    const sets = direction && direction.available ? direction.sets : [];
    if (sets.length) {
      const best = sets.filter((s) => s.significant && s.mean !== null)
        .reduce((a, b) => (a && a.mean >= b.mean ? a : b), null);
      const what = direction.action === 'remove' ? 'of its pixels removed' : 'of the image added';
      parts.push(`Held out (${what}): ${sets.map((s) => `${s.strength} → ${s.mean === null ? '–'
        : percent(s.mean)}`).join(', ')}${best ? `; largest at ${best.strength}` : ''}.`);
    }
    el.strengthHelp.textContent = parts.join(' ');
    el.strengthHelp.dataset.sets = sets.map((s) => s.strength).join(',');
  }

  function describeTool() {
    const { action, concept } = state.tool;
    const direction = toolDirection();
    describeStrength(direction ? { ...direction, action } : null);
    if (action === 'erase') {
      el.currentTool.textContent = 'Eraser: paint to take edits back.';
    } else if (!direction) {
      el.currentTool.textContent = 'Choose a concept to add or remove.';
    } else {
      el.currentTool.textContent = `${VERBS[action]} ${concept} · ${direction.layer} · first ${el.strength.value} `
        + `of ${plural(direction.max_strength, 'significant unit')} · α ${Number(el.alpha.value).toFixed(2)}`;
    }
    describeConcepts();
  }

  // Each concept's lines: per direction, where its units come from and their held-out figure at the current
  // strength (the chosen layer for the current concept, each direction's default layer for the others).
  function describeConcepts() {
    for (const li of el.concepts.querySelectorAll('li[data-concept]')) {
      const concept = state.concepts.get(li.dataset.concept);
      const untested = !concept.available && concept.layers.every((l) => l.remove.source === 'untested');
      for (const line of li.querySelectorAll('.reliability')) {
        const action = line.dataset.action;
        const current = state.tool.concept === concept.name;
        const layer = current ? toolLayer(concept, action) : concept.default_layers[action] || concept.default_layer;
        const direction = directionAt(concept, action, layer);
        const strength = Math.min(Number(el.strength.value), Math.max(1, direction.max_strength));
        line.textContent = reliability(concept.name, action, direction, strength);
        if (untested) line.textContent = line.textContent.replace(/^Remove /, 'Remove or add ');
        line.hidden = untested && action === 'add';   // the same hint twice says nothing more
        line.dataset.layer = direction.layer;
        line.classList.toggle('off', !direction.available);
      }
    }
  }

  const ORIGIN_TEXT = {
    'causal ranking': 'the units that remove (Remove) or add (Add) it most when switched, measured with '
      + 'significance tests (gandissect causal)',
    'older causal ranking': 'an ace.json of an older gandissect, without significance tests',
    'unread ace.json': 'an ace.json this painter does not read',
    optimised: 'an optimised unit set (units.json), not tested for significance',
    IoU: 'units labelled with it by IoU in the dissection (correlation, not tested for an effect)',
  };

  // Where a concept's units come from, at the layers its directions default to (else its first layer).
  function conceptOrigins(concept) {
    const origins = [];
    for (const action of ['remove', 'add']) {
      const direction = directionAt(concept, action, concept.default_layers[action] || concept.default_layer);
      for (const origin of direction.origins || []) if (!origins.includes(origin)) origins.push(origin);
    }
    return origins;
  }

  function conceptRow(concept) {
    const li = document.createElement('li');
    li.className = 'concept';
    li.dataset.concept = concept.name;
    li.dataset.category = concept.category;
    li.dataset.available = String(concept.available);
    const head = document.createElement('div');
    head.className = 'concept-head';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = concept.name;
    head.append(name);
    for (const origin of conceptOrigins(concept)) {
      const tag = document.createElement('span');
      tag.className = 'origin';
      tag.dataset.origin = origin;
      tag.textContent = origin;
      tag.title = `where its units come from: ${ORIGIN_TEXT[origin] || origin}`;
      head.append(tag);
    }
    if (!concept.available) {
      const untested = concept.layers.every((l) => l.remove.source === 'untested');
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = untested ? 'untested' : 'no effect';
      head.append(badge);
    }
    for (const action of ['remove', 'add']) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = action;
      button.dataset.action = action;
      button.dataset.concept = concept.name;
      button.textContent = VERBS[action];
      button.setAttribute('aria-label', `${VERBS[action]} ${concept.name}`);
      button.setAttribute('aria-pressed', 'false');
      const layer = concept.default_layers[action];
      button.disabled = !layer;
      const direction = directionAt(concept, action, layer || concept.default_layer);
      button.title = layer ? `${VERBS[action]} ${concept.name} at ${layer}` : reliability(concept.name, action,
        direction, 1);
      button.addEventListener('click', () => setTool(action, concept.name));
      head.append(button);
    }
    li.append(head);
    for (const action of ['remove', 'add']) {
      const line = document.createElement('p');
      line.className = 'reliability';
      line.dataset.action = action;
      li.append(line);
    }
    return li;
  }

  // Concepts in the API's order (by category, offered ones first), under a heading per category.
  function renderConcepts(list) {
    el.concepts.replaceChildren();
    let category = null;
    for (const concept of list) {
      if (concept.category !== category) {
        category = concept.category;
        const heading = document.createElement('li');
        heading.className = 'category-head';
        heading.dataset.category = category;
        heading.textContent = category;
        el.concepts.append(heading);
      }
      el.concepts.append(conceptRow(concept));
    }
    const hidden = list.filter((c) => !c.available).length;
    el.untestedCount.textContent = `(${hidden})`;
    filterConcepts();
  }

  // The filter box and "show untested": concepts with no offered direction are shown only when it is ticked.
  function filterConcepts() {
    const needle = el.conceptFilter.value.trim().toLowerCase();
    const shown = new Set();
    for (const li of el.concepts.querySelectorAll('li[data-concept]')) {
      li.hidden = (!!needle && !li.dataset.concept.toLowerCase().includes(needle))
        || (li.dataset.available !== 'true' && !el.showUntested.checked);
      if (!li.hidden) shown.add(li.dataset.category);
    }
    for (const li of el.concepts.querySelectorAll('li.category-head')) li.hidden = !shown.has(li.dataset.category);
  }

  // ------------------------------------------------------------------------------------------ painting

  function imagePoint(event) {
    const box = el.overlay.getBoundingClientRect();
    const [height, width] = state.info.image_size;
    const clamp = (v, hi) => Math.min(hi, Math.max(0, v));
    const round = (v) => Math.round(v * 100) / 100;
    return [round(clamp((event.clientX - box.left) / box.width * width, width)),
      round(clamp((event.clientY - box.top) / box.height * height, height))];
  }

  function newStroke(point) {
    const { action, concept } = state.tool;
    const stroke = { action, radius: brushRadius(), points: [point] };
    if (action === 'erase') return Object.assign(stroke, { layer: null, strength: 1, alpha: 1 });
    return Object.assign(stroke, {
      concept, layer: el.layer.value || null, strength: Number(el.strength.value), alpha: Number(el.alpha.value),
    });
  }

  function startStroke(event) {
    if (!state.info || state.loading || state.original === null) return;
    if (state.tool.action !== 'erase' && !(toolDirection() || {}).available) {
      showMessage('Choose a concept to add or remove first.', 'info');
      return;
    }
    if (committed().length >= state.info.max_strokes) {
      showMessage(`At most ${state.info.max_strokes} strokes: undo, erase or reset first.`, 'info');
      return;
    }
    if (state.comparing) setComparing(false);
    el.overlay.setPointerCapture(event.pointerId);
    state.painting = newStroke(imagePoint(event));
    changed(false);
  }

  function extendStroke(event) {
    const stroke = state.painting;
    const point = imagePoint(event);
    const last = stroke.points[stroke.points.length - 1];
    if (Math.hypot(point[0] - last[0], point[1] - last[1]) < Math.max(0.25, stroke.radius / 4)) return;
    if (stroke.points.length >= state.info.max_points) {
      // a full stroke is committed and a new one goes on from its last point, if the stroke limit allows
      finishStroke(false);
      if (committed().length >= state.info.max_strokes) return;
      state.painting = Object.assign({}, stroke, { points: [last] });
    }
    state.painting.points.push(point);
    changed(false);
  }

  function finishStroke(send = true) {
    const stroke = state.painting;
    state.painting = null;
    if (stroke) commit([...committed(), stroke], send);
  }

  function pointerPosition(event) {
    const box = el.overlay.getBoundingClientRect();
    const ratio = el.overlay.width / box.width;
    state.cursor = { x: (event.clientX - box.left) * ratio, y: (event.clientY - box.top) * ratio };
  }

  function bindCanvas() {
    const overlay = el.overlay;
    overlay.addEventListener('pointerdown', (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      overlay.focus({ preventScroll: true });
      pointerPosition(event);
      startStroke(event);
    });
    overlay.addEventListener('pointermove', (event) => {
      pointerPosition(event);
      if (state.painting) extendStroke(event);
      else drawOverlay();
    });
    overlay.addEventListener('pointerup', (event) => {
      if (!state.painting) return;
      const points = state.painting.points;
      const [x, y] = imagePoint(event);
      const [lx, ly] = points[points.length - 1];
      if ((x !== lx || y !== ly) && points.length < state.info.max_points) points.push([x, y]);  // end where let go
      finishStroke();
    });
    const end = () => { if (state.painting) finishStroke(); };
    overlay.addEventListener('pointercancel', end);
    overlay.addEventListener('lostpointercapture', end);
    overlay.addEventListener('pointerleave', () => { state.cursor = null; drawOverlay(); });
    new ResizeObserver(fitOverlay).observe(el.wrap);
  }

  // ------------------------------------------------------------------------------------------ other controls

  function bindCompare() {
    let pressedAt = 0;
    let wasComparing = false;
    const button = el.compare;
    button.addEventListener('pointerdown', (event) => {
      if (event.button !== 0) return;
      pressedAt = performance.now();
      wasComparing = state.comparing;
      setComparing(true);
    });
    const release = () => {
      if (!pressedAt) return;
      const held = performance.now() - pressedAt > HOLD_MS;
      pressedAt = 0;
      setComparing(held ? wasComparing : !wasComparing);   // a click toggles; holding peeks
    };
    button.addEventListener('pointerup', release);
    button.addEventListener('pointerleave', release);
    button.addEventListener('click', (event) => { if (event.detail === 0) setComparing(!state.comparing); });
  }

  // The edited image (or the original) as PNG: at its own size, or `scale` times larger, with hard pixel
  // edges or, when "Smooth" is ticked, scaled smoothly as the page shows it.
  function download(scale = 1) {
    const bitmap = state.edited || state.original;
    if (!bitmap) return;
    const canvas = document.createElement('canvas');
    [canvas.width, canvas.height] = [bitmap.width * scale, bitmap.height * scale];
    const ctx = canvas.getContext('2d');
    ctx.imageSmoothingEnabled = el.smooth.checked;
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    canvas.toBlob((blob) => {
      if (!blob) { showMessage('could not encode the image as PNG'); return; }
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      const size = scale === 1 ? '' : `-${canvas.width}x${canvas.height}`;
      a.download = `gandissect-seed${state.seed}${state.edited ? '-edited' : ''}${size}.png`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    }, 'image/png');
  }

  function onKey(event) {
    const target = event.target;
    const typing = target instanceof HTMLInputElement && target.type !== 'range' && target.type !== 'checkbox';
    if (typing || target instanceof HTMLSelectElement) return;
    const mod = event.ctrlKey || event.metaKey;
    const key = event.key.toLowerCase();
    if (mod && key === 'z') {
      event.preventDefault();
      if (event.shiftKey) redo(); else undo();
    } else if (mod && key === 'y') {
      event.preventDefault();
      redo();
    } else if (!mod && (key === '[' || key === ']')) {
      el.size.value = String(Number(el.size.value) + (key === ']' ? 1 : -1));
      showValues();
    } else if (!mod && key === 'e') {
      toggleEraser();
    }
  }

  function bindControls() {
    el.messageClose.addEventListener('click', hideMessage);
    el.seedForm.addEventListener('submit', (event) => {
      event.preventDefault();
      selectSeed(Number(el.seedInput.value));
    });
    el.newRandom.addEventListener('click', () => {
      state.strip = Array.from({ length: STRIP_SIZE }, randomSeed);
      renderStrip();
      selectSeed(state.strip[0]);
    });
    el.undo.addEventListener('click', undo);
    el.redo.addEventListener('click', redo);
    el.reset.addEventListener('click', reset);
    el.showStrokes.addEventListener('change', drawOverlay);
    el.download.addEventListener('click', () => download(DOWNLOAD_SCALE));
    el.downloadNative.addEventListener('click', () => download(1));
    el.sideBySide.addEventListener('click', () => setSide(!state.side));
    el.smooth.addEventListener('change', () => el.body.classList.toggle('smooth', el.smooth.checked));
    el.conceptFilter.addEventListener('input', filterConcepts);
    el.showUntested.addEventListener('change', filterConcepts);
    el.eraser.addEventListener('click', toggleEraser);
    el.layer.addEventListener('change', fitStrength);
    for (const input of [el.size, el.strength, el.alpha]) input.addEventListener('input', showValues);
    document.addEventListener('keydown', onKey);
    window.addEventListener('unhandledrejection', (event) => report(event.reason));
    bindCompare();
    bindCanvas();
  }

  // ------------------------------------------------------------------------------------------ start

  async function start() {
    bindControls();
    showValues();
    let info;
    let concepts;
    try {
      [info, concepts] = await Promise.all([getJSON('/api/info'), getJSON('/api/concepts')]);
    } catch (error) {
      report(error);
      el.modelInfo.textContent = 'not connected';
      return;
    }
    state.info = info;
    const [height, width] = info.image_size;
    [el.image.width, el.image.height] = [width, height];
    [el.before.width, el.before.height] = [width, height];
    el.downloadSize.textContent = `${DOWNLOAD_SCALE * width}×${DOWNLOAD_SCALE * height}`;
    el.downloadNativeSize.textContent = `${width}×${height}`;
    el.modelInfo.textContent = `${info.model} · run ${info.run} · ${width}×${height}`;
    if (info.report) {
      el.reportLink.href = info.report;
      el.reportLink.hidden = false;
    }
    el.size.max = String(Math.max(1, Math.min(info.max_radius, Math.max(width, height) / 2)));
    el.seedInput.max = String(info.max_seed);
    const list = concepts.concepts;
    for (const concept of list) state.concepts.set(concept.name, concept);
    renderConcepts(list);
    const tool = concepts.default;
    if (tool) {
      setTool(tool.action, tool.concept);
      el.strength.value = String(tool.strength);
      showValues();
    } else {
      el.showUntested.checked = true;
      filterConcepts();
      showMessage('No concept of this run has a significant unit set to paint with: measure some with '
        + '`gandissect causal RUN --layer LAYER --concept CONCEPT` (the untested concepts list the command).', 'info');
    }
    fitOverlay();
    const fromHash = /seed=(\d+)/.exec(location.hash);
    const first = fromHash ? Number(fromHash[1]) : 0;
    state.strip = Array.from({ length: STRIP_SIZE }, (_, i) => i);
    renderStrip();
    await selectSeed(first);
  }

  start();
})();
