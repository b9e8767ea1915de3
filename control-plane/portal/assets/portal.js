// Veil portal: small enhancements; every page works without them.
"use strict";

// Copy buttons: <button data-copy="ELEMENT-ID"> copies that element's text.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) {
    return;
  }
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) {
    return;
  }
  navigator.clipboard.writeText(source.textContent.trim()).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 2000);
  });
});

// Charts: a <figure class="chart" data-chart="ID"> is drawn with uPlot from
// the JSON in <script type="application/json" id="ID"> (data, never run):
//   {"x": [unix seconds, ...], "series": [{"label": "Calls", "values": [...]}, ...],
//    "y": "calls", "bars": false}
// Each chart's figure also holds a table of the same numbers, for screen
// readers and without scripts.
const palette = ["#0b5cad", "#b35900", "#116329", "#8250df", "#a40e26"];

function drawChart(figure) {
  const source = document.getElementById(figure.dataset.chart);
  if (!source || typeof uPlot === "undefined") {
    return;
  }
  const spec = JSON.parse(source.textContent);
  const target = figure.querySelector(".chart-canvas");
  const width = () => Math.max(280, Math.min(target.clientWidth || 600, 1100));
  const opts = {
    width: width(),
    height: 260,
    scales: { x: { time: true } },
    axes: [{}, { label: spec.y || "" , size: 60 }],
    series: [{}].concat(spec.series.map((s, i) => ({
      label: s.label,
      stroke: palette[i % palette.length],
      fill: spec.bars ? palette[i % palette.length] + "55" : undefined,
      paths: spec.bars && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
      width: 2,
    }))),
  };
  const plot = new uPlot(opts, [spec.x].concat(spec.series.map((s) => s.values)), target);
  window.addEventListener("resize", () => plot.setSize({ width: width(), height: 260 }));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("figure.chart[data-chart]").forEach(drawChart);
});
