// Pressroom console: live updates over server-sent events. No library, no build step.
"use strict";

function liveReports(table) {
  const body = table.querySelector("tbody");
  const source = new EventSource(table.dataset.live);
  source.addEventListener("row", (event) => {
    const data = JSON.parse(event.data);
    const holder = document.createElement("tbody");
    holder.innerHTML = data.html.trim();
    const row = holder.firstElementChild;
    if (!row) return;
    const old = document.getElementById(row.id);
    if (old) {
      old.replaceWith(row);
    } else {
      body.prepend(row);
      row.classList.add("fresh");
      while (body.rows.length > 50) body.deleteRow(-1);
    }
  });
  window.addEventListener("pagehide", () => source.close());
}

function liveReport(box) {
  const source = new EventSource(box.dataset.live);
  let busy = false;
  source.addEventListener("changed", async () => {
    if (busy) return;
    busy = true;
    try {
      const answer = await fetch(window.location.pathname, { headers: { Accept: "text/html" } });
      if (answer.ok) {
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        const fresh = page.getElementById("report");
        if (fresh) box.innerHTML = fresh.innerHTML;
      }
    } finally {
      busy = false;
    }
  });
  window.addEventListener("pagehide", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table[data-live]");
  if (table) liveReports(table);
  const box = document.querySelector("#report[data-live]");
  if (box) liveReport(box);
});
