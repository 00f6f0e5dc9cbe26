// slatimer console: live countdowns and the two charts (uPlot). No inline script (CSP).
"use strict";

function duration(seconds) {
  const total = Math.floor(Math.abs(seconds));
  const days = Math.floor(total / 86400), hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60), secs = total % 60;
  const pad = (n) => String(n).padStart(2, "0");
  if (days) return `${days}d ${pad(hours)}h ${pad(minutes)}m`;
  if (hours) return `${hours}h ${pad(minutes)}m ${pad(secs)}s`;
  return `${minutes}m ${pad(secs)}s`;
}

function tick() {
  for (const el of document.querySelectorAll("time.countdown")) {
    const left = (Date.parse(el.getAttribute("datetime")) - Date.now()) / 1000;
    el.textContent = left >= 0 ? duration(left) : left > -1 ? "due now" : `due ${duration(left)} ago`;
    el.classList.toggle("overdue", left < 0);
    el.classList.toggle("soon", left >= 0 && left < 3600);
  }
}

function data(el) {
  return JSON.parse(document.getElementById(el.dataset.source).textContent);
}

function width(el) {
  return Math.max(el.clientWidth, 320);
}

function pointsChart(el) {
  const d = data(el);
  if (!d.x.length) { el.textContent = "No points recorded."; return; }
  const colours = ["#d4a017", "#e8590c", "#c92a2a"];
  const series = [{}, {label: "points", stroke: "#1864ab", width: 2, fill: "rgba(24,100,171,0.1)",
                       paths: uPlot.paths.stepped({align: 1})}];
  const columns = [d.x, d.points];
  d.thresholds.forEach((t, i) => {
    series.push({label: `${t.points} ${t.measure}`, stroke: colours[i % colours.length], dash: [6, 4], width: 1.5});
    columns.push(d.x.map(() => t.points));
  });
  const top = Math.max(...d.points, ...d.thresholds.map((t) => t.points)) * 1.1;
  new uPlot({width: width(el), height: 260, series,
             scales: {y: {range: [0, top]}}, axes: [{}, {label: "points"}]}, columns, el);
}

function lagChart(el) {
  const d = data(el);
  if (!d.x.length) { el.textContent = "No deadline fired in the last hour."; return; }
  new uPlot({width: width(el), height: 240,
             series: [{}, {label: "seconds from due to fired", stroke: "#c92a2a", width: 0,
                           points: {show: true, size: 5, fill: "#c92a2a"}, paths: () => null}],
             axes: [{}, {label: "lag (s)"}]}, [d.x, d.lag], el);
}

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  const points = document.getElementById("points-chart");
  if (points) pointsChart(points);
  const lag = document.getElementById("lag-chart");
  if (lag) lagChart(lag);
});
