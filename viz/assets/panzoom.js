// The pan-and-zoom viewer of graphdiff.viz's pages (tour, compare, stepper): written for them, no library,
// no network. Markup (viz.page.viewer): <div class="pz" data-group="G"><div class="pz-bar">...</div>
// <div class="pz-view">SVG</div></div>. A viewer shows its SVG at a scale in screen px per SVG unit (Graphviz
// writes points: natural size is 4/3 px per unit). Its default scale fits the viewer's width, but never
// goes over natural size nor under the scale at which the smallest node text is MIN_TEXT_PX high: a large
// graph is panned (drag it, or scroll), not shrunk to unreadable text. Viewers of one data-group (Version
// A beside Version B) always share one scale: zooming one zooms the others. Ctrl/Cmd + wheel zooms at the
// pointer; the bar's buttons zoom out, in, back to the default ("fit"), and to natural size ("1:1").
"use strict";
const PanZoom = (() => {
  const MIN_TEXT_PX = 10.5, NATURAL = 4 / 3, STEP = 1.25;
  const svgOf = v => v.querySelector(".pz-view svg");
  function size(svg) {
    const vb = svg.viewBox && svg.viewBox.baseVal;
    if (vb && vb.width > 0) return {w: vb.width, h: vb.height};
    const b = svg.getBBox();
    return {w: b.width || 1, h: b.height || 1};
  }
  function smallestNodeFont(svg) {
    let m = Infinity;
    for (const t of svg.querySelectorAll("g.node text")) {
      const f = parseFloat(t.getAttribute("font-size"));
      if (f > 0) m = Math.min(m, f);
    }
    return isFinite(m) ? m : 14;
  }
  function members(v) {
    const g = v.dataset.group;
    return g ? [...document.querySelectorAll(".pz")].filter(o => o.dataset.group === g && svgOf(o)) : [v];
  }
  function readable(v) { return MIN_TEXT_PX / smallestNodeFont(svgOf(v)); }
  function fit(v) { return (v.querySelector(".pz-view").clientWidth - 2) / size(svgOf(v)).w; }
  function defaultScale(vs) {
    return Math.max(Math.min(NATURAL, ...vs.map(fit)), ...vs.map(readable));
  }
  function apply(v, s, cx, cy) {
    const svg = svgOf(v), view = v.querySelector(".pz-view");
    if (!svg) return;
    const old = parseFloat(v.dataset.scale) || s, b = size(svg);
    const x = cx === undefined ? null : (view.scrollLeft + cx) / old;
    const y = cy === undefined ? null : (view.scrollTop + cy) / old;
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.style.width = (b.w * s) + "px";
    svg.style.height = (b.h * s) + "px";
    v.dataset.scale = String(s);
    const label = v.querySelector(".pz-scale");
    if (label) label.textContent = Math.round(100 * s / NATURAL) + "%";
    if (x !== null) { view.scrollLeft = x * s - cx; view.scrollTop = y * s - cy; }
  }
  function zoom(v, to, cx, cy) {
    for (const m of members(v)) apply(m, to, m === v ? cx : undefined, m === v ? cy : undefined);
  }
  function attach(v) {
    if (v.dataset.pz) { refresh(v); return; }
    v.dataset.pz = "1";
    const view = v.querySelector(".pz-view");
    const cur = () => parseFloat(v.dataset.scale) || defaultScale(members(v));
    const on = (sel, f) => { const b = v.querySelector(sel); if (b) b.addEventListener("click", f); };
    on(".pz-out", () => zoom(v, cur() / STEP));
    on(".pz-in", () => zoom(v, cur() * STEP));
    on(".pz-fit", () => zoom(v, defaultScale(members(v))));
    on(".pz-one", () => zoom(v, NATURAL));
    view.addEventListener("wheel", e => {
      if (!(e.ctrlKey || e.metaKey)) return;
      e.preventDefault();
      const r = view.getBoundingClientRect();
      zoom(v, cur() * (e.deltaY < 0 ? STEP : 1 / STEP), e.clientX - r.left, e.clientY - r.top);
    }, {passive: false});
    let drag = null;
    view.addEventListener("pointerdown", e => {
      if (e.button !== 0 || e.target.closest("a")) return;
      drag = {x: e.clientX, y: e.clientY, left: view.scrollLeft, top: view.scrollTop};
      view.classList.add("dragging");
    });
    window.addEventListener("pointermove", e => {
      if (!drag) return;
      view.scrollLeft = drag.left - (e.clientX - drag.x);
      view.scrollTop = drag.top - (e.clientY - drag.y);
    });
    window.addEventListener("pointerup", () => { drag = null; view.classList.remove("dragging"); });
    refresh(v);
  }
  // after the SVG was replaced (the stepper's next frame): the viewer's scale, or the group's default
  function refresh(v) {
    if (!v.dataset.pz) { attach(v); return; }
    if (!svgOf(v)) return;
    const known = members(v).map(m => parseFloat(m.dataset.scale)).find(s => s > 0);
    apply(v, known || defaultScale(members(v)));
  }
  function init(root) {
    const all = [...(root || document).querySelectorAll(".pz")];
    const groups = new Map();
    for (const v of all) {
      if (!svgOf(v)) continue;
      const key = v.dataset.group || v;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(v);
    }
    for (const vs of groups.values()) {
      const s = defaultScale(vs);
      for (const v of vs) { apply(v, s); attach(v); }
    }
  }
  return {init, attach, refresh, zoom, defaultScale, MIN_TEXT_PX, NATURAL};
})();
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => PanZoom.init());
else PanZoom.init();
