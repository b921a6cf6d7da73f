// qembed playground: vanilla JS, same-origin calls only (/info, /tokenize, /v1/embeddings,
// /v1/index, /v1/search). The page computes on load when the URL carries texts:
//   /?text=first&text=second&run=1     (or texts=first|second), optional task, input_type,
//   prompt_name, instruction, dimensions; q=... (and mode, k) runs a search when an index is served.
// Every result is readable in the DOM: heatmap cells carry data-similarity / data-row / data-col,
// token rows data-count, search hits data-rank / data-score; #status gets data-state=done|error.
"use strict";

(function () {
  const MAX_TEXTS = 32;
  const $ = (id) => document.getElementById(id);
  let info = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  function clip(text, n) {
    const flat = text.replace(/\s+/g, " ").trim();
    return flat.length > n ? flat.slice(0, n - 1) + "\u2026" : flat;
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = $("api-key").value.trim();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  async function call(method, path, body) {
    let response;
    try {
      response = await fetch(path, { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new Error("Cannot reach the server (" + err.message + ").");
    }
    const text = await response.text();
    let data = null;
    try { data = JSON.parse(text); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const message = data && data.error && data.error.message ? data.error.message : text || response.statusText;
      const err = new Error(response.status + ": " + message);
      err.status = response.status;
      throw err;
    }
    return data;
  }

  function setStatus(node, state, message) {
    node.dataset.state = state;
    node.textContent = message;
    node.className = state === "error" ? "error" : "muted";
  }

  // -- options ------------------------------------------------------------------------------

  function options() {
    const out = {};
    const task = $("task").value;
    if (task) { out.task = task; out.input_type = $("input-type").value; }
    const prompt = $("prompt-name").value;
    if (prompt) out.prompt_name = prompt;
    const instruction = $("instruction").value.trim();
    if (instruction) out.instruction = instruction;
    const dims = $("dimensions").value.trim();
    if (dims) out.dimensions = parseInt(dims, 10);
    return out;
  }

  function texts() {
    return $("texts").value.split("\n").map((t) => t.trim()).filter((t) => t.length > 0);
  }

  // -- compare ------------------------------------------------------------------------------

  function similarities(vectors) {
    const unit = vectors.map((v) => {
      let n = 0;
      for (const x of v) n += x * x;
      n = Math.sqrt(n) || 1;
      return v.map((x) => x / n);
    });
    return unit.map((a) => unit.map((b) => {
      let s = 0;
      for (let i = 0; i < a.length; i++) s += a[i] * b[i];
      return s;
    }));
  }

  function colour(s) {
    // 0 or below: white; 1: deep blue. Text turns white on dark cells.
    const t = Math.max(0, Math.min(1, s));
    return { bg: "hsl(215, 75%, " + (97 - 60 * t).toFixed(1) + "%)", fg: t > 0.55 ? "#fff" : "#111" };
  }

  function renderHeatmap(items, sims, dimension) {
    const table = el("table", { id: "similarity", class: "heatmap", "data-size": items.length, "data-dimension": dimension });
    table.append(el("caption", {}, "Cosine similarity (" + dimension + " dimensions)"));
    const head = el("tr", {}, el("th", {}, ""));
    items.forEach((t, j) => head.append(el("th", { scope: "col", title: t }, "#" + (j + 1))));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    sims.forEach((row, i) => {
      const tr = el("tr", {}, el("th", { scope: "row", title: items[i] }, "#" + (i + 1) + " " + clip(items[i], 40)));
      row.forEach((s, j) => {
        const c = colour(s);
        const td = el("td", {
          class: "cell", "data-row": i, "data-col": j, "data-similarity": s.toFixed(6),
          title: "#" + (i + 1) + " vs #" + (j + 1) + ": " + s.toFixed(4),
        }, s.toFixed(3));
        td.style.backgroundColor = c.bg;
        td.style.color = c.fg;
        tr.append(td);
      });
      body.append(tr);
    });
    table.append(body);
    $("heatmap").replaceChildren(table);
  }

  function renderTokens(items, tokenized) {
    const max = tokenized.max_tokens;
    const table = el("table", { id: "token-counts", class: "tokens", "data-max-tokens": max });
    table.append(el("caption", {}, "Tokens per text (special tokens and prompt included; window " + max + ")"));
    table.append(el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Text"), el("th", {}, "Tokens"))));
    const body = el("tbody");
    tokenized.data.forEach((d) => {
      const over = d.count > max;
      body.append(el("tr", { "data-index": d.index, "data-count": d.count, class: over ? "over" : null },
        el("td", {}, "#" + (d.index + 1)), el("td", { title: items[d.index] }, clip(items[d.index], 80)),
        el("td", { class: "num" }, d.count + (over ? " (over the window)" : ""))));
    });
    table.append(body);
    $("tokens").replaceChildren(table);
  }

  async function compare() {
    const status = $("status");
    const items = texts();
    if (items.length === 0) { setStatus(status, "error", "Type at least one text (one per line)."); return; }
    if (items.length > MAX_TEXTS) { setStatus(status, "error", "At most " + MAX_TEXTS + " texts at a time."); return; }
    setStatus(status, "running", "Embedding " + items.length + " text" + (items.length > 1 ? "s" : "") + "\u2026");
    $("run").disabled = true;
    const started = performance.now();
    try {
      const opts = options();
      const [tokenized, embedded] = await Promise.all([
        call("POST", "tokenize", Object.assign({ input: items }, opts)),
        call("POST", "v1/embeddings", Object.assign({ input: items, encoding_format: "float" }, opts)),
      ]);
      const vectors = embedded.data.slice().sort((a, b) => a.index - b.index).map((d) => d.embedding);
      const dimension = vectors.length ? vectors[0].length : 0;
      renderTokens(items, tokenized);
      renderHeatmap(items, similarities(vectors), dimension);
      const ms = Math.round(performance.now() - started);
      setStatus(status, "done", items.length + " texts, " + dimension + " dimensions, " + embedded.usage.total_tokens + " tokens, " + ms + " ms");
    } catch (err) {
      setStatus(status, "error", err.message);
    } finally {
      $("run").disabled = false;
    }
  }

  // -- search -------------------------------------------------------------------------------

  async function probeIndex() {
    try {
      const index = await call("GET", "v1/index");
      $("search").hidden = false;
      $("index-name").textContent = "(" + index.index + ": " + index.documents + " documents, " + index.chunks + " chunks)";
      return true;
    } catch (err) {
      if (err.status === 401) {  // served, but behind the key
        $("search").hidden = false;
        $("index-name").textContent = "(enter the API key above)";
        return true;
      }
      $("search").hidden = true;  // 404: no --index
      return false;
    }
  }

  async function search() {
    const status = $("search-status");
    const query = $("query").value.trim();
    if (!query) { setStatus(status, "error", "Type a query."); return; }
    setStatus(status, "running", "Searching\u2026");
    try {
      const k = parseInt($("k").value, 10) || 5;
      const result = await call("POST", "v1/search", { query, k, mode: $("mode").value });
      const list = $("results");
      list.replaceChildren(...result.data.map((hit) => {
        const where = [hit.path || hit.doc_id, hit.heading && hit.heading.length ? hit.heading.join(" \u203a ") : null]
          .filter(Boolean).join(" \u2014 ");
        return el("li", { class: "hit", "data-rank": hit.rank, "data-score": hit.score, "data-id": hit.id },
          el("div", { class: "hit-head" }, el("span", { class: "score" }, hit.score.toFixed(4)), " ", el("span", { class: "where" }, where || hit.title || "")),
          el("p", { class: "snippet" }, clip(hit.text || "", 400)));
      }));
      setStatus(status, "done", result.data.length + " results (" + result.mode + ")");
    } catch (err) {
      setStatus(status, "error", err.message);
    }
  }

  // -- start --------------------------------------------------------------------------------

  async function loadInfo() {
    try {
      info = await call("GET", "info");
    } catch (err) {
      $("model").textContent = "Cannot read /info: " + err.message;
      return;
    }
    $("model").textContent = info.served_model_name + " \u2014 " + info.dimension + " dimensions, window " + info.max_tokens +
      " tokens, " + info.backend + " on " + info.device + (info.fallback_reason ? " (fallback: " + info.fallback_reason + ")" : "");
    const select = $("prompt-name");
    for (const name of Object.keys(info.prompts || {})) {
      select.append(el("option", { value: name, title: info.prompts[name] }, name));
    }
    const dims = $("dimensions");
    dims.max = info.dimension;
    dims.min = info.min_dimensions;
    dims.placeholder = "full (" + info.dimension + ")";
    if (!info.supports_matryoshka) { dims.disabled = true; dims.title = "This model has no Matryoshka dimensions."; }
    const families = {  // README, "Instructions": what a task gives each side
      qwen3: "a task puts 'Instruct: {task}\\nQuery:' before queries (both sides for symmetric tasks such as sts); documents get none",
      e5: "a task puts 'query: ' before queries (both sides for symmetric tasks), 'passage: ' before documents",
      "bge-zh": "queries of retrieval tasks get the model's instruction; documents and symmetric tasks get none",
      "bge-en": "queries of retrieval tasks get the model's instruction; documents and symmetric tasks get none",
      prompts: "a task gives queries the model's 'query' prompt (both sides for symmetric tasks), documents its 'document' prompt",
      none: "this model takes no prompts: a task changes nothing (an instruction still applies)",
    };
    $("family").textContent = "Prompt family: " + info.prompt_family + (families[info.prompt_family] ? " \u2014 " + families[info.prompt_family] : "");
  }

  function fromUrl() {
    const params = new URLSearchParams(location.search);
    let items = params.getAll("text");
    if (params.has("texts")) items = items.concat(params.get("texts").split("|"));
    if (items.length) $("texts").value = items.join("\n");
    for (const [param, id] of [["task", "task"], ["input_type", "input-type"], ["instruction", "instruction"], ["dimensions", "dimensions"], ["mode", "mode"], ["k", "k"], ["q", "query"]]) {
      if (params.has(param)) $(id).value = params.get(param);
    }
    return params;
  }

  async function start() {
    $("embed-form").addEventListener("submit", (e) => { e.preventDefault(); compare(); });
    $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
    $("api-key").addEventListener("change", probeIndex);
    const params = fromUrl();
    await loadInfo();
    if (params.has("prompt_name")) $("prompt-name").value = params.get("prompt_name");
    const served = await probeIndex();
    if (params.get("run") === "1" && texts().length) await compare();
    if (served && params.has("q")) await search();
    document.body.dataset.ready = "1";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
