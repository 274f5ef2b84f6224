(function () {
  "use strict";
  var errors = [];
  function noteError(message) {
    errors.push(String(message));
    document.body.setAttribute("data-js-errors", errors.join(" | "));
  }
  window.addEventListener("error", function (e) { noteError(e.message); });

  var SVGNS = "http://www.w3.org/2000/svg";
  var XS = {epoch: "epochs", step: "updates (optimizer steps)", samples_seen: "samples seen"};
  var SHORT = {epoch: "epochs", step: "updates", samples_seen: "samples seen"};
  var XNAMES = {epoch: "epoch", epochs: "epoch", step: "step", steps: "step", updates: "step",
                samples: "samples_seen", samples_seen: "samples_seen"};
  var METRICS = {test_acc: "test accuracy", train_acc: "train accuracy", test_r2: "test R\u00b2",
                 train_r2: "train R\u00b2", test_loss: "test loss", train_loss: "train loss"};
  var LOG_SPREAD = 20;  // lines that end further apart than this factor get a log x axis at first
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];

  function fromHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("=");
      if (kv.length !== 2) return;
      var value = decodeURIComponent(kv[1]);
      if (kv[0] === "x" && XNAMES[value]) out.x = XNAMES[value];
      if (kv[0] === "m" && METRICS[value]) out.m = value;
    });
    return out;
  }

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function html(tag, attrs, parent, text) {
    var node = document.createElement(tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }
  function commas(v) { return String(Math.round(v)).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function short(v) {
    var a = Math.abs(v);
    if (a >= 1e6) return +(v / 1e6).toPrecision(3) + "M";
    if (a >= 1e4) return +(v / 1e3).toPrecision(3) + "k";
    if (a >= 1000) return commas(v);
    if (a === 0) return "0";
    if (a < 0.01) return v.toExponential(0);
    return String(+v.toPrecision(3));
  }
  function fmtY(metric, v) {
    if (v === null || v === undefined) return "—";
    return metric.slice(-3) === "acc" ? (100 * v).toFixed(1) + " %" : String(+v.toPrecision(4));
  }
  function fmtX(x, v) {
    if (x === "epoch") return "epoch " + commas(v);
    return commas(v) + (x === "step" ? " updates" : " samples");
  }

  function niceTicks(lo, hi, count, integer) {
    var span = hi - lo;
    if (!(span > 0)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = span / count / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    if (integer) step = Math.max(1, Math.round(step));
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
    return ticks;
  }
  // Log-axis ticks, at least three whatever the span (a lone "5000" does not show the scale):
  // powers of ten, else also 2 and 5 times them, else 1, 2, 3, 5, else every 1..9 times them.
  var LOG_MULTS = [[1], [1, 2, 5], [1, 2, 3, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]];
  function logTicks(lo, hi) {
    if (hi / lo < 8) {  // less than a decade: evenly spaced round values read better
      var lin = niceTicks(lo, hi, 5, false).filter(function (t) { return t > 0; });
      if (lin.length >= 3) return lin;
    }
    var a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi));
    for (var k = 0; k < LOG_MULTS.length; k++) {
      var ticks = [];
      for (var e = a; e <= b; e++) LOG_MULTS[k].forEach(function (m) {
        var t = m * Math.pow(10, e);
        if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push(+t.toPrecision(6));
      });
      var step = Math.ceil(ticks.length / 8);  // many decades: every second (third...) power of ten
      if (ticks.length >= 3) return ticks.filter(function (t, i) { return i % step === 0; });
    }
    return [lo, hi];
  }
  function scale(lo, hi, a, b, log) {
    if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
    if (hi === lo) { hi = lo + 1; lo = lo - 1; }
    var f = function (v) { return a + (b - a) * ((log ? Math.log10(v) : v) - lo) / (hi - lo); };
    f.invert = function (p) { var v = lo + (p - a) * (hi - lo) / (b - a); return log ? Math.pow(10, v) : v; };
    return f;
  }
  function median(values) {
    var s = values.slice().sort(function (a, b) { return a - b; });
    return s.length ? s[Math.floor(s.length / 2)] : NaN;
  }

  function Chart(fig, uid) {
    this.fig = fig;
    this.data = JSON.parse(document.getElementById(fig.getAttribute("data-chart")).textContent);
    var start = fromHash();
    this.x = start.x || "epoch";
    var has = function (key) { return fig && this.data.series.some(function (s) { return s[key]; }); }.bind(this);
    this.m = start.m && has(start.m) ? start.m : (has("test_acc") || !has("test_r2") ? "test_acc" : "test_r2");
    this.hidden = {};
    this.logx = null;  // null: automatic (log when the x values span a wide range)
    var n = this.data.series.length;
    this.colors = this.data.series.map(function (s, i) {
      return n <= PALETTE.length ? PALETTE[i] : "hsl(" + Math.round(250 - 250 * i / (n - 1)) + ",70%,42%)";
    });
    this.build(uid);
    this.draw();
  }

  Chart.prototype.build = function (uid) {
    var self = this;
    var controls = html("div", {"class": "controls"});
    this.fig.insertBefore(controls, this.fig.querySelector("script"));
    var fs = html("fieldset", {}, controls);
    html("legend", {}, fs, "x axis:");
    Object.keys(XS).forEach(function (key) {
      var label = html("label", {}, fs);
      var input = html("input", {type: "radio", name: uid + "-x", value: key}, label);
      input.checked = key === self.x;
      input.addEventListener("change", function () { self.x = key; self.logx = null; self.draw(); });
      label.appendChild(document.createTextNode(" " + SHORT[key]));
    });
    var mlabel = html("label", {}, controls, "metric: ");
    var select = html("select", {"aria-label": "metric"}, mlabel);
    Object.keys(METRICS).forEach(function (key) {
      var available = self.data.series.some(function (s) { return s[key]; });
      if (!available) return;
      var opt = html("option", {value: key}, select, METRICS[key]);
      opt.selected = key === self.m;
    });
    select.addEventListener("change", function () { self.m = select.value; self.draw(); });
    var llabel = html("label", {}, controls);
    this.logInput = html("input", {type: "checkbox"}, llabel);
    llabel.appendChild(document.createTextNode(" log x"));
    this.logInput.addEventListener("change", function () { self.logx = self.logInput.checked; self.draw(); });

    this.plot = html("div", {"class": "plot"});
    this.fig.insertBefore(this.plot, this.fig.querySelector("script"));
    this.tip = html("div", {"class": "tip", hidden: ""}, this.plot);
    var legend = html("div", {"class": "legend", role: "group", "aria-label": "series (click to hide or show)"});
    this.fig.insertBefore(legend, this.fig.querySelector("script"));
    this.data.series.forEach(function (s, i) {
      var text = s.label + " (" + s.runs + (s.runs === 1 ? " run" : " runs") +
        (s.diverged ? ", " + s.diverged + " diverged" + (s.diverged === s.runs ? ": ends at ×" : "") : "") + ")";
      var b = html("button", {type: "button", "aria-pressed": "true"}, legend);
      var sw = html("span", {"class": "sw"}, b);
      sw.style.background = self.colors[i];
      b.appendChild(document.createTextNode(text));
      b.addEventListener("click", function () {
        self.hidden[i] = !self.hidden[i];
        b.setAttribute("aria-pressed", self.hidden[i] ? "false" : "true");
        self.draw();
      });
    });
    var note = html("p", {"class": "chart-note"}, null,
      "Each line is the mean over a setting's seeds. Hover or touch the chart for values; switch the x axis to " +
      "compare batch sizes per epoch, per update or per sample seen.");
    this.fig.insertBefore(note, this.fig.querySelector("script"));
  };

  Chart.prototype.points = function (s) {
    var xs = s[this.x], ys = s[this.m], out = [];
    if (!xs || !ys) return out;
    for (var i = 0; i < xs.length; i++) {
      if (xs[i] === null || ys[i] === null) continue;
      if (this.useLogX && xs[i] <= 0) continue;
      if (this.isLoss && ys[i] <= 0) continue;
      out.push([xs[i], ys[i], i]);
    }
    return out;
  };

  Chart.prototype.draw = function () {
    var self = this, x = this.x, m = this.m, data = this.data;
    this.isLoss = m.slice(-4) === "loss";
    var visible = data.series.map(function (s, i) { return i; }).filter(function (i) { return !self.hidden[i]; });
    // Automatic log x when the lines end more than a factor 20 apart, on any clock: updates
    // differ by orders of magnitude between batch sizes, and a study may train one setting far
    // longer (full-batch GD for 1,000 epochs beside SGD for 12): on a linear axis the short
    // lines would be squashed against zero.
    var lasts = visible.map(function (i) { var v = data.series[i][x]; return v[v.length - 1]; })
      .filter(function (v) { return v > 0; });
    var spread = lasts.length ? Math.max.apply(null, lasts) / Math.min.apply(null, lasts) : 1;
    this.useLogX = this.logx === null ? spread > LOG_SPREAD : this.logx;
    this.logInput.checked = this.useLogX;

    var W = Math.max(260, Math.round(this.plot.clientWidth || 640));
    var H = Math.round(Math.max(230, Math.min(400, W * 0.52)));
    var narrow = W < 480;
    var M = {l: narrow ? 46 : 60, r: 14, t: 12, b: 42};
    var all = visible.map(function (i) { return self.points(data.series[i]); });
    var xsAll = [], ysAll = [];
    all.forEach(function (pts) { pts.forEach(function (p) { xsAll.push(p[0]); ysAll.push(p[1]); }); });
    var old = this.plot.querySelector("svg");
    if (old) this.plot.removeChild(old);
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, role: "img",
                         "data-x": x, "data-metric": m,
                         "aria-label": METRICS[m] + " against " + XS[x] + " for " + visible.length + " series"});
    this.plot.insertBefore(svg, this.tip);
    if (!xsAll.length) {
      el("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, svg).textContent = "no data to draw";
      this.finish(svg, W, H);
      return;
    }
    var x0 = Math.min.apply(null, xsAll), x1 = Math.max.apply(null, xsAll);
    var y0 = Math.min.apply(null, ysAll), y1 = Math.max.apply(null, ysAll), clipped = false;
    if (this.isLoss) {
      // robust top: a diverging run must not flatten every other curve
      var cap = 100 * median(ysAll);
      if (y1 > cap) { y1 = cap; clipped = true; }
      y0 = y0 / 1.15; y1 = y1 * 1.15;
    } else {
      var pad = (y1 - y0) * 0.05 || 0.05;
      // accuracy lies in [0, 1]; R^2 may be negative (worse than the mean): shown down to -1
      y0 = Math.max(m.slice(-2) === "r2" ? -1 : 0, y0 - pad); y1 = Math.min(1, y1 + pad);
      if (y0 > 0 && m.slice(-2) === "r2") y0 = 0;
    }
    var sx = scale(x0, x1, M.l, W - M.r, this.useLogX), sy = scale(y0, y1, H - M.b, M.t, this.isLoss);
    this.sx = sx; this.sy = sy; this.M = M; this.W = W; this.H = H;
    var clipId = this.fig.id + "-clip";
    var defs = el("defs", {}, svg);
    var cp = el("clipPath", {id: clipId}, defs);
    el("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b}, cp);

    var grid = el("g", {"class": "grid"}, svg), axis = el("g", {"class": "axis"}, svg);
    var xt = this.useLogX ? logTicks(x0, x1) : niceTicks(x0, x1, narrow ? 4 : 7, true);
    var yt = this.isLoss ? logTicks(y0, y1) : niceTicks(y0, y1, 5, false);
    xt.forEach(function (t) {
      var px = sx(t);
      if (px < M.l - 0.5 || px > W - M.r + 0.5) return;
      el("line", {x1: px, x2: px, y1: M.t, y2: H - M.b}, grid);
      el("line", {x1: px, x2: px, y1: H - M.b, y2: H - M.b + 4}, axis);
      el("text", {x: px, y: H - M.b + 16, "text-anchor": "middle"}, axis).textContent = short(t);
    });
    yt.forEach(function (t) {
      var py = sy(t);
      if (py < M.t - 0.5 || py > H - M.b + 0.5) return;
      el("line", {x1: M.l, x2: W - M.r, y1: py, y2: py}, grid);
      el("text", {x: M.l - 6, y: py + 4, "text-anchor": "end"}, axis).textContent =
        self.isLoss || m.slice(-3) !== "acc" ? short(t) : (100 * t).toFixed(y1 - y0 < 0.05 ? 1 : 0) + "%";
    });
    el("path", {d: "M" + M.l + "," + M.t + "V" + (H - M.b) + "H" + (W - M.r), fill: "none"}, axis);
    el("text", {x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle", "class": "xlabel"}, axis).textContent =
      XS[x] + (this.useLogX ? " (log scale)" : "");
    el("text", {x: 0, y: 0, "text-anchor": "middle", "class": "ylabel",
                transform: "translate(" + (narrow ? 11 : 14) + "," + ((M.t + H - M.b) / 2) + ") rotate(-90)"}, axis)
      .textContent = METRICS[m] + (this.isLoss ? " (log scale)" : "");
    if (clipped) {
      el("text", {x: W - M.r - 4, y: M.t + 12, "text-anchor": "end", fill: "#a40e26"}, svg).textContent =
        "values above the top are cut off";
    }

    var lines = el("g", {"class": "series", "clip-path": "url(#" + clipId + ")"}, svg);
    this.drawn = [];
    visible.forEach(function (i, k) {
      var pts = all[k];
      if (!pts.length) return;
      var d = pts.map(function (p, j) { return (j ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); });
      el("path", {d: d.join(""), stroke: self.colors[i], "data-series": i}, lines);
      self.drawn.push({i: i, pts: pts});
      var s = data.series[i];
      if (s.diverged && s.diverged === s.runs) {  // every run of this line diverged: mark where it ends
        var last = pts[pts.length - 1], cx = sx(last[0]), cy = sy(last[1]);
        var mark = el("path", {d: "M" + (cx - 5) + "," + (cy - 5) + "L" + (cx + 5) + "," + (cy + 5) + "M" + (cx - 5) +
                               "," + (cy + 5) + "L" + (cx + 5) + "," + (cy - 5), stroke: self.colors[i],
                               "stroke-width": 2.5, "class": "diverged"}, svg);
        el("title", {}, mark).textContent = s.label + ": diverged" +
          (s.diverged_step !== null && s.diverged_step !== undefined ? " at update " + commas(s.diverged_step) : "");
      }
    });
    this.hover = el("g", {"class": "hover"}, svg);
    var overlay = el("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: "transparent"}, svg);
    var move = function (e) { self.showAt(e); };
    overlay.addEventListener("pointermove", move);
    overlay.addEventListener("pointerdown", move);
    overlay.addEventListener("pointerleave", function (e) {
      if (e.pointerType === "touch") return;  // a lifted finger keeps the values on screen
      self.tip.hidden = true; self.hover.innerHTML = "";
    });
    this.finish(svg, W, H);
  };

  Chart.prototype.finish = function (svg, W, H) {
    var box = svg.getBoundingClientRect();
    this.fig.setAttribute("data-rendered", Math.round(box.width) + "x" + Math.round(box.height));
  };

  Chart.prototype.showAt = function (e) {
    var self = this, svg = this.plot.querySelector("svg"), box = svg.getBoundingClientRect();
    var px = (e.clientX - box.left) * this.W / box.width;
    var xv = this.sx.invert(px);
    this.hover.innerHTML = "";
    this.tip.innerHTML = "";
    html("div", {}, this.tip, XS[this.x] + " ≈ " + short(xv)).style.fontWeight = "600";
    this.drawn.forEach(function (d) {
      var best = d.pts[0], gap = Infinity;
      d.pts.forEach(function (p) { var g = Math.abs(self.sx(p[0]) - px); if (g < gap) { gap = g; best = p; } });
      var s = self.data.series[d.i], j = best[2];
      el("circle", {cx: self.sx(best[0]), cy: self.sy(best[1]), r: 3.5, fill: self.colors[d.i],
                    stroke: "#fff", "stroke-width": 1}, self.hover);
      var row = html("div", {}, self.tip);
      html("span", {"class": "sw"}, row).style.background = self.colors[d.i];
      row.appendChild(document.createTextNode(s.label + ": " + fmtY(self.m, best[1]) + " (epoch " + s.epoch[j] +
        ", " + commas(s.step[j]) + " updates, " + commas(s.samples_seen[j]) + " samples)"));
    });
    this.tip.hidden = false;
    this.tip.classList.toggle("below", box.width < 480);  // on a phone: under the chart, not over it
    if (box.width < 480) return;
    var left = (e.clientX - box.left) + 14, tw = this.tip.offsetWidth;
    if (left + tw > box.width) left = Math.max(0, (e.clientX - box.left) - tw - 14);
    this.tip.style.left = left + "px";
    this.tip.style.top = Math.max(0, (e.clientY - box.top) - 10) + "px";
  };

  function init() {
    var charts = [];
    Array.prototype.forEach.call(document.querySelectorAll("figure.chart[data-chart]"), function (fig, k) {
      try { charts.push(new Chart(fig, "c" + k)); } catch (err) { noteError(err && err.stack || err); }
    });
    function measure() {
      Array.prototype.forEach.call(document.querySelectorAll("figure.fig"), function (fig) {
        var svg = fig.querySelector("svg"), box = (svg || fig).getBoundingClientRect();
        fig.setAttribute("data-rendered", Math.round(box.width) + "x" + Math.round(box.height));
        fig.classList.toggle("wide", fig.scrollWidth > fig.clientWidth + 8);
      });
      // A table wider than its frame says so above itself (its edges also cast a shadow): a
      // clipped column gave no other hint that the frame scrolls.
      Array.prototype.forEach.call(document.querySelectorAll(".table-wrap"), function (wrap) {
        if (!wrap.clientWidth) return;  // in a closed <details>: measured when it opens
        var table = wrap.querySelector("table");
        wrap.classList.toggle("scrolls", !!table && table.offsetWidth > wrap.clientWidth + 1);
      });
    }
    measure();
    document.addEventListener("toggle", measure, true);  // a <details> opened: its tables have a width now
    var timer = null;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { charts.forEach(function (c) { c.draw(); }); measure(); }, 120);
    });
    window.addEventListener("hashchange", function () {
      var start = fromHash();
      if (!start.x && !start.m) return;
      charts.forEach(function (c) {
        if (start.x) { c.x = start.x; c.logx = null; }
        if (start.m) c.m = start.m;
        c.fig.querySelectorAll("input[type=radio]").forEach(function (r) { r.checked = r.value === c.x; });
        c.fig.querySelector("select").value = c.m;
        c.draw();
      });
    });
    document.body.setAttribute("data-ready", String(charts.length));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
