"""The HTML report in a real browser (headless Chromium): it renders, shows every unit, escapes hostile names,
opens the lightbox, and makes no network request. Skipped when no Chromium is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from test_atlas import HOSTILE, TRAVERSAL, tiny_cnn

import vizcore
from vizcore.atlas import build_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs headless chromium (apt-get install chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--disable-extensions"]
UNITS = 5


def chromium(tmp: Path, url: str, *extra: str) -> str:
    """Run headless Chromium on `url` with a fresh profile; returns stdout (the DOM with --dump-dom)."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of the tiny model rendered by the real engine (few steps, small images), with health marks."""
    tmp = tmp_path_factory.mktemp("atlas")
    model = vizcore.load(tiny_cnn(tmp / "tiny.onnx"))
    health = {"passed": False, "failures": [], "layers": [
        {"name": HOSTILE, "channels": 6, "dead": [4], "constant": [], "duplicates": [[0, 1, "flip_h", 0.95]]}]}
    index = build_report(model, tmp / "report", layers=[HOSTILE, TRAVERSAL], units_per_layer=UNITS, classes="1,2",
                         steps=6, size=48, health=health)
    return index.parent


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    return tmp_path


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def dom(tmp: Path, page: Path) -> Elements:
    e = Elements()
    e.feed(chromium(tmp, page.as_uri(), "--dump-dom"))
    return e


def screenshot(tmp: Path, url: str, size: str = "1280,900") -> Image.Image:
    shot = tmp / f"shot-{len(list(tmp.glob('shot-*')))}.png"
    chromium(tmp, url, f"--screenshot={shot}", f"--window-size={size}")
    return Image.open(shot).convert("RGB")


def page_of(atlas: Path, name: str) -> Path:
    man = json.loads((atlas / "manifest.json").read_text())
    return atlas / next(ly["page"] for ly in man["layers"] if ly["name"] == name)


def test_pages_render_and_are_not_blank(atlas: Path, scratch: Path) -> None:
    for page in (atlas / "index.html", page_of(atlas, HOSTILE), atlas / "classes.html"):
        img = screenshot(scratch, page.as_uri())
        assert img.size == (1280, 900)
        spread = ImageStat.Stat(img.convert("L")).stddev[0]
        assert spread > 20, f"{page.name} looks blank (pixel std {spread:.1f})"
        assert len(img.getcolors(1 << 24)) > 500, f"{page.name} has too few colours for a page of unit images"


def test_dom_has_every_unit_loaded_and_hostile_name_as_text(atlas: Path, scratch: Path) -> None:
    page = dom(scratch, page_of(atlas, HOSTILE))
    thumbs = [a for t, a in page.tags if t == "img" and "unit-thumb" in (a.get("class") or "")]
    assert len(thumbs) == UNITS
    body = next(a for t, a in page.tags if t == "body")
    assert body.get("data-thumbs-loaded") == str(UNITS)  # every image decoded from disk, and the script ran
    assert HOSTILE in page.title  # the name is text in the title, not markup
    assert not any("onerror" in a or a.get("src") == "x" for _, a in page.tags)
    assert [t for t, a in page.tags if t == "img" and "unit-thumb" not in (a.get("class") or "")
            and not (a.get("src") or "").startswith("img/")] == []
    other = dom(scratch, page_of(atlas, TRAVERSAL))
    assert TRAVERSAL in other.title
    assert len([a for t, a in other.tags if t == "img" and "unit-thumb" in (a.get("class") or "")]) == UNITS
    classes = dom(scratch, atlas / "classes.html")
    assert len([a for t, a in classes.tags if t == "img" and "unit-thumb" in (a.get("class") or "")]) == 2


def test_lightbox_opens_on_click_target(atlas: Path, scratch: Path) -> None:
    url = page_of(atlas, HOSTILE).as_uri()
    closed = ImageStat.Stat(screenshot(scratch, url).convert("L")).mean[0]
    opened = ImageStat.Stat(screenshot(scratch, url + "#u1").convert("L")).mean[0]
    assert opened < closed - 40, (closed, opened)  # the dark backdrop covers the page


def _page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network for (Chromium's own background traffic has another isolation key)."""
    data = json.loads(netlog.read_text())
    names = {v: k for k, v in data["constants"]["logEventTypes"].items()}
    urls = []
    for ev in data["events"]:
        p = ev.get("params") or {}
        if names.get(ev["type"]) == "URL_REQUEST_START_JOB" and "file://" in str(p.get("network_isolation_key")):
            urls.append(p["url"])
    return urls


def test_no_network_requests(atlas: Path, scratch: Path) -> None:
    # the detector works: a control page with remote images is caught
    control = scratch / "control.html"
    control.write_text('<!doctype html><img src="http://127.0.0.1:9/a.png"><img src="https://example.invalid/b.png">')
    chromium(scratch, control.as_uri(), "--dump-dom", f"--log-net-log={scratch / 'control.json'}")
    assert len(_page_requests(scratch / "control.json")) == 2
    for i, page in enumerate((atlas / "index.html", page_of(atlas, HOSTILE), atlas / "classes.html")):
        log = scratch / f"net-{i}.json"
        chromium(scratch, page.as_uri() + "#u0", "--dump-dom", f"--log-net-log={log}")
        assert _page_requests(log) == [], page.name


def test_show_heat_map_swaps_every_thumbnail_for_its_map(scratch: Path) -> None:
    model = vizcore.load(tiny_cnn(scratch / "tiny.onnx"))
    out = build_report(model, scratch / "report", layers=[TRAVERSAL], units_per_layer=3, classes="1", steps=4, size=32,
                       alpha=True, health=False, fidelity=False).parent
    page = page_of(out, TRAVERSAL)
    (out / "assets" / "click.js").write_text('document.querySelector(\'.viewer button[data-view="heat"]\').click();\n')
    clicked = page.with_name("clicked.html")  # the page's own policy allows scripts of the report only
    clicked.write_text(page.read_text().replace("</body>", '<script src="assets/click.js" defer></script></body>'))
    got = Elements()
    got.feed(chromium(scratch, clicked.as_uri(), "--dump-dom"))
    thumbs = [a for t, a in got.tags if t == "img" and "unit-thumb" in (a.get("class") or "")]
    assert len(thumbs) == 3 and all(a["src"] == a["data-heat"] != a["data-picture"] for a in thumbs)
    assert next(a for t, a in got.tags if t == "body").get("data-view") == "heat"
    untouched = [a for t, a in dom(scratch, page).tags if t == "img" and "unit-thumb" in (a.get("class") or "")]
    assert all(a["src"] == a["data-picture"] for a in untouched)
