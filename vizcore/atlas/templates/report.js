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
  window.addEventListener("load", function () {
    var imgs = document.querySelectorAll("img.unit-thumb");
    var ok = 0;
    for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
    document.body.setAttribute("data-thumbs-loaded", String(ok));
  });
})();
