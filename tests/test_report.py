"""The HTML report: built from a small store (a quick study, a tiny sweep, plain train runs),
its structure, offline-ness, byte-for-byte regeneration by a process that never trained, and
the page in headless Chromium (no console errors, figures with a size, the x-axis switch).

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``), so
no websocket library and no browser download is needed; only Debian's ``chromium``.
"""

from __future__ import annotations

import base64
import fcntl
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from batchlab.store import Store

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "report-screenshots"

TRAIN_AND_REPORT = textwrap.dedent("""
    import sys
    import batchlab
    from batchlab.report import build_report
    from batchlab.studies import get_study
    from batchlab.studies.runner import run_study
    from batchlab.sweep.spec import SweepSpec
    from batchlab.sweep.run import run_sweep

    db, out = sys.argv[1], sys.argv[2]
    run_study(get_study("brownlee"), quick=True, overrides={"seeds": 2, "epochs": 30}, db=db, out=out + "/brownlee")
    run_sweep(SweepSpec(name="tiny", data="blobs", hidden=(8,), batch_sizes="10,50,100,full", lr="0.05,0.2",
                        seeds=2, budget="epochs=6", target="test_acc>=0.7"), db, executor="local")
    batchlab.train("moons", "mlp", batch_size=[8, 64], epochs=5, lr=0.05, seeds=2, db=db)
    batchlab.train("digits", "logreg", batch_size=32, epochs=3, lr=0.1, db=db)
    batchlab.train("blobs", "mlp", hidden=(8,), batch_size=[1, 500], epochs=2, lr=5.0, db=db)  # B=1 diverges
    print(build_report(db, out + "/first"))
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Train and build a report in a subprocess that then exits; rebuild here from the store alone."""
    from batchlab.report import build_report

    root = tmp_path_factory.mktemp("report")
    db = root / "store.db"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", TRAIN_AND_REPORT, str(db), str(root)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = Path(proc.stdout.strip().splitlines()[-1])
    trained = time.perf_counter() - start
    start = time.perf_counter()
    path = build_report(db, root / "second")
    print(f"\ntrain + first report (subprocess): {trained:.1f} s; rebuild here: {time.perf_counter() - start:.1f} s")
    return dict(db=db, root=root, first=first, path=path, text=path.read_text(encoding="utf-8"))


def test_rebuilt_by_another_process_is_identical(built):
    assert built["first"].read_bytes() == built["path"].read_bytes()


def test_the_command_builds_the_same_page_with_its_figure_helpers(built, tmp_path):
    """``batchlab report`` (a fresh process) builds the studies' sections in helper processes."""
    done = subprocess.run([sys.executable, "-m", "batchlab.cli", "report", "--db", str(built["db"]), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "BATCHLAB_FIGURE_HELPERS": "1"})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip().splitlines()[-1]).read_bytes() == built["path"].read_bytes()


REBUILD = textwrap.dedent("""
    import sys
    from batchlab.report import build_report

    print(build_report(sys.argv[1], sys.argv[2]))
""")
KEPT_FIGURES_ONLY = textwrap.dedent("""
    import sys
    from batchlab.report import build_report
    from batchlab.studies import get_study

    def drawn_again(*args):
        raise RuntimeError("drawn again")

    for spec in get_study("brownlee").figures:
        object.__setattr__(spec, "draw", drawn_again)
    print(build_report(sys.argv[1], sys.argv[2]))
""")


def test_the_report_uses_the_figures_its_study_kept_and_they_are_the_ones_it_would_draw(built, tmp_path):
    """The study kept its figures' SVG (``plots/memo.py``): a report whose study figure functions
    all fail still shows every figure, and with caching off (every figure drawn again) the page
    is the same, byte for byte."""
    for name, script, env in (("kept", KEPT_FIGURES_ONLY, {}), ("drawn", REBUILD, {"BATCHLAB_CACHE_DIR": "off"})):
        done = subprocess.run([sys.executable, "-c", script, str(built["db"]), str(tmp_path / name)],
                              capture_output=True, text=True, timeout=600, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        assert "drawn again" not in done.stderr
        assert Path(done.stdout.strip().splitlines()[-1]).read_bytes() == built["path"].read_bytes(), name


def test_the_page_shows_the_very_figures_the_study_wrote(built):
    """Each figure file ``batchlab study`` wrote is, inlined, the report's figure: the study
    analyses its groups of runs in the order its record keeps them."""
    from batchlab.report.figures import inline_svg
    from batchlab.report.studies import _caption
    from batchlab.studies import get_study

    figures = get_study("brownlee").figures
    assert len(figures) >= 3
    for k, spec in enumerate(figures):
        written = (built["root"] / "brownlee" / f"{spec.name}.svg").read_text(encoding="utf-8")
        assert inline_svg(written, f"study-brownlee-f{k}", _caption(spec.name)) in built["text"], spec.name


def test_a_damaged_kept_figure_is_drawn_again(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from batchlab.report.figures import draw_svg

    monkeypatch.setenv("BATCHLAB_CACHE_DIR", str(tmp_path))
    drawn = []

    def figure():
        drawn.append(1)
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig

    key = "0" * 64
    first = draw_svg(figure, "fig", "a line", key)
    kept = tmp_path / "figures" / f"{key}.svg"
    assert drawn == [1] and kept.read_text().startswith("<?xml")
    assert draw_svg(figure, "fig", "a line", key) == first and drawn == [1]  # kept: not drawn again
    kept.write_text(kept.read_text()[:2000])  # cut short, as by a full disk
    assert draw_svg(figure, "fig", "a line", key) == first and drawn == [1, 1]


def test_a_kept_figure_is_found_only_by_exactly_what_it_was_drawn_from():
    import pickle

    import numpy as np
    import pandas as pd

    from batchlab.plots.memo import figure_key

    tables = {"curve": pd.DataFrame({"epoch": [0, 1, 2], "acc": [0.5, 0.75, 0.8], "group": ["a", "a", "b"]})}
    settings = {"seeds": 2, "batch_sizes": (1, 32)}
    key = figure_key("brownlee", "learning_curves_acc", tables, settings)
    assert key == figure_key("brownlee", "learning_curves_acc", pickle.loads(pickle.dumps(tables)), dict(settings))
    nudged = tables["curve"].copy()
    nudged.loc[2, "acc"] = np.nextafter(0.8, 1.0)
    relabelled = tables["curve"].copy()
    relabelled.loc[2, "group"] = "c"
    others = [figure_key("brownlee", "learning_curves_acc", {"curve": nudged}, settings),
              figure_key("brownlee", "learning_curves_acc", {"curve": relabelled}, settings),
              figure_key("brownlee", "learning_curves_acc", {"curve": tables["curve"].astype({"epoch": float})}, settings),
              figure_key("brownlee", "learning_curves_acc", tables, {**settings, "seeds": 3}),
              figure_key("brownlee", "learning_curves_loss", tables, settings),
              figure_key("distance", "learning_curves_acc", tables, settings)]
    assert len({key, *others}) == 7


def test_every_study_sweep_and_run_group_is_on_the_page(built):
    text = built["text"]
    with Store(built["db"], create=False) as store:
        studies, sweeps = store.studies(), store.sweeps()
    assert list(studies) == ["brownlee"] and list(sweeps) == ["tiny"]
    assert 'id="study-brownlee"' in text and 'href="#study-brownlee"' in text
    assert 'id="sweep-tiny"' in text and 'href="#sweep-tiny"' in text
    groups = re.findall(r'<section id="(runs-\d+)"[^>]*><h2[^>]*>'
                        r'<span class="section-kind">training runs</span>([^<]+)<', text)
    titles = sorted(html.unescape(t) for _, t in groups)
    assert titles == ["blobs · mlp (8) · sgd", "digits · logreg · sgd", "moons · mlp (50) · sgd"], titles
    for anchor, _ in groups:
        assert f'href="#{anchor}"' in text
    # the diverged run is counted, and the study's findings carry verdict badges and their numbers
    assert '"diverged":1' in text
    for finding in studies["brownlee"]["findings"]:
        assert html.escape(finding["claim"]) in text
        assert html.escape(finding["measured"]) in text
    badges = re.findall(r'<span class="badge badge-(\w+)">(\w+)</span>', text)
    assert len(badges) == len(studies["brownlee"]["findings"]) and all(a == b for a, b in badges)
    assert "Resolved settings" in text and "The idea: Batch, epoch and update" in text
    assert 'class="notice"' not in text.split('id="sweep-tiny"')[0], "the study could not be rebuilt"


def test_every_figure_is_inline_svg(built):
    from batchlab.studies import get_study

    text = built["text"]
    figures = re.findall(r'<figure class="fig" id="([^"]+)"><svg\b[^>]*class="mpl" role="img" aria-label="[^"]+"', text)
    expected = {f"study-brownlee-{spec.name.replace('_', '-')}" for spec in get_study("brownlee").figures}
    expected |= {f"sweep-tiny-{name}" for name in ("to-target-vs-batch", "lr-batch-heatmap", "final-metrics-vs-batch",
                                                   "learning-curves-best-lr")}
    expected |= {f"runs-{k}-{metric}" for k in (1, 2, 3) for metric in ("acc", "loss")}
    assert set(figures) == expected
    assert text.count('<figure class="fig"') == len(expected)
    charts = re.findall(r'<figure class="chart" id="([^"]+)"', text)
    assert charts == ["study-brownlee-chart", "sweep-tiny-chart", "runs-1-chart", "runs-2-chart", "runs-3-chart"]
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids)), "element ids repeat across figures"


def test_nothing_is_fetched_from_the_network(built):
    text = built["text"]
    attribute = r'''\b(?:src|href|xlink:href|action|poster|data|srcset)\s*=\s*["']?\s*'''
    css = r'''url\(\s*["']?|@import\s+["']?'''
    fetched = re.findall(rf'''(?:{attribute}|{css})((?:https?:)?//[^"')\s>]*)''', text, flags=re.I)
    assert fetched == []
    assert "<link" not in text and not re.search(r"<script[^>]+src=", text) and "<iframe" not in text
    assert "<!DOCTYPE svg" not in text and "<metadata>" not in text


def test_one_study_page(built):
    from batchlab.errors import BatchlabError
    from batchlab.report import build_report

    page = build_report(built["db"], built["root"] / "one", study="brownlee")
    text = page.read_text(encoding="utf-8")
    assert page.name == "brownlee.html"
    assert 'id="study-brownlee"' in text and 'id="sweep-tiny"' not in text and "runs-1" not in text
    assert text.count('<figure class="fig"') == 4
    with pytest.raises(BatchlabError, match="no study 'distance' recorded"):
        build_report(built["db"], built["root"] / "one", study="distance")


# ---------------------------------------------------------------- the page in headless Chromium

def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _above_nine(fd: int) -> int:
    """``fd`` moved to a number above 9: putting it on 3 or 4 in the child then overwrites nothing."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (NUL-separated JSON)."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="batchlab-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        to_chrome_r, from_chrome_w = _above_nine(to_chrome_r), _above_nine(from_chrome_w)
        # The browser reads commands on fd 3 and writes replies on fd 4: bash puts the pipes
        # there and becomes the browser (no preexec_fn: JAX warns of any fork that runs Python).
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                "--no-default-browser-check", "--hide-scrollbars", f"--user-data-dir={self.profile}", "about:blank"]
        wire = f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.proc = subprocess.Popen(["bash", "-c", wire, "bash", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._next, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params):
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("no message from the browser")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str, width: int, height: int = 900, mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.time() + 60
        while self.js("document.readyState === 'complete' && document.body.hasAttribute('data-ready')") is not True:
            if self.errors():  # the script threw before it finished: the caller's checks say what
                return
            if time.time() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            time.sleep(0.1)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error log entries since the last ``open``."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(params["entry"].get("text", "")[:500])
        return out

    def screenshot(self, path: Path, width: int, mobile: bool = False) -> None:
        height = int(self.js("document.documentElement.scrollHeight"))
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=min(height, 16000),
                  deviceScaleFactor=1, mobile=mobile)
        time.sleep(0.3)  # the charts redraw after a resize
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium found (apt-get install -y chromium; .ci/run installs it): browser checks skipped")
    b = Browser(binary)
    yield b
    b.close()


SIZES = """JSON.stringify(Array.from(document.querySelectorAll('figure.fig, figure.chart')).map(f => {
  const r = (f.querySelector('svg') || f).getBoundingClientRect(), box = f.getBoundingClientRect();
  return [f.id, Math.round(r.width), Math.round(r.height), f.getAttribute('data-rendered'), Math.round(box.right)];
}))"""
DRAWN = """JSON.stringify(Array.from(document.querySelectorAll('figure.chart')).map(f => {
  const svg = f.querySelector('.plot svg');
  return [f.id, svg.getAttribute('data-x'), svg.querySelector('.xlabel').textContent,
          Array.from(svg.querySelectorAll('.series path')).map(p => p.getAttribute('d')).join('|'),
          Array.from(svg.querySelectorAll('.axis text')).map(t => t.textContent).join('|')];
}))"""


@pytest.mark.parametrize("width, mobile", [(1280, False), (390, True)], ids=["laptop", "phone"])
def test_page_in_headless_chromium(built, browser, width, mobile):
    url = built["path"].as_uri()
    browser.open(url, width, mobile=mobile)
    assert browser.errors() == []
    assert browser.js("document.body.getAttribute('data-js-errors')") is None
    assert browser.js("document.body.getAttribute('data-ready')") == "5"  # five charts drawn
    sizes = json.loads(browser.js(SIZES))
    assert len(sizes) == 19
    for fig_id, w, h, rendered, right in sizes:
        assert w > 150 and h > 80, (fig_id, w, h)
        assert right <= width, (fig_id, right)  # no frame sticks out of the screen (wide figures scroll inside)
        assert rendered and rendered != "0x0", (fig_id, rendered)
    assert browser.js("document.documentElement.scrollWidth") <= width  # no sideways scrolling of the page
    browser.screenshot(SHOTS / f"report-{width}.png", width, mobile)

    # the x-axis switch: a click redraws the chart against the new clock. Samples seen are N per
    # epoch for every run, so against samples only the ticks change; against updates batch
    # sizes separate, so in a chart with several batch sizes the lines themselves move.
    drawn = {"epoch": json.loads(browser.js(DRAWN))}
    for x in ("samples_seen", "step"):
        browser.js(f"document.querySelectorAll('figure.chart input[value={x}]').forEach(i => i.click())")
        drawn[x] = json.loads(browser.js(DRAWN))
    for k, (chart_id, x, label, paths, ticks) in enumerate(drawn["epoch"]):
        _, x_s, label_s, paths_s, ticks_s = drawn["samples_seen"][k]
        _, x_u, label_u, paths_u, ticks_u = drawn["step"][k]
        assert (x, x_s, x_u) == ("epoch", "samples_seen", "step"), chart_id
        assert label == "epochs" and label_s.startswith("samples seen") and label_u.startswith("updates"), chart_id
        assert paths and paths_s and paths_u and ticks != ticks_s and ticks != ticks_u, chart_id
        if chart_id in ("study-brownlee-chart", "sweep-tiny-chart", "runs-1-chart"):
            assert paths_u != paths, chart_id
    assert browser.errors() == []


def test_hash_chooses_the_starting_axis(built, browser):
    url = built["path"].as_uri()
    drawn = {}
    for x in ("epoch", "updates", "samples"):  # a fragment such as #x=samples sets the starting axis
        browser.open(f"{url}#x={x}&m=test_loss", 1280)
        drawn[x] = json.loads(browser.js(DRAWN))
        assert browser.errors() == []
    assert [c[1] for c in drawn["updates"]] == ["step"] * 5 and [c[1] for c in drawn["samples"]] == ["samples_seen"] * 5
    assert len({json.dumps(d) for d in drawn.values()}) == 3
    # hovering shows the values of every visible line at that point, with all three clocks
    tip = browser.js("""(() => {
      const f = document.querySelector('#sweep-tiny-chart'), o = f.querySelector('.plot svg rect[fill=transparent]');
      const r = o.getBoundingClientRect();
      const at = {clientX: r.left + r.width / 2, clientY: r.top + 20, bubbles: true};
      o.dispatchEvent(new PointerEvent('pointermove', at));
      return f.querySelector('.tip').innerText; })()""")
    # One line per B with a best lr: full batch (6 updates) has none reaching the target with every seed.
    assert tip.count("updates") >= 3 and "samples" in tip and "epoch" in tip


def test_report_command(built, cli):
    """``batchlab report`` prints the page's path."""
    code, out, err = cli("report", "--db", built["db"], "--out", "site")
    assert code == 0, err
    assert Path(out.strip().splitlines()[-1]).read_bytes() == built["path"].read_bytes()
    code, out, err = cli("report", "--db", built["db"], "--out", "site", "--study", "brownlee")
    assert code == 0 and out.strip().endswith("brownlee.html"), err
    code, _, err = cli("report", "--db", "missing.db")
    assert code == 2 and "no batchlab store" in err
    code, _, err = cli("report", "--db", built["db"], "--study", "distance")
    assert code == 2 and "no study 'distance' recorded" in err
