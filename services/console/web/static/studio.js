// Pressroom studio: the template editor with its live preview, versions, shadow renders and
// promotion, over the JSON API under /api/studio (docs: README "The studio"). No build step:
// the editor is the vendored CodeMirror 5 (static/vendor/), everything else is plain DOM.
"use strict";

const PREVIEW_DEBOUNCE_MS = 400; // quiet time after the last keystroke before a preview
const POLL_MS = 1000; // a running shadow render is asked again this often

// ---- what every studio page shares ---------------------------------------------------------
function studioApi(box) {
  const base = `/api/studio/templates/${encodeURIComponent(box.dataset.template)}`;
  async function call(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = box.dataset.csrf;
      init.body = JSON.stringify(body);
    }
    let answer;
    try {
      answer = await fetch(path.startsWith("/api/") ? path : `${base}${path}`, init);
    } catch (error) {
      return { status: 0, data: { error: `the console did not answer (${error.message})` } };
    }
    let data;
    const text = await answer.text();
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text.trim() || `HTTP ${answer.status}` };
    }
    return { status: answer.status, data };
  }
  return {
    get: (path) => call("GET", path),
    post: (path, body) => call("POST", path, body || {}),
  };
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(node, message, kind) {
  node.textContent = message;
  node.classList.toggle("error", kind === "error");
  node.classList.toggle("ok", kind === "ok");
}

function shortId(id) {
  return id ? String(id).slice(0, 12) : "—";
}

function when(iso) {
  if (!iso) return "—";
  return String(iso).replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "");
}

function bytes(n) {
  if (typeof n !== "number") return "—";
  if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${n} B`;
}

function change(before, after, format) {
  if (typeof before !== "number" || typeof after !== "number") return format(after);
  if (before === after) return format(after);
  const delta = after - before;
  const percent = before ? ` (${delta > 0 ? "+" : ""}${Math.round((delta / before) * 100)} %)` : "";
  return `${format(before)} → ${format(after)}${percent}`;
}

function diffBlock(text, label) {
  const pre = el("pre", { class: "body diff", tabindex: "0", "aria-label": label });
  for (const line of String(text || "").split("\n")) {
    let kind = "";
    if (line.startsWith("+++") || line.startsWith("---")) kind = "file";
    else if (line.startsWith("@@")) kind = "hunk";
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    pre.append(el("span", { class: kind ? `d-${kind}` : null, text: line }), "\n");
  }
  return pre;
}

// ---- edit and preview ----------------------------------------------------------------------
function studioEdit(box) {
  const api = studioApi(box);
  const name = box.dataset.template;
  const area = document.getElementById("source");
  const problems = document.getElementById("problems");
  const state = document.getElementById("preview-state");
  const pagesBox = document.getElementById("preview-pdf");
  const frame = document.getElementById("html-frame");
  const filePick = box.querySelector(".file-pick");
  const fileSelect = document.getElementById("file");
  const fileName = document.getElementById("file-name");
  const editing = document.getElementById("editing");
  const docs = new Map(); // path -> CodeMirror.Doc
  const marks = []; // [doc, line handle, widget] of the shown errors
  let editor = null;
  let base = "live"; // the version the editor started from (saves and previews build on it)
  let timer = null;
  let sequence = 0;
  let dataChoice = { source: "default" }; // the sample, else the newest recorded report
  let hasSample = false;
  let unsaved = false; // edits since the page opened or the last save
  window.addEventListener("beforeunload", (event) => {
    if (unsaved) event.preventDefault(); // the browser asks before unsaved edits are lost
  });

  function fallbackEditor() {
    // No CodeMirror (it failed to load): the textarea is the editor.
    area.readOnly = false;
    area.addEventListener("input", () => {
      unsaved = true;
      schedule();
    });
    return {
      getValue: () => area.value,
      swap: () => {},
      focusLine: () => area.focus(),
    };
  }

  function buildEditor(files) {
    for (const file of files) {
      if (!file.editable || file.text === null) continue;
      const doc = window.CodeMirror ? window.CodeMirror.Doc(file.text, "django") : null;
      docs.set(file.path, doc || file.text);
      fileSelect.append(el("option", { value: file.path, text: `${file.path} (${file.kind})` }));
    }
    const first = files[0].path;
    filePick.hidden = docs.size < 2 || !window.CodeMirror;
    if (!window.CodeMirror) {
      area.value = docs.get(first);
      editor = fallbackEditor();
      return;
    }
    area.value = "";
    area.readOnly = false;
    const cm = window.CodeMirror.fromTextArea(area, {
      mode: "django",
      lineNumbers: true,
      lineWrapping: true,
      indentUnit: 2,
      viewportMargin: 50,
      screenReaderLabel: `Source of ${first}`,
      // Tab and Shift-Tab move the focus on (no keyboard trap); Ctrl-] and Ctrl-[ indent.
      extraKeys: { Tab: false, "Shift-Tab": false },
    });
    cm.swapDoc(docs.get(first));
    cm.on("changes", () => {
      unsaved = true;
      schedule();
    });
    cm.getWrapperElement().setAttribute("data-file", first);
    window.studioEditor = cm; // for the browser tests and the curious
    editor = {
      getValue: (path) => docs.get(path).getValue(),
      swap: (path) => {
        cm.swapDoc(docs.get(path));
        cm.getInputField().setAttribute("aria-label", `Source of ${path}`);
        cm.getWrapperElement().setAttribute("data-file", path);
        fileName.textContent = path;
      },
      focusLine: (line) => {
        cm.focus();
        cm.setCursor({ line: Math.max(0, line - 1), ch: 0 });
        cm.scrollIntoView(null, 120);
      },
      cm,
    };
  }

  function texts() {
    const files = {};
    for (const [path, doc] of docs) {
      // Without CodeMirror the textarea holds the first file; the others go as they came.
      files[path] = typeof doc !== "string" ? doc.getValue() : path === fileSelect.options[0].value ? area.value : doc;
    }
    return files;
  }

  function clearMarks() {
    for (const [doc, handle, widget] of marks.splice(0)) {
      doc.removeLineClass(handle, "background", "cm-error-line");
      doc.removeLineClass(handle, "gutter", "cm-error-gutter");
      if (widget) widget.clear();
    }
  }

  function showProblems(errors, warnings) {
    clearMarks();
    problems.replaceChildren();
    if (!errors.length && !warnings.length) return;
    const list = el("ul", { class: "problem-list" });
    for (const error of errors) {
      const path = error.file || name;
      const where = error.line ? `${path}, line ${error.line}` : path;
      const item = el("li", { class: "problem error" });
      if (error.line && docs.has(path)) {
        const jump = el("button", { type: "button", class: "link-like", text: where });
        jump.addEventListener("click", () => {
          fileSelect.value = path;
          editor.swap(path);
          editor.focusLine(error.line);
        });
        item.append(jump, `: ${error.message}`);
        const doc = docs.get(path);
        if (typeof doc !== "string") {
          const line = Math.min(error.line, doc.lineCount()) - 1;
          const handle = doc.addLineClass(line, "background", "cm-error-line");
          doc.addLineClass(handle, "gutter", "cm-error-gutter");
          const note = el("div", { class: "cm-error-note", role: "note", text: `⚠ ${error.message}` });
          marks.push([doc, handle, doc.addLineWidget(line, note, { coverGutter: false })]);
        }
      } else {
        item.append(`${where}: ${error.message}`);
      }
      list.append(item);
    }
    for (const warning of warnings) {
      list.append(el("li", { class: "problem warning", text: `Warning: ${warning}` }));
    }
    problems.append(list);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(preview, PREVIEW_DEBOUNCE_MS);
  }

  async function preview() {
    const mine = ++sequence;
    box.setAttribute("aria-busy", "true");
    say(state, "Rendering…");
    const body = { files: texts(), version: base, data: dataChoice };
    const { status, data } = await api.post("/preview", body);
    if (mine !== sequence) return; // a newer keystroke asked again: this answer is stale
    box.removeAttribute("aria-busy");
    if (status !== 200) {
      say(state, `No preview: ${data.error || `HTTP ${status}`}`, "error");
      return;
    }
    showProblems(data.errors || [], data.warnings || []);
    if (!data.ok) {
      const n = (data.errors || []).length;
      say(state, `The template does not render (${n} problem${n === 1 ? "" : "s"}); the last good preview is dimmed.`, "error");
      pagesBox.classList.add("stale");
      return;
    }
    pagesBox.classList.remove("stale");
    const seconds = typeof data.seconds === "number" ? ` in ${data.seconds.toFixed(2)} s` : "";
    say(state, `Rendered ${data.pages} page${data.pages === 1 ? "" : "s"}${seconds}.`, "ok");
    box.dataset.preview = data.preview || "";
    pagesBox.replaceChildren(
      ...(data.images || []).map((src, i) =>
        el("img", { src, alt: `Page ${i + 1} of ${data.pages}`, width: "661", height: "935" }),
      ),
    );
    if (data.html_url) frame.src = data.html_url;
  }

  // -- the data the preview renders on
  const kinds = box.querySelectorAll("input[name=data-kind]");
  const uploadBox = box.querySelector(".data-upload");
  const recordedBox = box.querySelector(".data-recorded");
  const upload = document.getElementById("data-file");
  const recorded = document.getElementById("data-recorded");
  const shown = document.getElementById("data-shown");
  let uploaded = null;

  async function chooseData() {
    const kind = box.querySelector("input[name=data-kind]:checked").value;
    uploadBox.hidden = kind !== "upload";
    recordedBox.hidden = kind !== "recorded";
    if (kind === "sample") {
      dataChoice = { source: "sample" };
      const { status, data } = await api.get("/sample");
      shown.textContent = status === 200 ? JSON.stringify(data.data, null, 2) : data.error;
    } else if (kind === "upload") {
      if (!uploaded) {
        shown.textContent = "Choose a file.";
        return;
      }
      dataChoice = { source: "inline", text: uploaded.text, format: uploaded.format };
      shown.textContent = uploaded.text;
    } else {
      if (!recorded.value) {
        shown.textContent = "No recorded report chosen.";
        return;
      }
      dataChoice = { source: "payload", id: recorded.value };
      const { status, data } = await api.get(`/payloads/${encodeURIComponent(recorded.value)}`);
      shown.textContent = status === 200 ? JSON.stringify(data.data, null, 2) : data.error;
    }
    schedule();
  }

  for (const radio of kinds) radio.addEventListener("change", chooseData);
  recorded.addEventListener("change", chooseData);
  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (!file) return;
    uploaded = { text: await file.text(), format: /\.ya?ml$/i.test(file.name) ? "yaml" : "json" };
    chooseData();
  });

  // The recorded reports, newest first; the newest that opens (null: none does).
  async function loadPayloads() {
    const { status, data } = await api.get("/payloads?limit=50");
    recorded.replaceChildren();
    const payloads = status === 200 ? data.payloads || [] : [];
    if (!payloads.length) {
      recorded.append(el("option", { value: "", text: "No recorded reports yet" }));
      return null;
    }
    for (const p of payloads) {
      const text = p.readable === false
        ? `${when(p.recorded_at)} · cannot be opened: ${p.error}`
        : `${p.request_id} · ${when(p.recorded_at)} · ${bytes(p.size)}`;
      recorded.append(el("option", { value: p.id, text, disabled: p.readable === false }));
    }
    return payloads.find((p) => p.readable !== false) || null;
  }

  // -- saving a version
  const saveForm = document.getElementById("save-form");
  const saved = document.getElementById("saved");
  saveForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("save-message").value.trim();
    if (!message || !editor) return;
    say(saved, "Saving…");
    const { status, data } = await api.post("/versions", { files: texts(), message, base });
    if (status !== 201 && status !== 200) {
      say(saved, `Not saved: ${data.error || `HTTP ${status}`}`, "error");
      return;
    }
    base = data.id;
    unsaved = false;
    editing.textContent = `Editing version ${shortId(data.report_version)} (saved, not live until promoted).`;
    saved.replaceChildren(
      `Saved version ${shortId(data.report_version)}${data.created ? "" : " (the same content as before)"}. `,
      el("a", { href: `/studio/shadow/${name}?version=${data.id}`, text: "Shadow render it" }),
    );
    saved.className = "saved ok";
    document.getElementById("save-message").value = "";
  });

  // -- the preview's two views
  const tabs = [document.getElementById("tab-pdf"), document.getElementById("tab-html")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const other = tabs[1 - tabs.indexOf(tab)];
      selectTab(other);
      other.focus();
    });
  }
  function selectTab(chosen) {
    for (const tab of tabs) {
      const on = tab === chosen;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
    }
  }

  fileSelect.addEventListener("change", () => editor.swap(fileSelect.value));

  (async () => {
    const { status, data } = await api.get("");
    if (status !== 200) {
      say(state, `Cannot open ${name}: ${data.error || `HTTP ${status}`}`, "error");
      return;
    }
    let files = data.files;
    if (data.head_version && data.head_version !== data.live_version) {
      const head = await api.get(`/versions/${data.head_version}`);
      if (head.status === 200) {
        files = head.data.files;
        base = data.head_version;
        editing.textContent = `Editing the newest saved version ${shortId(data.head_report_version)} (not live yet; live is ${shortId(data.live_report_version)}).`;
      }
    }
    if (base === "live") editing.textContent = `Editing the live version ${shortId(data.live_report_version)}.`;
    hasSample = Boolean(data.sample);
    if (!hasSample) {
      const sampleRadio = box.querySelector("input[name=data-kind][value=sample]");
      sampleRadio.disabled = true;
      sampleRadio.parentElement.append(" (none)");
    }
    buildEditor(files);
    // Saving takes the editor's files and the version they came from: not before both are in
    // (a save while they loaded stored the live version under the author's message).
    document.getElementById("save-button").disabled = false;
    const newest = await loadPayloads();
    if (!hasSample && newest) {
      // No sample file: the newest recorded report that opens (masked, as ever).
      box.querySelector("input[name=data-kind][value=recorded]").checked = true;
      recorded.value = newest.id;
    } else if (!hasSample) {
      // Neither: the author's own file, and no preview until there is one.
      box.querySelector("input[name=data-kind][value=upload]").checked = true;
      await chooseData();
      say(state, `No data to preview on yet: ${name} has no sample file and no recorded report. Upload a JSON or YAML file.`);
      return;
    }
    await chooseData();
  })();
}

// ---- versions ------------------------------------------------------------------------------
function studioVersions(box) {
  const api = studioApi(box);
  const name = box.dataset.template;
  const state = document.getElementById("versions-state");
  const body = box.querySelector("#versions tbody");
  const diffBox = document.getElementById("diff-box");
  const diffTitle = document.getElementById("diff-title");

  async function showDiff(from, to) {
    const { status, data } = await api.get(`/diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
    diffBox.hidden = false;
    if (status !== 200) {
      say(diffTitle, `No diff: ${data.error || `HTTP ${status}`}`, "error");
      diffPre.replaceChildren();
      return;
    }
    say(diffTitle, `From ${from === "live" ? "the live version" : shortId(data.from)} to ${shortId(data.to)}`);
    const files = data.files || [];
    if (!files.length) {
      diffPre.replaceWith((diffPre = el("p", { id: "diff", class: "note", text: "No change." })));
      return;
    }
    const holder = el("div", { id: "diff" });
    for (const file of files) {
      holder.append(el("h3", { text: `${file.path} (${file.status})` }));
      holder.append(diffBlock(file.diff, `Changes to ${file.path}`));
    }
    diffPre.replaceWith(holder);
    diffPre = holder;
    diffBox.scrollIntoView({ block: "nearest" });
  }
  let diffPre = document.getElementById("diff");

  async function load() {
    const { status, data } = await api.get("/versions");
    if (status !== 200) {
      say(state, `Cannot read the history: ${data.error || `HTTP ${status}`}`, "error");
      return;
    }
    const versions = data.versions || [];
    say(state, versions.length ? `${versions.length} event${versions.length === 1 ? "" : "s"} in the history; live is ${shortId(data.live_report_version)}.` : "No version saved yet: save one from the editor.");
    body.replaceChildren();
    versions.forEach((v, i) => {
      const older = versions.slice(i + 1).find((o) => o.id !== v.id);
      const actions = el("td", { class: "version-actions" });
      const buttons = [];
      if (older) buttons.push(["Diff with previous", () => showDiff(older.id, v.id)]);
      if (v.id !== data.live_version) buttons.push(["Diff with live", () => showDiff("live", v.id)]);
      for (const [label, act] of buttons) {
        const b = el("button", { type: "button", class: "secondary", text: label, "aria-label": `${label}: ${shortId(v.id)}` });
        b.addEventListener("click", act);
        actions.append(b, " ");
      }
      if (v.id !== versions[0].id) { // the newest is what the editor opens already
        const restore = el("button", { type: "button", class: "secondary", text: "Restore", "aria-label": `Restore ${shortId(v.id)}` });
        restore.addEventListener("click", async () => {
          const answer = await api.post(`/versions/${v.id}/restore`, { message: `restored ${shortId(v.id)}` });
          if (answer.status === 200) {
            say(state, `Restored ${shortId(v.id)}: it is the newest version again; the editor opens it.`, "ok");
            await load();
          } else {
            say(state, `Not restored: ${answer.data.error || `HTTP ${answer.status}`}`, "error");
          }
        });
        actions.append(restore, " ");
      }
      actions.append(el("a", { href: `/studio/shadow/${name}?version=${v.id}`, text: "Shadow render", "aria-label": `Shadow render ${shortId(v.id)}` }));
      const badges = el("td", { "data-label": "version" }, el("code", { text: shortId(v.report_version) }), " ", el("span", { class: `status s-${v.event}`, text: v.event }));
      if (v.live) badges.append(" ", el("span", { class: "status s-delivered", text: "live" }));
      if (v.shadow) badges.append(" ", el("span", { class: `status s-shadow-${v.shadow.status}`, text: `shadow: ${v.shadow.status}` }));
      if (i === 0 && v.id !== data.live_version) showDiff(older ? older.id : "live", v.id);
      body.append(
        el("tr", {},
          badges,
          el("td", { "data-label": "studio id" }, el("code", { class: "dim", text: shortId(v.id) })),
          el("td", { "data-label": "saved", text: when(v.at) }),
          el("td", { "data-label": "author", text: v.author || "—" }),
          el("td", { class: "reason", text: v.message || "" }),
          actions,
        ),
      );
    });
  }
  load();
}

// ---- shadow render and promotion -----------------------------------------------------------
function studioShadow(box) {
  const api = studioApi(box);
  const form = document.getElementById("shadow-form");
  const versionSelect = document.getElementById("shadow-version");
  const state = document.getElementById("shadow-state");
  const summary = document.getElementById("shadow-summary");
  const counts = document.getElementById("shadow-counts");
  const tbody = box.querySelector("#shadow-table tbody");
  const details = document.getElementById("shadow-details");
  const promoteBox = document.getElementById("promote-box");
  const promoteNote = document.getElementById("promote-note");
  const promoteButton = document.getElementById("promote-button");
  const promoteForm = document.getElementById("promote-form");
  const overrideForm = document.getElementById("override-form");
  const promoteState = document.getElementById("promote-state");
  let current = null; // the run shown
  let liveVersion = null;
  const reportVersions = new Map(); // studio id → the id its reports would record
  const named = (vid) => shortId(reportVersions.get(vid) || vid);
  let polling = null;

  function figure(label, src, alt, size, regions) {
    const img = el("img", { src, alt, width: String(size.w), height: String(size.h), loading: "lazy" });
    const shot = el("div", { class: "shot" }, img);
    if (regions && regions.length) {
      const ns = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", `0 0 ${size.w} ${size.h}`);
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("aria-hidden", "true");
      for (const r of regions) {
        const rect = document.createElementNS(ns, "rect");
        for (const [k, v] of [["x", r.x], ["y", r.y], ["width", r.w], ["height", r.h]]) rect.setAttribute(k, v);
        rect.setAttribute("class", "region");
        svg.append(rect);
      }
      shot.append(svg);
    }
    return el("figure", {}, shot, el("figcaption", { text: label }));
  }

  function resultDetails(result) {
    const title = `${result.request_id}: ${result.status}`;
    const block = el("details", { class: `shadow-result r-${result.status}`, id: `result-${result.index}` }, el("summary", { text: title }));
    block.addEventListener("toggle", () => {
      if (!block.open || block.dataset.filled) return;
      block.dataset.filled = "1";
      if (result.error) {
        const e = result.error;
        block.append(el("p", { class: "error", text: `${e.file || ""}${e.line ? `, line ${e.line}` : ""}: ${e.message}` }));
      }
      for (const page of result.changed_pages || []) {
        const size = page.size || { w: 661, h: 935 };
        const n = (page.regions || []).length;
        block.append(
          el("h3", { text: `Page ${page.page}: ${n} changed region${n === 1 ? "" : "s"} (${(page.ratio * 100).toFixed(2)} % of the page)` }),
          el("div", { class: "side-by-side" },
            figure("Delivered", page.images.delivered, `Page ${page.page} as delivered`, size, null),
            figure("This version, changed regions boxed", page.images.candidate, `Page ${page.page} rendered by this version; ${n} changed region${n === 1 ? "" : "s"} boxed`, size, page.regions),
          ),
        );
      }
      if (result.text_diff) {
        block.append(el("h3", { text: "Text" }), diffBlock(result.text_diff, `Text changes in ${result.request_id}`));
      } else if (result.status !== "failed") {
        block.append(el("p", { class: "note", text: "The extracted text is the same." }));
      }
    });
    return block;
  }

  function showRun(run) {
    current = run;
    summary.hidden = false;
    const s = run.summary || {};
    const running = run.status === "running";
    counts.replaceChildren(
      `${s.done ?? 0} of ${s.total ?? 0} recorded report${s.total === 1 ? "" : "s"} rendered: `,
      el("span", { class: "status s-failed", text: `${s.failed ?? 0} failed` }), " ",
      el("span", { class: "status s-changed", text: `${s.changed ?? 0} changed` }), " ",
      el("span", { class: "status s-same", text: `${s.same ?? 0} same` }),
      running ? " · still running…" : "",
    );
    tbody.replaceChildren();
    details.replaceChildren();
    for (const r of run.results || []) {
      const detail = el("td", { class: "reason" });
      if (r.error) detail.append(`${r.error.file || ""}${r.error.line ? `, line ${r.error.line}` : ""}: ${r.error.message}`);
      else if ((r.changed_pages || []).length) detail.append(`${r.changed_pages.length} page${r.changed_pages.length === 1 ? "" : "s"} changed`);
      if (r.status !== "same" || r.text_diff) {
        detail.append(" ", el("a", { href: `#result-${r.index}`, class: "show-result", "data-index": String(r.index), text: "Show" }));
      }
      tbody.append(
        el("tr", { "data-status": r.status },
          el("th", { scope: "row", class: "reason", text: r.request_id }),
          el("td", { "data-label": "outcome" }, el("span", { class: `status s-${r.status}`, text: r.status })),
          el("td", { "data-label": "pages", text: change(r.pages?.before, r.pages?.after, (x) => (x ?? "—")) }),
          el("td", { "data-label": "time", text: change(r.seconds?.before, r.seconds?.after, (x) => (typeof x === "number" ? `${x.toFixed(2)} s` : "—")) }),
          el("td", { "data-label": "size", text: change(r.bytes?.before, r.bytes?.after, bytes) }),
          detail,
        ),
      );
      if (r.status !== "same" || r.text_diff) details.append(resultDetails(r));
    }
    for (const link of tbody.querySelectorAll("a.show-result")) {
      link.addEventListener("click", () => {
        const block = document.getElementById(`result-${link.dataset.index}`);
        if (block) block.open = true;
      });
    }
    if (run.status === "error") say(state, `The shadow render stopped: ${run.error}`, "error");
    else if (running) say(state, "Rendering the recorded reports with this version…");
    else say(state, `Done: ${verdictText(s.verdict)}`, s.verdict === "fail" ? "error" : "ok");
    if (!running) showPromotion(run);
  }

  function verdictText(verdict) {
    return {
      fail: "this version fails on at least one recorded report.",
      changed: "this version changes some reports; look at the changes before promoting it.",
      pass: "this version renders every recorded report the same.",
    }[verdict] || verdict;
  }

  function showPromotion(run) {
    promoteBox.hidden = false;
    promoteState.textContent = "";
    if (run.version === liveVersion) {
      promoteButton.disabled = true;
      promoteNote.textContent = `Version ${named(run.version)} is the live version already.`;
      promoteNote.className = "";
      if (overrideForm) overrideForm.hidden = true;
      return;
    }
    const failed = (run.summary || {}).failed || 0;
    const refused = run.status !== "done" || failed > 0;
    promoteButton.disabled = refused;
    if (refused) {
      const why = run.status !== "done" ? "the shadow render did not finish" : `${failed} recorded report${failed === 1 ? "" : "s"} fail${failed === 1 ? "s" : ""} with version ${named(run.version)}`;
      promoteNote.replaceChildren(el("strong", { text: "Promotion refused: " }), `${why}. Fix the template, save a version and run the shadow render again.`);
      promoteNote.className = "refused";
      if (overrideForm) {
        overrideForm.hidden = false;
        promoteNote.append(" As ops you may promote anyway, with a reason (it goes in the audit trail).");
      }
    } else {
      promoteNote.textContent = `Version ${named(run.version)} may go live: the pipeline renders it from the next report.`;
      promoteNote.className = "";
      if (overrideForm) overrideForm.hidden = true;
    }
  }

  async function promote(reason) {
    say(promoteState, "Promoting…");
    const body = { version: current.version, override_reason: reason || null };
    const { status, data } = await api.post("/promote", body);
    if (status !== 200) {
      say(promoteState, `Refused: ${data.error || `HTTP ${status}`}`, "error");
      return;
    }
    if (data.mode === "export") {
      promoteState.replaceChildren(`${data.message} `, el("a", { href: data.export_url, text: "Download the change" }));
      promoteState.className = "ok";
    } else {
      say(promoteState, `Version ${named(data.version)} is live: ${data.message || "the templates folder holds it"}.`, "ok");
    }
  }
  promoteForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!promoteButton.disabled) promote(null);
  });
  if (overrideForm) {
    overrideForm.addEventListener("submit", (event) => {
      event.preventDefault();
      promote(document.getElementById("override-reason").value.trim());
    });
  }

  let followed = 0; // the run asked for last: an answer about an earlier one is stale

  function stopFollowing() {
    clearTimeout(polling);
    followed++; // an answer still on its way about the run followed until now must not show
  }

  async function follow(runId) {
    stopFollowing();
    const mine = followed;
    const { status, data } = await api.get(`/api/studio/shadow/${encodeURIComponent(runId)}`);
    if (mine !== followed) return; // another run was started or picked meanwhile
    if (status !== 200) {
      say(state, `Cannot read the shadow render: ${data.error || `HTTP ${status}`}`, "error");
      return;
    }
    showRun(data);
    if (data.status === "running") polling = setTimeout(() => follow(runId), POLL_MS);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    promoteBox.hidden = true;
    const last = Number(document.getElementById("shadow-last").value) || 20;
    stopFollowing();
    say(state, "Starting the shadow render…");
    const { status, data } = await api.post("/shadow", { version: versionSelect.value, last });
    if (status !== 202 && status !== 200) {
      say(state, `Not started: ${data.error || `HTTP ${status}`}`, "error");
      return;
    }
    follow(data.run);
  });

  (async () => {
    const wanted = box.dataset.version;
    const [versions, runs] = await Promise.all([api.get("/versions"), api.get("/shadow")]);
    versionSelect.replaceChildren();
    liveVersion = versions.status === 200 ? versions.data.live_version : null;
    const seen = new Set();
    const history = versions.status === 200 ? versions.data.versions || [] : [];
    for (const v of history) if (v.report_version) reportVersions.set(v.id, v.report_version);
    const saved = new Map(history.filter((v) => v.event === "save").map((v) => [v.id, v.message]));
    for (const v of history) {
      if (seen.has(v.id)) continue;
      seen.add(v.id);
      const label = `${named(v.id)} · ${saved.get(v.id) || v.message || v.event}${v.live ? " (live)" : ""}`;
      versionSelect.append(el("option", { value: v.id, text: label, selected: v.id === wanted }));
    }
    if (!seen.size) {
      versionSelect.append(el("option", { value: "", text: "No saved version: save one in the editor" }));
      return;
    }
    // Enabled once there is a version to choose: a click while the list loads did nothing.
    document.getElementById("shadow-run").disabled = false;
    if (wanted && !seen.has(wanted)) say(state, `No version ${shortId(wanted)} of this template.`, "error");
    const previous = (runs.status === 200 ? runs.data.runs || [] : []).find((r) => r.version === versionSelect.value);
    if (previous) follow(previous.run);
    versionSelect.addEventListener("change", () => {
      const run = (runs.status === 200 ? runs.data.runs || [] : []).find((r) => r.version === versionSelect.value);
      summary.hidden = true;
      promoteBox.hidden = true;
      stopFollowing(); // the other version's run is not this one
      say(state, "");
      if (run) follow(run.run);
    });
  })();
}

// ---- the template list ---------------------------------------------------------------------
async function studioList(table) {
  const api = studioApi(table);
  const { status, data } = await api.get("/api/studio/templates");
  if (status !== 200) return;
  for (const t of data.templates || []) {
    const row = table.querySelector(`tr[data-template="${CSS.escape(t.name)}"]`);
    if (!row) continue;
    row.querySelector(".live").replaceChildren(el("code", { text: shortId(t.live_report_version) }));
    const head = row.querySelector(".head");
    if (t.head_version && t.head_version !== t.live_version) {
      head.replaceChildren(el("code", { text: shortId(t.head_report_version) }), " ", el("span", { class: "status s-save", text: "not live" }));
    } else {
      head.textContent = "—";
    }
    row.querySelector(".recorded").textContent = String(t.payloads ?? 0);
  }
  const note = document.getElementById("folder-note");
  if (note && data.writable === false) {
    note.textContent = "The templates folder is read-only here: promoting a version gives you the change to apply (a .tar.gz and a patch).";
    note.hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("studio-list");
  if (list) studioList(list);
  const pages = { "studio-edit": studioEdit, "studio-versions": studioVersions, "studio-shadow": studioShadow };
  for (const [id, start] of Object.entries(pages)) {
    const box = document.getElementById(id);
    if (box) start(box);
  }
});
