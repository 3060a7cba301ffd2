// The console's charts: the overview's trend line and the project page's calendar heat maps.
// Data comes from data-* attributes the server rendered (no inline script: the page's CSP
// allows scripts from /console/static/ only). Without ECharts (a page that does not load
// it) nothing is drawn and nothing fails.
(function () {
  "use strict";

  function parse(text, fallback) {
    try { return JSON.parse(text || ""); } catch (e) { return fallback; }
  }

  function trend(el) {
    var months = parse(el.getAttribute("data-months"), []);
    var counts = parse(el.getAttribute("data-counts"), []);
    var chart = window.echarts.init(el, null, { renderer: "canvas" });
    chart.setOption({
      animation: false,
      grid: { left: 40, right: 16, top: 16, bottom: 28 },
      tooltip: { trigger: "axis" },
      xAxis: { type: "category", data: months },
      yAxis: { type: "value", minInterval: 1 },
      series: [{ name: "新开预警 opened", type: "line", data: counts, smooth: false }]
    });
    return chart;
  }

  function lastDay(month) {
    var parts = month.split("-");
    var d = new Date(Date.UTC(Number(parts[0]), Number(parts[1]), 0));
    return d.toISOString().slice(0, 10);
  }

  function heatmap(el) {
    var month = el.getAttribute("data-month");
    var days = parse(el.getAttribute("data-days"), []);
    var chart = window.echarts.init(el, null, { renderer: "canvas" });
    chart.setOption({
      animation: false,
      tooltip: {
        formatter: function (p) {
          var labels = ["缺勤 absent", "打卡不足 punched", "有效 valid"];
          return p.value[0] + " " + labels[p.value[1]];
        }
      },
      visualMap: {
        show: false, type: "piecewise", dimension: 1,
        pieces: [{ value: 0, color: "#e8a0a0" }, { value: 1, color: "#f3d27a" }, { value: 2, color: "#3b9a5a" }]
      },
      calendar: {
        range: [month + "-01", lastDay(month)], cellSize: [18, 18], top: 24, left: 36, right: 8,
        orient: "horizontal", dayLabel: { firstDay: 1, nameMap: "ZH" }, monthLabel: { nameMap: "ZH" },
        yearLabel: { show: false }
      },
      series: [{ type: "heatmap", coordinateSystem: "calendar", data: days }]
    });
    return chart;
  }

  function draw() {
    if (!window.echarts) { return; }
    var charts = [];
    var t = document.getElementById("trend-chart");
    if (t) { charts.push(trend(t)); }
    document.querySelectorAll(".calendar-heatmap").forEach(function (el) { charts.push(heatmap(el)); });
    window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
