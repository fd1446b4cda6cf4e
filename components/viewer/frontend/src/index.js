// Reading-room viewer: Cornerstone3D stack viewport fed by a custom in-memory image (no DICOM parsing or
// codecs in the browser), window/level, zoom/pan, invert, calibrated length/angle and colour map layers, and
// linked navigation between the viewers of one page that share a link group (a prior beside the current film).
// Mounted by Streamlit's components v2 (no iframe); see components/viewer/__init__.py.
import {
  init as coreInit,
  RenderingEngine,
  Enums,
  imageLoader,
  getRenderingCapabilities,
  getShouldUseCPURendering,
  setUseCPURendering,
  utilities as csUtils,
  cache,
  eventTarget,
} from '@cornerstonejs/core';
import {
  init as toolsInit,
  addTool,
  ToolGroupManager,
  WindowLevelTool,
  PanTool,
  ZoomTool,
  LengthTool,
  AngleTool,
  Enums as ToolEnums,
  annotation,
} from '@cornerstonejs/tools';

const MAGIC = 'MSVIEW01';
// Streamlit's running indicator: present while a script run is in progress.
const APP_RUNNING = '[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]';
const TOOLS = { wl: WindowLevelTool.toolName, pan: PanTool.toolName, zoom: ZoomTool.toolName,
  length: LengthTool.toolName, angle: AngleTool.toolName };
const TOOL_LABELS = { wl: 'Window/level', pan: 'Pan', zoom: 'Zoom', length: 'Length', angle: 'Angle' };
const SHORTCUTS = [
  ['W', 'window/level by drag (left button)'], ['P', 'pan'], ['Z', 'zoom'], ['L', 'length'], ['A', 'angle'],
  ['Wheel', 'zoom'], ['Middle drag', 'pan'], ['Right drag', 'zoom'], ['I', 'invert'], ['F', 'fit to window'],
  ['1', 'one image pixel per screen pixel'], ['R', 'reset view, window and invert'],
  ['V', 'next window preset'], ['Del', 'remove the last measurement'], ['?', 'this help'],
];
const LINK_SHORTCUT = ['K', 'link zoom, pan and window with the other film (on/off)'];
const LINK_TITLE = 'Zoom, pan and window follow the other film (the window only when both are the same kind of '
  + 'image; invert stays per film). Key K.';
const CSS = `
.msv-root{font:13px/1.4 "Source Sans Pro",sans-serif;color:inherit;outline:none;user-select:none}
.msv-root:focus-visible{box-shadow:0 0 0 2px #ff4b4b55;border-radius:4px}
.msv-bar{display:flex;flex-wrap:wrap;gap:4px;align-items:center;margin-bottom:6px}
.msv-bar button,.msv-bar select{font:inherit;padding:2px 8px;border-radius:4px;border:1px solid #8886;
  background:transparent;color:inherit;cursor:pointer}
.msv-bar button[aria-pressed=true]{background:#ff4b4b;color:#fff;border-color:#ff4b4b}
.msv-sep{width:1px;height:20px;background:#8886;margin:0 4px}
.msv-stage{position:relative;width:100%;background:#000;border-radius:4px;overflow:hidden}
.msv-vp{position:absolute;inset:0}
.msv-overlay{position:absolute;left:0;top:0;pointer-events:none}
.msv-status{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;opacity:.85;margin-top:4px}
.msv-uncal{color:#fff;background:#c25400;padding:0 6px;border-radius:3px;font-weight:600}
.msv-help{position:absolute;right:8px;top:8px;z-index:5;background:#111d;color:#eee;padding:8px 12px;
  border-radius:6px;font-size:12px;max-width:340px}
.msv-help table{border-collapse:collapse}.msv-help td{padding:1px 6px;vertical-align:top}
.msv-help kbd{font-family:monospace;background:#333;border-radius:3px;padding:0 4px}
.msv-layers{margin-top:6px;display:flex;flex-direction:column;gap:4px}
.msv-layer{display:flex;flex-wrap:wrap;gap:8px;align-items:center;font-size:12px}
.msv-layer input[type=range]{width:110px}
.msv-cbar{display:inline-flex;align-items:center;gap:4px}.msv-cbar canvas{height:10px;width:110px;border:1px solid #8886}
.msv-meas{margin-top:4px;font-size:12px}
`;

// Window/level by drag with the drag speed scaled to the film's value range, which is known from the payload:
// Cornerstone's tool would otherwise scan all pixels for their range on every mouse move (most of a frame on
// a 5-megapixel film).
class ReadingWindowLevelTool extends WindowLevelTool {
  static toolName = WindowLevelTool.toolName;

  _getMultiplierFromDynamicRange() {
    const ratio = (this.configuration.dynamicRange || 1024) / 1024;
    return ratio > 1 ? Math.round(ratio) : ratio;
  }
}

// Linked navigation. Cornerstone's synchronizers do not fit here: the camera synchronizer copies the camera in world
// units, which are image pixels in this viewer, so two films of different sizes would not show the same anatomy at
// the same physical scale; the zoom/pan one copies the zoom relative to each fit and the pan in world units; the
// VOI one copies the window unconditionally. The link below carries a view that means the same on either film:
// mm per screen pixel (or the zoom relative to fit when a film has no pixel spacing), the image point at the
// centre as a fraction of the image's width and height, and the window when both films are in the same values.
const groups = new Map(); // group name → { linked, members: Set<Viewer> }

// Why a window of one film means nothing on the other, or null when it can be copied.
function windowDifference(a, b) {
  if ((a.modality || null) !== (b.modality || null)) return 'different modality';
  if ((a.photometric || null) !== (b.photometric || null)) return 'different photometric interpretation';
  if (a.units !== b.units || (a.units === 'stored grey levels' && a.bits !== b.bits)) {
    return 'the films hold different kinds of pixel values';
  }
  return null;
}

let initialised = null;
const images = new Map(); // imageId → the in-memory image, for the 'medsight:' image loader
const instances = new Map();
let instanceCounter = 0;

function initOnce() {
  if (!initialised) {
    coreInit();
    toolsInit();
    const found = getRenderingCapabilities() || {};
    // A software rasteriser (SwiftShader, llvmpipe) draws this viewer slower than Cornerstone's CPU path and,
    // with Cornerstone 5.14 on SwiftShader, with inverted greys: use the CPU path there. A page may force a
    // renderer with window.__medsightViewerRenderer = 'webgl' | 'cpu' (benchmarks, diagnosis).
    const forced = window.__medsightViewerRenderer;
    if (forced === 'cpu' || (forced !== 'webgl' && (!found.webgl || found.softwareRasterizer))) setUseCPURendering(true);
    for (const tool of [ReadingWindowLevelTool, PanTool, ZoomTool, LengthTool, AngleTool]) addTool(tool);
    imageLoader.registerImageLoader('medsight', (imageId) => ({
      promise: images.has(imageId) ? Promise.resolve(images.get(imageId)) : Promise.reject(new Error(`no image ${imageId}`)),
    }));
    const caps = getRenderingCapabilities() || {};
    initialised = {
      renderer: getShouldUseCPURendering() ? 'cpu' : 'webgl',
      glRenderer: caps.renderer || '',
      software: !!caps.softwareRasterizer,
    };
  }
  return initialised;
}

function decode(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const magic = String.fromCharCode(...u8.subarray(0, 8));
  if (magic !== MAGIC) throw new Error('The viewer received data it cannot read.');
  const length = new DataView(u8.buffer, u8.byteOffset + 8, 4).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(12, 12 + length)));
  const base = 12 + length;
  const types = { uint8: Uint8Array, uint16: Uint16Array, int16: Int16Array, float32: Float32Array };
  const blocks = {};
  for (const b of header.blocks) {
    const start = u8.byteOffset + base + b.offset;
    // Copy: the message's own buffer is not aligned for 16/32-bit views.
    const buffer = u8.buffer.slice(start, start + b.length);
    blocks[b.name] = new types[b.dtype](buffer);
  }
  return { header, blocks };
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.appendChild(c);
  return node;
}

function fmt(x, digits = 1) {
  return Number.isFinite(x) ? x.toFixed(digits) : '—';
}

class Viewer {
  constructor(parent, payload, setStateValue) {
    this.parent = parent;
    this.setStateValue = setStateValue;
    this.id = `msv${++instanceCounter}`;
    this.header = payload.header;
    this.blocks = payload.blocks;
    this.mountedAt = performance.now();
    this.firstPaintAt = null;
    this.frames = 0;
    this.layers = this.header.maps.map((m) => ({ ...m, visible: !!m.visible, opacity: m.opacity ?? 0.65,
      threshold: m.threshold ?? 0.3, gamma: m.gamma ?? 1, canvas: null }));
    this.invert = !!this.header.invert;
    this.tool = 'wl';
    this.sendTimer = null;
    this.following = false; // true while applying a linked change, which must not be passed on again
    this.group = null;
    if (this.header.link_group) {
      const name = this.header.link_group;
      if (!groups.has(name)) groups.set(name, { linked: true, members: new Set() });
      this.group = groups.get(name);
      this.group.members.add(this);
    }
    this.build();
    this.start();
  }

  build() {
    const h = this.header;
    this.root = el('div', { class: 'msv-root', tabindex: '0', 'data-testid': 'medsight-viewer',
      'aria-label': 'Image viewer; press ? for keyboard shortcuts' });
    this.root.appendChild(el('style', { text: CSS }));
    const bar = el('div', { class: 'msv-bar' });
    this.toolButtons = {};
    for (const [key, label] of Object.entries(TOOL_LABELS)) {
      const b = el('button', { type: 'button', 'data-tool': key, 'aria-pressed': 'false', text: label,
        onclick: () => this.setTool(key) });
      this.toolButtons[key] = b;
      bar.appendChild(b);
    }
    bar.appendChild(el('span', { class: 'msv-sep' }));
    const action = (label, fn, name) => bar.appendChild(el('button', { type: 'button', 'data-action': name, text: label, onclick: fn }));
    this.invertButton = action('Invert', () => this.toggleInvert(), 'invert');
    action('Fit', () => this.fit(), 'fit');
    action('1:1', () => this.oneToOne(), 'one-to-one');
    action('Reset', () => this.reset(), 'reset');
    if (this.group) {
      this.linkButton = action('Link', () => this.toggleLink(), 'link');
      this.linkButton.setAttribute('title', LINK_TITLE);
      this.linkButton.setAttribute('aria-pressed', String(this.group.linked));
    }
    bar.appendChild(el('span', { class: 'msv-sep' }));
    this.presetSelect = el('select', { 'aria-label': 'Window preset', onchange: () => this.applyPreset(Number(this.presetSelect.value)) });
    this.presetSelect.appendChild(el('option', { value: '-1', text: 'Window preset…' }));
    h.presets.forEach((p, i) => this.presetSelect.appendChild(el('option', { value: String(i),
      text: `${p.name} (C ${fmt(p.center, 0)} / W ${fmt(p.width, 0)})`, title: p.source })));
    bar.appendChild(this.presetSelect);
    action('?', () => this.toggleHelp(), 'help');
    this.root.appendChild(bar);

    const aspect = h.rows / h.columns;
    const height = Math.round(Math.min(Math.max(this.parent.clientWidth || 700, 300) * Math.min(aspect, 1.4), 900));
    this.stage = el('div', { class: 'msv-stage', style: `height:${Math.max(height, 320)}px` });
    this.vpElement = el('div', { class: 'msv-vp', 'data-testid': 'medsight-viewport' });
    this.vpElement.addEventListener('contextmenu', (e) => e.preventDefault());
    // Cornerstone takes the mouse-down, so focus would not move here by itself: keys must reach this viewer.
    this.vpElement.addEventListener('mousedown', () => this.root.focus({ preventScroll: true }));
    this.stage.appendChild(this.vpElement);
    this.help = el('div', { class: 'msv-help', hidden: '' });
    const table = el('table');
    for (const [k, what] of this.group ? [...SHORTCUTS.slice(0, -1), LINK_SHORTCUT, ...SHORTCUTS.slice(-1)] : SHORTCUTS) table.appendChild(el('tr', {}, [el('td', {}, [el('kbd', { text: k })]), el('td', { text: what })]));
    this.help.appendChild(el('div', { text: 'Keyboard and mouse' }));
    this.help.appendChild(table);
    this.stage.appendChild(this.help);
    this.root.appendChild(this.stage);

    this.status = el('div', { class: 'msv-status' });
    this.windowText = el('span', { 'data-testid': 'viewer-window' });
    this.zoomText = el('span', { 'data-testid': 'viewer-zoom' });
    const cal = h.calibration;
    this.calText = el('span', { 'data-testid': 'viewer-calibration', class: cal.calibrated ? '' : 'msv-uncal',
      text: cal.calibrated ? `Measurements in mm from ${cal.label}` : cal.label.charAt(0).toUpperCase() + cal.label.slice(1) });
    this.rendererText = el('span', { 'data-testid': 'viewer-renderer' });
    this.linkText = el('span', { 'data-testid': 'viewer-link' });
    for (const s of [this.windowText, this.zoomText, this.calText, this.linkText, this.rendererText]) this.status.appendChild(s);
    this.root.appendChild(this.status);

    this.layerBox = el('div', { class: 'msv-layers' });
    this.layers.forEach((layer, i) => this.layerBox.appendChild(this.layerControls(layer, i)));
    this.root.appendChild(this.layerBox);
    this.measureBox = el('div', { class: 'msv-meas', 'data-testid': 'viewer-measurements' });
    this.root.appendChild(this.measureBox);
    this.root.addEventListener('keydown', (e) => this.onKey(e));
    this.parent.appendChild(this.root);
  }

  layerControls(layer, i) {
    const row = el('div', { class: 'msv-layer', 'data-layer': layer.key, title: layer.caption || '' });
    const box = el('input', { type: 'checkbox', 'aria-label': `Show ${layer.title}` });
    box.checked = layer.visible;
    box.addEventListener('change', () => { layer.visible = box.checked; this.drawOverlay(); });
    row.appendChild(el('label', {}, [box, document.createTextNode(` ${layer.title}`)]));
    const slider = (label, value, set) => {
      const input = el('input', { type: 'range', min: '0', max: '1', step: '0.01', value: String(value), 'aria-label': `${label} of ${layer.title}` });
      input.addEventListener('input', () => { set(Number(input.value)); this.drawOverlay(); });
      row.appendChild(el('label', {}, [document.createTextNode(`${label} `), input]));
    };
    slider('Opacity', layer.opacity, (v) => { layer.opacity = v; });
    slider('Threshold', layer.threshold, (v) => { layer.threshold = v; layer.canvas = null; });
    const bar = el('canvas', { width: '256', height: '1' });
    const ctx = bar.getContext('2d');
    const img = ctx.createImageData(256, 1);
    this.header.colour_table.forEach(([r, g, b], j) => img.data.set([r, g, b, 255], j * 4));
    ctx.putImageData(img, 0, 0);
    row.appendChild(el('span', { class: 'msv-cbar' }, [el('span', { text: '0' }), bar, el('span', { text: '1' })]));
    void i;
    return row;
  }

  start() {
    const info = initOnce();
    this.renderer = info;
    const h = this.header;
    this.imageId = `medsight:${h.content_id}:${this.id}`;
    const spacing = [1, 1]; // world units are image pixels; mm come from the calibration in measurements
    // Unsigned 16-bit textures come out inverted on the WebGL path (seen on SwiftShader with Cornerstone 5.14);
    // float textures hold every 16-bit value exactly, so the GPU gets floats and the CPU path the integers.
    const pixels = info.renderer === 'webgl' && this.blocks.image instanceof Uint16Array
      ? Float32Array.from(this.blocks.image) : this.blocks.image;
    const image = imageLoader.createAndCacheLocalImage(this.imageId, {
      scalarData: pixels,
      dimensions: [h.columns, h.rows],
      spacing,
      frameOfReferenceUID: `medsight.${this.id}`,
      targetBuffer: { type: pixels.constructor.name },
    });
    images.set(this.imageId, image);
    const meta = csUtils.genericMetadataProvider;
    meta.add(this.imageId, { type: 'generalSeriesModule', metadata: { modality: h.modality || 'OT' } });
    meta.add(this.imageId, { type: 'modalityLutModule', metadata: { rescaleSlope: 1, rescaleIntercept: 0 } });
    meta.add(this.imageId, { type: 'voiLutModule', metadata: { windowCenter: [h.window.center], windowWidth: [h.window.width] } });
    this.engineId = `${this.id}-engine`;
    this.viewportId = `${this.id}-vp`;
    this.engine = new RenderingEngine(this.engineId);
    this.engine.enableElement({ viewportId: this.viewportId, type: Enums.ViewportType.STACK, element: this.vpElement,
      defaultOptions: { background: [0, 0, 0] } });
    this.viewport = this.engine.getViewport(this.viewportId);

    this.toolGroupId = `${this.id}-tools`;
    const group = ToolGroupManager.createToolGroup(this.toolGroupId);
    this.toolGroup = group;
    const textLines = (kind) => (data) => {
      const m = this.measure(kind, data.handles.points);
      return m ? [m.text] : [];
    };
    group.addTool(WindowLevelTool.toolName, { dynamicRange: Math.max(h.max - h.min, 1) });
    group.addTool(PanTool.toolName);
    group.addTool(ZoomTool.toolName, { zoomToCenter: false });
    group.addTool(LengthTool.toolName, { getTextLines: textLines('length') });
    group.addTool(AngleTool.toolName, { getTextLines: textLines('angle') });
    group.addViewport(this.viewportId, this.engineId);
    this.setTool('wl');

    this.overlay = el('canvas', { class: 'msv-overlay', 'data-testid': 'viewer-overlay' });
    const E = Enums.Events;
    this.vpElement.addEventListener(E.IMAGE_RENDERED, () => this.onRendered());
    this.vpElement.addEventListener(E.CAMERA_MODIFIED, () => { this.drawOverlay(); this.passOn({ view: true }); });
    this.vpElement.addEventListener(E.VOI_MODIFIED, () => { this.updateStatus(); this.passOn({ voi: true }); });
    this.onLoadError = (e) => {
      const d = e.detail;
      if (Array.isArray(d)) { if (d.length) this.fail(d[0].reason); } else if (d?.imageId === this.imageId) this.fail(d.error);
    };
    eventTarget.addEventListener(E.IMAGE_LOAD_ERROR, this.onLoadError);
    const T = ToolEnums.Events;
    this.onAnnotation = () => { this.updateMeasurements(); this.queueState(); };
    for (const ev of [T.ANNOTATION_COMPLETED, T.ANNOTATION_MODIFIED, T.ANNOTATION_REMOVED]) {
      eventTarget.addEventListener(ev, this.onAnnotation);
    }
    this.onMouseUp = () => this.queueState(); // a drag may end outside the viewer
    document.addEventListener('mouseup', this.onMouseUp);
    this.resizeObserver = new ResizeObserver(() => { this.engine.resize(true, true); this.drawOverlay(); });
    this.resizeObserver.observe(this.stage);

    // A rerun may replace this viewer before its image has loaded: a destroyed viewer's engine is gone, so the
    // late callback must neither render nor report the failure that rendering would throw.
    this.viewport.setStack([this.imageId]).then(() => {
      if (this.destroyed) return;
      this.stackDone = true;
      this.applyWindow(h.window.center, h.window.width, false);
      this.viewport.setProperties({ invert: this.invert });
      this.viewport.render();
    }).catch((error) => { if (!this.destroyed) this.fail(error); });
    const gl = info.glRenderer ? ` (${info.glRenderer})` : '';
    this.rendererText.textContent = info.renderer === 'cpu'
      ? `Renderer: Cornerstone CPU${info.glRenderer ? `; WebGL here is software${gl}, not used` : ' (no WebGL)'}`
      : `Renderer: WebGL${gl}`;
    this.rendererText.dataset.renderer = info.renderer;
  }

  fail(error) {
    console.error('The viewer could not show the image:', error);
    this.root.setAttribute('data-error', String(error && error.message || error));
  }

  onRendered() {
    if (this.destroyed) return;
    this.frames += 1;
    if (this.firstPaintAt === null && this.stackDone) {
      this.firstPaintAt = performance.now();
      this.vpElement.querySelector('.viewport-element')?.appendChild(this.overlay);
      const svg = this.vpElement.querySelector('.svg-layer');
      if (svg) svg.parentNode.appendChild(svg); // keep measurements above the map layers
      this.root.setAttribute('data-ready', 'true');
      this.lastSent = this.reportable(this.state()); // Python knows the opening state: nothing to send
      this.joinGroup();
    }
    this.updateStatus();
    this.drawOverlay();
  }

  setTool(key) {
    const group = this.toolGroup;
    if (!group) { this.tool = key; return; }
    const { Primary, Secondary, Auxiliary, Wheel } = ToolEnums.MouseBindings;
    for (const name of Object.values(TOOLS)) group.setToolPassive(name);
    // Fixed bindings: middle = pan, right = zoom, wheel = zoom; the left button takes the chosen tool.
    const bindings = { [TOOLS.pan]: [{ mouseButton: Auxiliary }], [TOOLS.zoom]: [{ mouseButton: Secondary }, { mouseButton: Wheel }] };
    bindings[TOOLS[key]] = [...(bindings[TOOLS[key]] || []), { mouseButton: Primary }];
    for (const [name, b] of Object.entries(bindings)) group.setToolActive(name, { bindings: b });
    this.tool = key;
    for (const [k, b] of Object.entries(this.toolButtons)) b.setAttribute('aria-pressed', String(k === key));
  }

  currentWindow() {
    const voi = this.viewport?.getProperties?.().voiRange;
    if (!voi) return { center: this.header.window.center, width: this.header.window.width };
    return { center: (voi.lower + voi.upper) / 2, width: voi.upper - voi.lower };
  }

  applyWindow(center, width, send = true) {
    const w = Math.max(width, 1e-3);
    this.viewport.setProperties({ voiRange: { lower: center - w / 2, upper: center + w / 2 } });
    this.viewport.render();
    if (send) this.queueState();
  }

  applyPreset(i) {
    const p = this.header.presets[i];
    if (!p) return;
    this.applyWindow(p.center, p.width);
    this.presetIndex = i;
  }

  toggleInvert() {
    this.invert = !this.invert;
    this.viewport.setProperties({ invert: this.invert });
    this.viewport.render();
    this.invertButton.setAttribute('aria-pressed', String(this.invert !== !!this.header.invert));
    this.queueState();
  }

  scale() {
    // Screen (CSS) pixels per image pixel along x.
    const a = this.viewport.worldToCanvas([0, 0, 0]);
    const b = this.viewport.worldToCanvas([1, 0, 0]);
    return Math.hypot(b[0] - a[0], b[1] - a[1]);
  }

  fit() {
    this.viewport.resetCamera({ resetPan: true, resetZoom: true });
    this.viewport.render();
    this.queueState();
  }

  oneToOne() {
    const target = 1 / (window.devicePixelRatio || 1);
    const zoom = this.viewport.getZoom();
    this.viewport.setZoom(zoom * target / this.scale());
    this.viewport.render();
    this.queueState();
  }

  reset() {
    this.viewport.resetCamera({ resetPan: true, resetZoom: true });
    this.invert = !!this.header.invert;
    this.viewport.setProperties({ invert: this.invert });
    this.invertButton.setAttribute('aria-pressed', 'false');
    this.applyWindow(this.header.window.center, this.header.window.width);
  }

  // Linked navigation (see `groups`).

  isLinked() {
    return !!(this.group && this.group.linked && this.firstPaintAt !== null && !this.destroyed && this.root.isConnected);
  }

  peers() {
    return this.group ? [...this.group.members].filter((v) => v !== this && v.isLinked()) : [];
  }

  fitScale() {
    // Screen pixels per image pixel when the whole film fits the viewport.
    const h = this.header;
    return Math.min(this.vpElement.clientWidth / h.columns, this.vpElement.clientHeight / h.rows) || 1;
  }

  // What another film needs to show the same view: scale, image point at the centre, window.
  linkedView() {
    const h = this.header;
    const cal = h.calibration;
    const scale = this.scale();
    const [fx, fy] = this.viewport.getCamera().focalPoint;
    return {
      mmPerScreenPixel: cal.calibrated ? cal.col_mm / scale : null,
      ofFit: scale / this.fitScale(),
      centre: [(fx + 0.5) / h.columns, (fy + 0.5) / h.rows],
    };
  }

  followView(view) {
    const h = this.header;
    const cal = h.calibration;
    const target = view.mmPerScreenPixel && cal.calibrated ? cal.col_mm / view.mmPerScreenPixel
      : view.ofFit * this.fitScale();
    const camera = this.viewport.getCamera();
    const focal = [view.centre[0] * h.columns - 0.5, view.centre[1] * h.rows - 0.5, camera.focalPoint[2]];
    const scale = this.scale();
    const moved = Math.hypot(focal[0] - camera.focalPoint[0], focal[1] - camera.focalPoint[1]);
    if (!(target > 0) || (Math.abs(target / scale - 1) < 1e-6 && moved < 1e-3)) return;
    // Zoom first, then the centre: the CPU renderer moves its focal point in screen pixels of the current zoom.
    this.viewport.setCamera({ parallelScale: camera.parallelScale * (scale / target) });
    const now = this.viewport.getCamera();
    const shift = [0, 1, 2].map((i) => focal[i] - now.focalPoint[i]);
    this.viewport.setCamera({ focalPoint: focal, position: now.position.map((p, i) => p + shift[i]) });
    this.viewport.render();
  }

  followWindow(voi, header) {
    if (windowDifference(this.header, header)) return;
    const w = this.currentWindow();
    if (Math.abs(w.center - voi.center) < 1e-6 && Math.abs(w.width - voi.width) < 1e-6) return;
    this.applyWindow(voi.center, voi.width);
  }

  passOn({ view = false, voi = false }) {
    if (this.following || !this.isLinked()) return;
    const peers = this.peers();
    if (!peers.length) return;
    const linkedView = view ? this.linkedView() : null;
    const w = voi ? this.currentWindow() : null;
    for (const peer of peers) {
      peer.following = true;
      try {
        if (linkedView) peer.followView(linkedView);
        if (w) peer.followWindow(w, this.header);
      } catch (error) {
        console.warn('A linked viewer could not follow:', error);
      } finally {
        peer.following = false;
      }
    }
  }

  // Says what follows the other film, so an unlinked window is not a surprise.
  describeLink() {
    if (!this.linkText) return;
    const peers = [...this.group.members].filter((v) => v !== this && v.firstPaintAt !== null && v.root.isConnected);
    const apart = peers.map((v) => windowDifference(this.header, v.header)).find(Boolean);
    const mm = this.header.calibration.calibrated && peers.every((v) => v.header.calibration.calibrated);
    let text = '';
    if (peers.length && !this.group.linked) text = 'Not linked';
    else if (peers.length) {
      text = `Linked: zoom (${mm ? 'same mm per screen pixel' : 'relative to fit'}), pan`
        + (apart ? `; window per film (${apart})` : ', window');
    }
    this.linkText.textContent = text;
  }

  joinGroup() {
    for (const v of this.group?.members || []) v.describeLink();
    // A film that opens beside linked ones takes their view and window.
    const lead = this.peers()[0];
    if (!lead || !this.isLinked()) return;
    this.following = true;
    try {
      this.followView(lead.linkedView());
      this.followWindow(lead.currentWindow(), lead.header);
    } finally {
      this.following = false;
    }
  }

  toggleLink() {
    if (!this.group) return;
    this.group.linked = !this.group.linked;
    for (const v of this.group.members) {
      v.linkButton?.setAttribute('aria-pressed', String(this.group.linked));
      v.describeLink();
    }
    // Linking again brings the other films to this one's view.
    if (this.group.linked) this.passOn({ view: true, voi: true });
  }

  toggleHelp() {
    if (this.help.hasAttribute('hidden')) this.help.removeAttribute('hidden');
    else this.help.setAttribute('hidden', '');
  }

  onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    const tools = { w: 'wl', p: 'pan', z: 'zoom', l: 'length', a: 'angle' };
    if (tools[k.toLowerCase()]) this.setTool(tools[k.toLowerCase()]);
    else if (k === 'i' || k === 'I') this.toggleInvert();
    else if (k === 'f' || k === 'F') this.fit();
    else if (k === '1') this.oneToOne();
    else if (k === 'r' || k === 'R') this.reset();
    else if ((k === 'k' || k === 'K') && this.group) this.toggleLink();
    else if (k === 'v' || k === 'V') this.applyPreset(((this.presetIndex ?? -1) + 1) % this.header.presets.length);
    else if (k === '?' || k === 'h' || k === 'H') this.toggleHelp();
    else if (k === 'Delete' || k === 'Backspace') this.removeLastMeasurement();
    else if (k === 'Escape') this.help.setAttribute('hidden', '');
    else return;
    e.preventDefault();
    e.stopPropagation();
  }

  toImage(point) {
    const p = csUtils.worldToImageCoords(this.imageId, point) || [point[0], point[1]];
    return [p[0], p[1]];
  }

  measure(kind, points) {
    if (!points || points.length < (kind === 'angle' ? 3 : 2)) return null;
    const cal = this.header.calibration;
    const sx = cal.calibrated ? cal.col_mm : 1;
    const sy = cal.calibrated ? cal.row_mm : 1;
    const img = points.map((p) => this.toImage(p));
    const vec = (a, b) => [(b[0] - a[0]) * sx, (b[1] - a[1]) * sy];
    const where = cal.calibrated ? (cal.plane === 'detector' ? ' at detector' : cal.plane === 'patient' ? ' at patient' : '') : '';
    if (kind === 'length') {
      const [dx, dy] = vec(img[0], img[1]);
      const value = Math.hypot(dx, dy);
      const unit = cal.calibrated ? 'mm' : 'px';
      return { type: 'length', value, unit, points: img.slice(0, 2),
        text: cal.calibrated ? `${fmt(value, 1)} mm${where}` : `${fmt(value, 1)} px (uncalibrated)` };
    }
    const u = vec(img[1], img[0]);
    const v = vec(img[1], img[2]);
    const cos = (u[0] * v[0] + u[1] * v[1]) / (Math.hypot(...u) * Math.hypot(...v) || 1);
    const value = (Math.acos(Math.min(1, Math.max(-1, cos))) * 180) / Math.PI;
    return { type: 'angle', value, unit: 'deg', points: img.slice(0, 3), text: `${fmt(value, 1)}°` };
  }

  annotations() {
    const out = [];
    for (const name of [TOOLS.length, TOOLS.angle]) {
      for (const a of annotation.state.getAnnotations(name, this.vpElement) || []) out.push(a);
    }
    return out;
  }

  measurements() {
    const cal = this.header.calibration;
    const out = [];
    for (const a of this.annotations()) {
      const kind = a.metadata.toolName === TOOLS.angle ? 'angle' : 'length';
      const m = this.measure(kind, a.data.handles.points);
      if (!m) continue;
      out.push({ id: a.annotationUID, ...m, calibrated: kind === 'angle' || !!cal.calibrated,
        spacing_source: cal.source, plane: cal.plane, calibration: cal.label });
    }
    return out;
  }

  removeLastMeasurement() {
    const all = this.annotations();
    const last = all[all.length - 1];
    if (!last) return;
    annotation.state.removeAnnotation(last.annotationUID);
    this.viewport.render();
    this.updateMeasurements();
    this.queueState();
  }

  updateMeasurements() {
    const list = this.measurements();
    this.measureBox.textContent = list.length
      ? `Measurements: ${list.map((m, i) => `${i + 1}. ${m.text}`).join(' · ')}` : '';
  }

  updateStatus() {
    const w = this.currentWindow();
    this.windowText.textContent = `C ${fmt(w.center, 1)} / W ${fmt(w.width, 1)}`;
    this.windowText.dataset.center = String(w.center);
    this.windowText.dataset.width = String(w.width);
    if (this.viewport?.getCamera) {
      const s = this.scale() * (window.devicePixelRatio || 1);
      this.zoomText.textContent = `Zoom ${fmt(s * 100, 0)} % of full resolution`;
    }
  }

  layerCanvas(layer) {
    if (layer.canvas) return layer.canvas;
    const data = this.blocks[`map:${layer.key}`];
    const c = document.createElement('canvas');
    c.width = layer.columns;
    c.height = layer.rows;
    const ctx = c.getContext('2d');
    const img = ctx.createImageData(layer.columns, layer.rows);
    const lut = this.header.colour_table;
    const cut = Math.round(layer.threshold * 255);
    const alpha = new Uint8Array(256);
    for (let v = cut + 1; v < 256; v++) alpha[v] = Math.round(255 * ((v - cut) / (255 - cut)) ** layer.gamma);
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (!alpha[v]) continue;
      const [r, g, b] = lut[v];
      img.data[i * 4] = r; img.data[i * 4 + 1] = g; img.data[i * 4 + 2] = b; img.data[i * 4 + 3] = alpha[v];
    }
    ctx.putImageData(img, 0, 0);
    layer.canvas = c;
    return c;
  }

  drawOverlay() {
    if (!this.overlay || !this.viewport) return;
    const dpr = window.devicePixelRatio || 1;
    const w = this.vpElement.clientWidth;
    const h = this.vpElement.clientHeight;
    if (this.overlay.width !== Math.round(w * dpr) || this.overlay.height !== Math.round(h * dpr)) {
      this.overlay.width = Math.round(w * dpr);
      this.overlay.height = Math.round(h * dpr);
      this.overlay.style.width = `${w}px`;
      this.overlay.style.height = `${h}px`;
    }
    const ctx = this.overlay.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    this.overlayTransform = null;
    for (const layer of this.layers) {
      if (!layer.visible) continue;
      // The map's rectangle in image pixel edges; world = image pixel centres, so edges sit at -0.5.
      const [x0, y0, x1, y1] = layer.extent;
      const p0 = this.viewport.worldToCanvas([x0 - 0.5, y0 - 0.5, 0]);
      const px = this.viewport.worldToCanvas([x1 - 0.5, y0 - 0.5, 0]);
      const py = this.viewport.worldToCanvas([x0 - 0.5, y1 - 0.5, 0]);
      const t = [(px[0] - p0[0]) / layer.columns, (px[1] - p0[1]) / layer.columns,
        (py[0] - p0[0]) / layer.rows, (py[1] - p0[1]) / layer.rows, p0[0], p0[1]];
      ctx.setTransform(t[0] * dpr, t[1] * dpr, t[2] * dpr, t[3] * dpr, t[4] * dpr, t[5] * dpr);
      ctx.imageSmoothingEnabled = false;
      ctx.globalAlpha = layer.opacity;
      ctx.drawImage(this.layerCanvas(layer), 0, 0);
      this.overlayTransform = t;
    }
    ctx.globalAlpha = 1;
  }

  // Screen colour at an image pixel (for tests and the benchmark): [r, g, b, a] of the rendered canvas.
  sample(col, row) {
    const canvas = this.viewport.canvas;
    const [x, y] = this.viewport.worldToCanvas([col, row, 0]);
    const dpr = window.devicePixelRatio || 1;
    const ctx = canvas.getContext('2d');
    return ctx ? Array.from(ctx.getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data) : null;
  }

  sampleOverlay(col, row) {
    const [x, y] = this.viewport.worldToCanvas([col, row, 0]);
    const dpr = window.devicePixelRatio || 1;
    return Array.from(this.overlay.getContext('2d').getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data);
  }

  state() {
    const w = this.currentWindow();
    return {
      study_id: this.header.study_id,
      content_id: this.header.content_id,
      window: { center: w.center, width: w.width },
      invert: this.invert,
      zoom: this.viewport ? this.scale() * (window.devicePixelRatio || 1) : null,
      renderer: this.renderer.renderer,
      gl_renderer: this.renderer.glRenderer,
      calibration: this.header.calibration,
      measurements: this.measurements(),
      layers: this.layers.filter((l) => l.visible).map((l) => ({ key: l.key, opacity: l.opacity, threshold: l.threshold })),
    };
  }

  reportable(state) {
    return JSON.stringify([state.window, state.invert, state.measurements]);
  }

  queueState() {
    clearTimeout(this.sendTimer);
    // Each value sent reruns the page, and a rerun stops a running analysis: send only what Python keeps (window,
    // invert, measurements), once the hand has stopped, and never while the app is busy.
    this.sendTimer = setTimeout(() => {
      if (!this.viewport || this.destroyed) return;
      if (document.querySelector(APP_RUNNING)) { this.queueState(); return; }
      const value = this.state();
      const text = this.reportable(value);
      if (text !== this.lastSent) {
        this.lastSent = text;
        this.setStateValue('value', value);
      }
    }, 600);
  }

  destroy() {
    this.destroyed = true;
    clearTimeout(this.sendTimer);
    if (this.group) {
      this.group.members.delete(this);
      for (const v of this.group.members) v.describeLink();
      if (!this.group.members.size && groups.get(this.header.link_group) === this.group) groups.delete(this.header.link_group);
    }
    this.resizeObserver?.disconnect();
    document.removeEventListener('mouseup', this.onMouseUp);
    eventTarget.removeEventListener(Enums.Events.IMAGE_LOAD_ERROR, this.onLoadError);
    const T = ToolEnums.Events;
    for (const ev of [T.ANNOTATION_COMPLETED, T.ANNOTATION_MODIFIED, T.ANNOTATION_REMOVED]) {
      eventTarget.removeEventListener(ev, this.onAnnotation);
    }
    try { ToolGroupManager.destroyToolGroup(this.toolGroupId); } catch (e) { /* already gone */ }
    try { this.engine.destroy(); } catch (e) { /* already gone */ }
    images.delete(this.imageId);
    try { cache.removeImageLoadObject(this.imageId); } catch (e) { /* not cached */ }
    this.root.remove();
  }
}

// Test and benchmark hook: the live viewers of this page.
window.__medsightViewers = instances;

export default function mount({ data, parentElement, setStateValue }) {
  const payload = decode(data);
  const existing = instances.get(parentElement);
  if (existing && existing.header.content_id === payload.header.content_id) {
    return () => { existing.destroy(); instances.delete(parentElement); };
  }
  if (existing) existing.destroy();
  const viewer = new Viewer(parentElement, payload, setStateValue);
  instances.set(parentElement, viewer);
  return () => { viewer.destroy(); instances.delete(parentElement); };
}
