/* postmortem's epoch view: one epoch's confusion matrix, confidence histograms, reliability diagram and
   per-class table, drawn from the JSON in #epoch-data. The slider, the buttons, the arrow keys and #epoch=N
   (a number, first, best or last) in the address choose the epoch. Every value from the data is set as
   text or as an attribute, never parsed as markup, and nothing is fetched. */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const island = document.getElementById("epoch-data");
  const root = document.getElementById("epoch-view");
  if (!island || !root) {
    return;
  }
  const D = JSON.parse(island.textContent);
  const n = D.epochs.length;
  const last = n - 1;
  const byId = (id) => document.getElementById(id);
  const slider = byId("ev-slider");
  let index = last;
  let mode = "counts";

  function node(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) {
      e.textContent = text;
    }
    return e;
  }

  function shape(parent, tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) {
      e.textContent = text;
    }
    parent.appendChild(e);
    return e;
  }

  const largest = (rows) => rows.reduce((a, row) => row.reduce((b, v) => (v !== null && v > b ? v : b), a), -Infinity);
  const fixed = (v, digits) => (v === null ? "—" : v.toFixed(digits));
  const percent = (v, digits) => (v === null ? "—" : (100 * v).toFixed(digits) + "%");
  const marks = (i) => [[0, "first"], [D.best, "lowest loss"], [last, "last"]]
    .filter(([k]) => k === i).map(([, name]) => name);

  /* The title line: epoch, checkpoint, loss, accuracy and what marks this epoch. */
  const title = byId("ev-title");
  function drawTitle(i) {
    title.replaceChildren(node("span", {}, "Epoch " + D.epochs[i] + " · "), node("span", {class: "mono"}, D.checkpoints[i]),
      node("span", {}, " · loss " + fixed(D.loss[i], 4) + " · accuracy " + percent(D.accuracy[i], 2) +
        " · ECE " + fixed(D.ece[i], 4)));
    marks(i).forEach((name) => title.appendChild(node("span", {class: "ev-badge"}, name)));
  }

  /* The confusion matrix: built once, its cells updated per epoch (counts or share of the row). */
  const labels = D.matrix.labels;
  const m = labels.length;
  const table = byId("ev-confusion");
  const cells = [];
  const head = node("tr");
  head.appendChild(node("th", {}, "true \\ pred"));
  labels.forEach((name, j) => head.appendChild(node("th", {title: name}, String(j + 1))));
  table.appendChild(head);
  labels.forEach((name, r) => {
    const row = node("tr");
    row.appendChild(node("th", {title: name}, (r + 1) + " " + name));
    labels.forEach((_, c) => {
      const td = node("td", r === c ? {class: "diag"} : {});
      cells.push(td);
      row.appendChild(td);
    });
    table.appendChild(row);
  });
  function drawMatrix(i) {
    const counts = D.matrix.counts[i];
    for (let r = 0; r < m; r += 1) {
      let total = 0;
      for (let c = 0; c < m; c += 1) {
        total += counts[r * m + c];
      }
      for (let c = 0; c < m; c += 1) {
        const v = counts[r * m + c];
        const share = total ? v / total : 0;
        const td = cells[r * m + c];
        td.textContent = v ? (mode === "rows" ? (100 * share).toFixed(share < 0.1 ? 1 : 0) : String(v)) : "";
        td.style.background = v ? "rgba(" + D.cellRgb + ", " + (0.08 + 0.85 * share).toFixed(3) + ")" : "";
        td.style.color = share > 0.55 ? "#fff" : "";
        td.title = labels[r] + " → " + labels[c] + ": " + v + " items, " + (100 * share).toFixed(1) + "% of the row";
      }
    }
  }

  /* Confidence histograms: correct predictions above the line, wrong below, each on its own scale, the same for
     every epoch (wrong predictions are often far fewer; their shape is what changes). */
  const hist = byId("ev-hist");
  const bins = D.hist.correct[0].length;
  const correctTop = Math.max(1, largest(D.hist.correct));
  const wrongTop = Math.max(1, largest(D.hist.wrong));
  const histBars = [];
  const hx = (t) => 56 + 252 * t;
  for (let k = 0; k < bins; k += 1) {
    histBars.push([shape(hist, "rect", {x: hx(k / bins) + 1, width: 252 / bins - 2, class: "ev-correct"}),
      shape(hist, "rect", {x: hx(k / bins) + 1, y: 100, width: 252 / bins - 2, fill: "url(#ev-hatch)"})]);
  }
  shape(hist, "line", {x1: hx(0), x2: hx(1), y1: 100, y2: 100, class: "ev-axis"});
  [[0, "0"], [0.5, "0.5"], [1, "1"]].forEach(([t, text]) => shape(hist, "text",
    {x: hx(t), y: 192, "text-anchor": "middle", class: "ev-tick"}, text));
  shape(hist, "text", {x: hx(0.5), y: 205, "text-anchor": "middle", class: "ev-tick"}, "confidence (max probability)");
  shape(hist, "text", {x: 50, y: 94, "text-anchor": "end", class: "ev-tick"}, "correct");
  shape(hist, "text", {x: 50, y: 114, "text-anchor": "end", class: "ev-tick"}, "wrong");
  const histNote = shape(hist, "text", {x: hx(1), y: 12, "text-anchor": "end", class: "ev-tick"});
  function drawHist(i) {
    let correct = 0;
    let wrong = 0;
    histBars.forEach(([up, down], k) => {
      const a = 80 * D.hist.correct[i][k] / correctTop;
      const b = 80 * D.hist.wrong[i][k] / wrongTop;
      up.setAttribute("y", 100 - a);
      up.setAttribute("height", a);
      down.setAttribute("height", b);
      correct += D.hist.correct[i][k];
      wrong += D.hist.wrong[i][k];
    });
    histNote.textContent = correct + " correct · " + wrong + " wrong";
  }

  /* Reliability diagram: accuracy per confidence bin against the diagonal; dots at the bin's mean confidence. */
  const rel = byId("ev-reliability");
  const px = (v) => 40 + 264 * v;
  const py = (v) => 196 - 180 * v;
  [0, 0.5, 1].forEach((t) => {
    shape(rel, "line", {x1: px(0), x2: px(1), y1: py(t), y2: py(t), class: "ev-gridline"});
    shape(rel, "text", {x: px(0) - 6, y: py(t) + 4, "text-anchor": "end", class: "ev-tick"}, String(t));
    shape(rel, "text", {x: px(t), y: 212, "text-anchor": "middle", class: "ev-tick"}, String(t));
  });
  const relBins = D.reliability.counts[0].length;
  const relBars = [];
  for (let k = 0; k < relBins; k += 1) {
    relBars.push(shape(rel, "rect", {x: px(k / relBins) + 0.5, width: 264 / relBins - 1, class: "ev-bin"}));
  }
  shape(rel, "line", {x1: px(0), y1: py(0), x2: px(1), y2: py(1), class: "ev-diagonal"});
  const relDots = relBars.map(() => shape(rel, "circle", {r: 2.6, class: "ev-dot"}));
  shape(rel, "rect", {x: px(0), y: py(1), width: 264, height: 180, class: "ev-frame"});
  shape(rel, "text", {x: px(0.5), y: 228, "text-anchor": "middle", class: "ev-tick"}, "confidence");
  shape(rel, "text", {x: 12, y: py(0.5), "text-anchor": "middle", class: "ev-tick",
    transform: "rotate(-90 12 " + py(0.5) + ")"}, "accuracy");
  function drawReliability(i) {
    relBars.forEach((bar, k) => {
      const filled = D.reliability.counts[i][k] > 0;
      const accuracy = filled ? D.reliability.accuracy[i][k] : 0;
      bar.setAttribute("y", py(accuracy));
      bar.setAttribute("height", 180 * accuracy);
      relDots[k].setAttribute("visibility", filled ? "visible" : "hidden");
      if (filled) {
        const c = D.reliability.confidence[i][k];
        relDots[k].setAttribute("cx", px(c));
        relDots[k].setAttribute("cy", py(c));
      }
    });
  }

  /* Per-class table: built once, numbers updated per epoch; the bar is the loss share on one scale. Row k shows
     class k, or, when the classes are many (D.classRows), the k-th largest loss share of that epoch, with one last
     row for the other classes. */
  const body = byId("ev-classes").querySelector("tbody");
  const shareTop = Math.max(1e-12, largest(D.perClass.share));
  const rowsOf = (i) => (D.classRows ? D.classRows.shown[i] : D.classes.map((_, c) => c));
  const classCells = rowsOf(last).map(() => {
    const row = node("tr");
    const first = node("td");
    const swatch = node("span", {class: "swatch"}, "■");
    const name = node("span");
    first.append(swatch, " ", name);
    row.appendChild(first);
    const support = node("td");
    row.appendChild(support);
    const cellsOfRow = [node("td"), node("td"), node("td"), node("td")];
    const box = node("span", {class: "bar-box"});
    const bar = box.appendChild(node("span", {class: "bar"}));
    cellsOfRow[1].append(box, node("span"));
    cellsOfRow.forEach((td) => row.appendChild(td));
    body.appendChild(row);
    return {swatch, name, support, bar, values: cellsOfRow};
  });
  const otherCells = D.classRows ? [node("td", {}, D.classRows.other.label), node("td"), node("td"), node("td"),
    node("td", {}, "—"), node("td", {}, "—")] : null;
  if (otherCells) {
    const row = node("tr", {class: "ev-other"});
    otherCells.forEach((td) => row.appendChild(td));
    body.appendChild(row);
  }
  function drawClasses(i) {
    const shown = rowsOf(i);
    classCells.forEach((cells, k) => {
      const c = shown[k];
      const [loss, share, precision, recall] = cells.values;
      const value = D.perClass.share[i][k];
      cells.swatch.style.color = D.colours[c];
      cells.name.textContent = D.classes[c];
      cells.support.textContent = D.support[c].toLocaleString("en");
      loss.textContent = fixed(D.perClass.loss[i][k], 4);
      cells.bar.style.width = (value === null ? 0 : (100 * Math.max(value, 0) / shareTop).toFixed(1)) + "%";
      share.lastChild.textContent = fixed(value, 4);
      precision.textContent = percent(D.perClass.precision[i][k], 1);
      recall.textContent = percent(D.perClass.recall[i][k], 1);
    });
    if (otherCells) {
      const other = D.classRows.other;
      otherCells[1].textContent = other.support[i].toLocaleString("en");
      otherCells[2].textContent = fixed(other.loss[i], 4);
      otherCells[3].textContent = fixed(other.share[i], 4);
    }
  }

  /* The loss along the slider: where the chosen epoch sits on the curve. */
  const spark = byId("ev-spark");
  const high = largest([D.loss]);
  const low = -largest([D.loss.map((v) => (v === null ? null : -v))]);
  const sx = (k) => (n > 1 ? (1000 * k) / last : 500);
  const sy = (v) => 44 - 40 * (high > low ? (v - low) / (high - low) : 0.5);
  shape(spark, "polyline", {points: D.loss.map((v, k) => (v === null ? "" : sx(k) + "," + sy(v))).join(" "),
    class: "ev-spark-line", "vector-effect": "non-scaling-stroke"});
  shape(spark, "line", {x1: sx(D.best), x2: sx(D.best), y1: 0, y2: 48, class: "ev-spark-best",
    "vector-effect": "non-scaling-stroke"});
  const cursor = shape(spark, "line", {y1: 0, y2: 48, class: "ev-spark-now", "vector-effect": "non-scaling-stroke"});

  function select(i, remember) {
    index = Math.max(0, Math.min(last, i));
    slider.value = String(index);
    cursor.setAttribute("x1", sx(index));
    cursor.setAttribute("x2", sx(index));
    drawTitle(index);
    drawMatrix(index);
    drawHist(index);
    drawReliability(index);
    drawClasses(index);
    root.dataset.epoch = String(D.epochs[index]);
    if (remember) {
      history.replaceState(null, "", "#epoch=" + D.epochs[index]);
    }
  }

  function fromAddress() {
    const match = /^#epoch=([^&]+)$/.exec(location.hash);
    if (!match) {
      return null;
    }
    const wanted = decodeURIComponent(match[1]);
    const named = {first: 0, best: D.best, last: last}[wanted];
    if (named !== undefined) {
      return named;
    }
    const k = D.epochs.indexOf(Number(wanted));
    return k >= 0 ? k : null;
  }

  slider.addEventListener("input", () => select(Number(slider.value), true));
  byId("ev-prev").addEventListener("click", () => select(index - 1, true));
  byId("ev-next").addEventListener("click", () => select(index + 1, true));
  spark.addEventListener("click", (event) => {
    const box = spark.getBoundingClientRect();
    select(Math.round(((event.clientX - box.left) / box.width) * last), true);
  });
  root.querySelectorAll("input[name=ev-values]").forEach((radio) => radio.addEventListener("change", () => {
    mode = radio.value;
    drawMatrix(index);
  }));
  document.addEventListener("keydown", (event) => {
    const step = {ArrowLeft: -1, ArrowRight: 1}[event.key];
    const target = event.target;
    if (step === undefined || event.altKey || event.ctrlKey || event.metaKey || target === slider ||
        /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName) || target.isContentEditable) {
      return;
    }
    const box = root.getBoundingClientRect();
    if (box.bottom > 0 && box.top < window.innerHeight) {
      event.preventDefault();
      select(index + step, true);
    }
  });
  window.addEventListener("hashchange", () => {
    const k = fromAddress();
    if (k !== null) {
      select(k, false);
      root.scrollIntoView();
    }
  });

  document.documentElement.classList.add("js");
  root.hidden = false;
  const start = fromAddress();
  select(start === null ? last : start, false);
  if (start !== null) {
    root.scrollIntoView();
  }
}());
