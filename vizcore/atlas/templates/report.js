// vizcore atlas: keyboard for the lightbox (Esc closes, arrows step). The page works without it.
(function () {
  "use strict";
  function open() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = id ? document.getElementById(id) : null;
    return el && el.classList.contains("lightbox") ? el : null;
  }
  document.addEventListener("keydown", function (e) {
    var box = open();
    if (!box) { return; }
    var sel = e.key === "Escape" ? ".lb-close" : e.key === "ArrowLeft" ? ".lb-prev" : e.key === "ArrowRight" ? ".lb-next" : null;
    var link = sel ? box.querySelector(sel) : null;
    if (link) { e.preventDefault(); location.replace(link.getAttribute("href")); }
  });
  // "sort by" on a layer page: reorder the unit cards (channel order, verdict worst first, activation highest first)
  function key(el, by) {
    if (by === "verdict") { return [Number(el.getAttribute("data-verdict")), -Number(el.getAttribute("data-activation") || -Infinity)]; }
    if (by === "activation") { var a = el.getAttribute("data-activation"); return [a === "" ? Infinity : -Number(a), 0]; }
    return [Number(el.getAttribute("data-order")), 0];
  }
  document.addEventListener("click", function (e) {
    var btn = e.target.closest ? e.target.closest(".sorter button") : null;
    var grid = document.querySelector("section.grid");
    if (!btn || !grid) { return; }
    var by = btn.getAttribute("data-sort");
    var cards = Array.prototype.slice.call(grid.querySelectorAll("figure.unit"));
    cards.sort(function (p, q) { var a = key(p, by), b = key(q, by); return a[0] - b[0] || a[1] - b[1] || key(p, "order")[0] - key(q, "order")[0]; });
    cards.forEach(function (c) { grid.appendChild(c); });
    var all = document.querySelectorAll(".sorter button");
    for (var i = 0; i < all.length; i++) { all[i].classList.toggle("on", all[i] === btn); }
    document.body.setAttribute("data-sorted", by);
  });
  // "show" on a page with alpha maps: each thumbnail as the picture, the picture where it matters, or the heat map
  document.addEventListener("click", function (e) {
    var btn = e.target.closest ? e.target.closest(".viewer button") : null;
    if (!btn) { return; }
    var view = btn.getAttribute("data-view");
    var imgs = document.querySelectorAll("img.unit-thumb[data-" + view + "]");
    for (var i = 0; i < imgs.length; i++) { imgs[i].setAttribute("src", imgs[i].getAttribute("data-" + view)); }
    var all = document.querySelectorAll(".viewer button");
    for (var j = 0; j < all.length; j++) { all[j].classList.toggle("on", all[j] === btn); }
    document.body.setAttribute("data-view", view);
  });
  window.addEventListener("load", function () {
    var imgs = document.querySelectorAll("img.unit-thumb");
    var ok = 0;
    for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
    document.body.setAttribute("data-thumbs-loaded", String(ok));
  });
})();
