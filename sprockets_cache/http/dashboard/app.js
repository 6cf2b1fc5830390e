// The dashboard: reads the public API like any client, draws each factory with uPlot, and keeps up
// through each factory's /events stream, or by polling with If-None-Match while a stream is down.
"use strict";

(() => {
  const API = "/api/v1";
  const SPANS_S = { hour: 3600, day: 86400, week: 7 * 86400 };
  const LABELS = {
    recent: "Recent", hour: "Last hour", day: "Last day", week: "Last week", all: "All data", custom: "Custom",
  };
  // "Recent" gives each chart a window of its own: up to this long, ending at its factory's newest point.
  const RECENT_S = 86400;
  // Bucket widths a chart may ask for: the smallest one that keeps a chart's points within its pixels.
  const BUCKETS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  // A browser opens at most 6 HTTP/1.1 connections to a host: streams past this many would starve
  // the page's own requests, so further factories are polled.
  const MAX_STREAMS = 4;
  const POLL_MS = 5000;
  const RESUBSCRIBE_MS = 15000;
  const COALESCE_MS = 100;
  const CHART_HEIGHT = 220;
  const MAX_SPROCKETS = 5000;

  const state = {
    range: "recent",
    custom: null, // {from, to} in unix seconds
    factories: new Map(), // id -> card
    window: null, // {from, to} shared by every chart; null in "recent", where each card has its own
  };

  const $ = (selector, root = document) => root.querySelector(selector);
  const numbers = new Intl.NumberFormat();
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

  // HTTP

  class ApiError extends Error {}

  async function getJson(path, etag) {
    const headers = { Accept: "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    // no-store: the page keeps what it has and asks with If-None-Match itself.
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 304) return { notModified: true, etag };
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) {
        // not a problem document
      }
      throw new ApiError(`${path}: ${detail}`);
    }
    return { body: await response.json(), etag: response.headers.get("ETag") };
  }

  async function getPages(path, name, most) {
    const items = [];
    let cursor = null;
    do {
      const separator = path.includes("?") ? "&" : "?";
      const page = (await getJson(cursor ? `${path}${separator}cursor=${cursor}` : path)).body;
      items.push(...page[name]);
      cursor = page.next_cursor;
    } while (cursor && items.length < most);
    return items;
  }

  function showProblem(error) {
    const box = $("#problem");
    box.textContent = error ? `Could not load data: ${error.message}. Retrying.` : "";
    box.hidden = !error;
  }

  // Time

  function formatTime(unix) {
    return unix == null ? "–" : dateTime.format(new Date(unix * 1000));
  }

  function ago(unix) {
    const seconds = unix - Date.now() / 1000;
    const units = [
      ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400], ["day", 86400],
      ["hour", 3600], ["minute", 60],
    ];
    for (const [unit, size] of units) {
      if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
    }
    return "just now";
  }

  function toLocalInput(unix) {
    const date = new Date(unix * 1000);
    date.setMinutes(date.getMinutes() - date.getTimezoneOffset());
    return date.toISOString().slice(0, 16);
  }

  function fromLocalInput(value) {
    const time = new Date(value).getTime();
    return Number.isNaN(time) ? null : Math.floor(time / 1000);
  }

  // The window: presets end at the newest point of any factory, not at "now", so old data (the
  // seeds are from January 2021) still fills "last hour"; for live data the two are the same.

  function newestPoint() {
    const times = [...state.factories.values()].map((card) => card.lastTime).filter((t) => t != null);
    return times.length ? Math.max(...times) : null;
  }

  function oldestPoint() {
    const times = [...state.factories.values()].map((card) => card.firstTime).filter((t) => t != null);
    return times.length ? Math.min(...times) : null;
  }

  function currentWindow() {
    if (state.range === "recent") return null;
    if (state.range === "custom" && state.custom) return state.custom;
    const end = newestPoint();
    if (end == null) return null;
    if (state.range === "all") return { from: oldestPoint(), to: end };
    return { from: Math.max(0, end - SPANS_S[state.range] + 1), to: end };
  }

  // A factory's own recent points, so a factory that is old or stopped still shows its lines.
  function recentWindow(card) {
    if (card.lastTime == null) return null;
    return { from: Math.max(card.firstTime, card.lastTime - RECENT_S + 1), to: card.lastTime };
  }

  function windowOf(card) {
    return state.range === "recent" ? recentWindow(card) : state.window;
  }

  function bucketFor(view, widthPx) {
    const span = view.to - view.from + 1;
    // One bucket fewer than pixels: a window rarely starts on a bucket's edge.
    const least = span / Math.max(1, widthPx - 1);
    return BUCKETS_S.find((width) => width >= least) || Math.ceil(least);
  }

  function describeWindow() {
    const line = $("#window");
    const view = state.window;
    if (state.range === "recent" && newestPoint() != null) {
      line.textContent = "Recent: each chart ends at its factory's newest point and spans up to a day before it";
      return;
    }
    if (!view) {
      line.textContent = state.factories.size ? "No points yet." : "No factories yet.";
      return;
    }
    const end = state.range === "custom" ? "" : ` · ends at the newest point (${ago(view.to)})`;
    line.textContent = `${LABELS[state.range]}: ${formatTime(view.from)} – ${formatTime(view.to)}${end}`;
  }

  // Cards

  function makeCard(factory) {
    const node = $("#factory-card").content.firstElementChild.cloneNode(true);
    node.dataset.factoryId = factory.id;
    $(".name", node).textContent = factory.name;
    $("#factories").append(node);
    return {
      id: factory.id,
      name: factory.name,
      node,
      version: 0,
      summaryEtag: null,
      firstTime: null,
      lastTime: null,
      chartUrl: null,
      chartEtag: null,
      view: null, // the window its chart shows
      plot: null,
      source: null,
      poller: null,
      pending: null,
    };
  }

  function setLive(card, mode) {
    const badge = $(".live", card.node);
    badge.textContent = { live: "live", polling: "polling", connecting: "connecting" }[mode];
    badge.className = `live ${mode}`;
  }

  function showSummary(card) {
    const time = $(".last time", card.node);
    time.textContent = card.lastTime == null ? "–" : formatTime(card.lastTime);
    time.title = card.lastTime == null ? "" : ago(card.lastTime);
    time.dateTime = card.lastTime == null ? "" : new Date(card.lastTime * 1000).toISOString();
    time.dataset.unix = card.lastTime == null ? "" : String(card.lastTime);
  }

  function showTotals(card, chart) {
    const actual = chart.sprocket_production_actual.reduce((sum, n) => sum + n, 0);
    const goal = chart.sprocket_production_goal.reduce((sum, n) => sum + n, 0);
    $(".actual", card.node).textContent = numbers.format(actual);
    $(".goal", card.node).textContent = numbers.format(goal);
    const attainment = $(".attainment", card.node);
    attainment.textContent = goal ? percent.format(actual / goal) : "–";
    attainment.className = `attainment ${goal && actual < goal ? "behind" : "on-track"}`;
  }

  // Breaks the line where points are missing (well past their usual spacing), so a stop in
  // production is not drawn as a slope.
  function withGaps(chart, bucket) {
    const steps = chart.time.slice(1).map((time, i) => time - chart.time[i]).sort((a, b) => a - b);
    const usual = Math.max(bucket, steps.length ? steps[steps.length >> 1] : bucket);
    const times = [];
    const actual = [];
    const goal = [];
    chart.time.forEach((time, i) => {
      if (i > 0 && time - chart.time[i - 1] > 2.5 * usual) {
        times.push(chart.time[i - 1] + usual);
        actual.push(null);
        goal.push(null);
      }
      times.push(time);
      actual.push(chart.sprocket_production_actual[i]);
      goal.push(chart.sprocket_production_goal[i]);
    });
    return [times, actual, goal];
  }

  function plotWidth(card) {
    return Math.max(200, $(".chart", card.node).clientWidth);
  }

  // On hover, the point under the cursor: its time (a bucket's first second), actual and goal.
  function tooltip() {
    let tip = null;
    const show = (u) => {
      const i = u.cursor.idx;
      const [time, actual, goal] = [0, 1, 2].map((n) => (i == null ? null : u.data[n][i]));
      tip.hidden = actual == null;
      if (tip.hidden) return;
      tip.dataset.unix = String(time);
      $(".tip-time", tip).textContent = formatTime(time);
      $(".tip-actual", tip).textContent = numbers.format(actual);
      $(".tip-goal", tip).textContent = numbers.format(goal);
      const x = u.valToPos(time, "x");
      const left = x + tip.offsetWidth + 12 > u.over.clientWidth ? x - tip.offsetWidth - 12 : x + 12;
      tip.style.left = `${Math.max(0, left)}px`;
      tip.style.top = `${Math.max(0, Math.min(u.cursor.top, u.over.clientHeight - tip.offsetHeight))}px`;
    };
    return {
      hooks: {
        init: (u) => {
          tip = $("#chart-tip").content.firstElementChild.cloneNode(true);
          tip.hidden = true;
          u.over.append(tip);
        },
        setCursor: show,
      },
    };
  }

  function makePlot(card, data) {
    const few = data[0].length < 60;
    const options = {
      width: plotWidth(card),
      height: CHART_HEIGHT,
      plugins: [tooltip()],
      scales: {
        x: { time: true, range: () => [card.view.from, card.view.to] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] },
      },
      series: [
        {},
        { label: "Actual", stroke: "#2563eb", fill: "rgba(37, 99, 235, 0.10)", width: 2, points: { show: few } },
        { label: "Goal", stroke: "#d97706", width: 1.5, dash: [6, 4], points: { show: false } },
      ],
      axes: [
        { stroke: "#4b5563", grid: { stroke: "#eceff3" }, ticks: { stroke: "#d1d5db" } },
        { stroke: "#4b5563", grid: { stroke: "#eceff3" }, ticks: { stroke: "#d1d5db" }, size: 48 },
      ],
      cursor: { drag: { x: false, y: false } },
      // The legend is a key only: the tooltip shows the values under the cursor.
      legend: { live: false },
    };
    return new uPlot(options, data, $(".chart", card.node));
  }

  async function loadChart(card) {
    const view = windowOf(card);
    if (!view) {
      $(".note", card.node).textContent = "No points yet.";
      return;
    }
    card.view = view;
    const bucket = bucketFor(view, plotWidth(card));
    const url = `${API}/factories/${card.id}?from=${view.from}&to=${view.to}&bucket=${bucket}`;
    // An ETag is the factory's version, whatever the range: only ask with it for the same URL.
    const result = await getJson(url, url === card.chartUrl ? card.chartEtag : null);
    if (result.notModified) return;
    card.chartUrl = url;
    card.chartEtag = result.etag;
    const chart = result.body.chart_data;
    // The API answers the downsampled past at its span width when that is wider than the bucket asked.
    const resolution = result.body.resolution_s || bucket;
    const data = withGaps(chart, resolution);
    if (card.plot) card.plot.setData(data);
    else card.plot = makePlot(card, data);
    card.plot.root.dataset.bucket = String(resolution);
    card.plot.root.dataset.points = String(chart.time.length);
    showTotals(card, chart);
    const note = $(".note", card.node);
    note.textContent = chart.time.length
      ? `Sprockets summed per ${bucketName(resolution)} bucket; attainment is actual ÷ goal over the window.`
      : "No points in this window.";
  }

  function bucketName(seconds) {
    for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]]) {
      if (seconds % size === 0) return seconds === size ? unit : `${seconds / size}-${unit}`;
    }
    return `${seconds}-second`;
  }

  // Summaries: the first and last time of each factory's points, revalidated with If-None-Match.
  async function loadSummary(card) {
    const result = await getJson(`${API}/factories/${card.id}/summary`, card.summaryEtag);
    if (result.notModified) return false;
    card.summaryEtag = result.etag;
    card.version = Number((result.etag || '"0"').replaceAll('"', ""));
    card.firstTime = result.body.first_time;
    card.lastTime = result.body.last_time;
    showSummary(card);
    return true;
  }

  // Moves the window when the newest point moved, then redraws what needs it.
  async function refresh(card) {
    try {
      if (!(await loadSummary(card))) return;
      const view = currentWindow();
      const before = state.window;
      // In "recent" each chart has its own window: only this card's can have moved.
      const moved = view !== before && (!view || !before || view.from !== before.from || view.to !== before.to);
      state.window = view;
      describeWindow();
      const cards = moved ? [...state.factories.values()] : [card];
      await Promise.all(cards.map(loadChart));
      showProblem(null);
    } catch (error) {
      showProblem(error);
    }
  }

  // Several events close together cost one refresh.
  function scheduleRefresh(card) {
    if (card.pending) return;
    card.pending = setTimeout(async () => {
      card.pending = null;
      await refresh(card);
    }, COALESCE_MS);
  }

  async function redrawAll() {
    state.window = currentWindow();
    describeWindow();
    try {
      await Promise.all([...state.factories.values()].map(loadChart));
      showProblem(null);
    } catch (error) {
      showProblem(error);
    }
  }

  // Live updates

  function startPolling(card) {
    setLive(card, "polling");
    if (!card.poller) card.poller = setInterval(() => refresh(card), POLL_MS);
  }

  function stopPolling(card) {
    clearInterval(card.poller);
    card.poller = null;
  }

  function subscribe(card) {
    const source = new EventSource(`${API}/factories/${card.id}/events`);
    card.source = source;
    setLive(card, "connecting");
    source.addEventListener("open", () => {
      setLive(card, "live");
      stopPolling(card);
      scheduleRefresh(card); // catch up on what was written while the stream was down
    });
    source.addEventListener("points", (event) => {
      const { version } = JSON.parse(event.data);
      if (version > card.version) scheduleRefresh(card);
    });
    source.addEventListener("error", () => {
      // The browser reconnects by itself (with Last-Event-ID) unless the server refused the stream.
      startPolling(card);
      if (source.readyState === EventSource.CLOSED) {
        card.source = null;
        setTimeout(() => subscribe(card), RESUBSCRIBE_MS);
      }
    });
  }

  // Sprockets

  async function loadSprockets() {
    const body = $("#sprockets tbody");
    const sprockets = await getPages(`${API}/sprockets?limit=1000`, "sprockets", MAX_SPROCKETS);
    const rows = sprockets.map((sprocket) => {
      const row = document.createElement("tr");
      const cells = [
        sprocket.id, sprocket.teeth, sprocket.pitch_diameter, sprocket.outside_diameter, sprocket.pitch,
        sprocket.updated_at ? formatTime(Date.parse(sprocket.updated_at) / 1000) : "–",
      ];
      for (const value of cells) {
        const cell = document.createElement("td");
        cell.textContent = typeof value === "number" ? numbers.format(value) : value;
        row.append(cell);
      }
      return row;
    });
    if (!rows.length) {
      const cell = document.createElement("td");
      cell.colSpan = 6;
      cell.textContent = "No sprockets yet.";
      rows.push(document.createElement("tr"));
      rows[0].append(cell);
    }
    body.replaceChildren(...rows);
  }

  // The range picker

  function readHash() {
    const [range, from, to] = location.hash.slice(1).split(/[:-]/);
    if (range === "custom" && Number(from) <= Number(to)) {
      state.range = "custom";
      state.custom = { from: Number(from), to: Number(to) };
    } else if (range in LABELS && range !== "custom") {
      state.range = range;
    }
  }

  function showRange() {
    for (const button of document.querySelectorAll("[data-range]")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === state.range));
    }
    $("#custom").hidden = state.range !== "custom";
    if (state.range === "custom") {
      $("#from").value = toLocalInput(state.custom.from);
      $("#to").value = toLocalInput(state.custom.to); // to the minute
    }
  }

  function choose(range) {
    if (range === "custom") {
      const newest = newestPoint();
      const recent = newest == null ? null : { from: Math.max(oldestPoint(), newest - RECENT_S + 1), to: newest };
      const view = state.window || recent;
      if (view) {
        $("#from").value = toLocalInput(view.from);
        $("#to").value = toLocalInput(view.to);
      }
      $("#custom").hidden = false;
      return;
    }
    state.range = range;
    history.replaceState(null, "", `#${range}`);
    showRange();
    redrawAll();
  }

  function chooseCustom(event) {
    event.preventDefault();
    const from = fromLocalInput($("#from").value);
    const to = fromLocalInput($("#to").value);
    if (from == null || to == null || from > to) {
      showProblem(new Error("choose a start before the end"));
      return;
    }
    state.range = "custom";
    state.custom = { from, to: to + 59 }; // the inputs are to the minute: include the last one
    history.replaceState(null, "", `#custom:${from}-${to + 59}`);
    showRange();
    redrawAll();
  }

  function onResize() {
    let timer = null;
    window.addEventListener("resize", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        for (const card of state.factories.values()) card.plot?.setSize({ width: plotWidth(card), height: CHART_HEIGHT });
        redrawAll();
      }, 250);
    });
  }

  async function start() {
    readHash();
    showRange();
    for (const button of document.querySelectorAll("[data-range]")) {
      button.addEventListener("click", () => choose(button.dataset.range));
    }
    $("#range").addEventListener("submit", chooseCustom);
    onResize();
    loadSprockets().catch(showProblem);
    await loadFactories();
  }

  async function loadFactories() {
    try {
      // An empty range: names and ids only.
      const factories = await getPages(`${API}/factories?from=0&to=0&limit=1000`, "factories", Infinity);
      for (const factory of factories) state.factories.set(factory.id, makeCard(factory));
      const cards = [...state.factories.values()];
      await Promise.all(cards.map(loadSummary));
      await redrawAll();
      cards.forEach((card, i) => (i < MAX_STREAMS ? subscribe(card) : startPolling(card)));
    } catch (error) {
      showProblem(error);
      state.factories.clear();
      $("#factories").replaceChildren();
      setTimeout(loadFactories, POLL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
