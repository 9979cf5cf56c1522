// The stepper page: shows step k of every variant's frames (buttons, arrow keys, Home, End), scrolls the
// active node into view and keeps the panes scrolled together. The page defines, before this script,
// DATA = {variants: [{name, about, frames: [{caption, svg, active}]}]} (graphdiff.viz.trace.stepper_page),
// and panzoom.js (PanZoom) before it.
const N = Math.max(1, ...DATA.variants.map(v => v.frames.length));
let step = 0;
function show(k) {
  step = Math.max(0, Math.min(N - 1, k));
  for (const v of DATA.variants) {
    const pane = document.getElementById("pane-" + v.name);
    const f = v.frames[Math.min(step, v.frames.length - 1)];
    if (!f) continue;
    const box = pane.querySelector(".svg");
    const top = box.scrollTop, left = box.scrollLeft;
    box.innerHTML = f.svg;
    PanZoom.refresh(box.closest(".pz"));      // the frame at the panes' shared scale (panzoom.js)
    box.scrollTop = top; box.scrollLeft = left;
    pane.querySelector(".caption").textContent = f.caption;
    // the active node: found by its DOT id (each node's <title>), scrolled into view inside its pane
    const active = [...box.querySelectorAll("g.node")].find(g => g.querySelector("title").textContent === f.active);
    if (active) {
      active.classList.add("active");
      const a = active.getBoundingClientRect(), b = box.getBoundingClientRect();
      if (a.top < b.top || a.bottom > b.bottom) box.scrollTop += (a.top + a.bottom) / 2 - (b.top + b.bottom) / 2;
      if (a.left < b.left || a.right > b.right) box.scrollLeft += (a.left + a.right) / 2 - (b.left + b.right) / 2;
    }
  }
  document.getElementById("counter").textContent = "step " + (step + 1) + " / " + N;
  document.getElementById("prev").disabled = document.getElementById("first").disabled = step === 0;
  document.getElementById("next").disabled = document.getElementById("last").disabled = step === N - 1;
  document.body.dataset.step = String(step + 1);
}
// both panes draw the same graph with the same layout: scrolling one scrolls the other to the same place
for (const box of document.querySelectorAll(".pane .svg")) {
  box.addEventListener("scroll", () => {
    for (const other of document.querySelectorAll(".pane .svg")) {
      if (other !== box && (other.scrollTop !== box.scrollTop || other.scrollLeft !== box.scrollLeft)) {
        other.scrollTop = box.scrollTop; other.scrollLeft = box.scrollLeft;
      }
    }
  });
}
document.getElementById("first").addEventListener("click", () => show(0));
document.getElementById("prev").addEventListener("click", () => show(step - 1));
document.getElementById("next").addEventListener("click", () => show(step + 1));
document.getElementById("last").addEventListener("click", () => show(N - 1));
document.addEventListener("keydown", e => {
  const to = {ArrowRight: step + 1, ArrowLeft: step - 1, Home: 0, End: N - 1}[e.key];
  if (to !== undefined) { e.preventDefault(); show(to); }
});
show(0);
