"use strict";
// Live updates over server-sent events (one stream per page, fed by the server's one store watcher). The server
// sends text already formatted; this script only copies it into the page, as text and attributes, never as markup.
(() => {
  const url = document.body.dataset.events;
  if (!url || !window.EventSource) return;
  const source = new EventSource(url);
  // A form that changes a job navigates away: stop listening, so no reload races with it.
  document.querySelectorAll("form[method=post]").forEach((form) => form.addEventListener("submit", () => source.close()));

  function fill(root, values) {
    root.querySelectorAll("[data-field]").forEach((el) => {
      const value = values[el.dataset.field];
      if (value !== undefined && value !== null && el.textContent !== String(value)) el.textContent = String(value);
    });
    root.querySelectorAll("progress[data-percent]").forEach((bar) => {
      if (values.percent === null || values.percent === undefined) bar.removeAttribute("value");
      else bar.value = values.percent;
    });
    if (values.status) root.dataset.status = values.status;
  }

  function drawChart(svg, chart) {
    if (!svg || !chart) return;
    svg.querySelectorAll("polyline[data-series]").forEach((line) => {
      line.setAttribute("points", chart.lines[line.dataset.series] || "");
    });
    for (const axis of ["x", "y"]) {
      chart[axis + "_ticks"].forEach((label, i) => {
        const text = svg.querySelector(`text[data-${axis}-tick="${i}"]`);
        if (text) text.textContent = label;
      });
    }
    svg.classList.toggle("empty", chart.empty);
  }

  source.addEventListener("jobs", (event) => {
    const data = JSON.parse(event.data);
    const rows = new Map(Array.from(document.querySelectorAll("tr[data-job]"), (tr) => [tr.dataset.job, tr]));
    if (rows.size !== data.jobs.length || data.jobs.some((job) => !rows.has(job.name))) {
      location.reload(); // a job was added or removed: the server renders the new table
      return;
    }
    data.jobs.forEach((job) => fill(rows.get(job.name), job));
  });

  source.addEventListener("job", (event) => {
    const data = JSON.parse(event.data);
    const header = document.getElementById("job-header");
    if (!header) return;
    if (header.dataset.terminal !== "true" && data.job.terminal) {
      location.reload(); // it ended: the page shows its report, its figures and the resume button
      return;
    }
    fill(header, data.job);
    const rows = new Map(Array.from(document.querySelectorAll("tr[data-stage]"), (tr) => [tr.dataset.stage, tr]));
    data.stages.forEach((stage) => { if (rows.has(stage.stage)) fill(rows.get(stage.stage), stage); });
    drawChart(document.getElementById("loss-chart"), data.loss);
  });
})();
