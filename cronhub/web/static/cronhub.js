// cronhub dashboard: live updates (Server-Sent Events), countdowns and actions.
//
// The pages are rendered on the server; this script only keeps them current. It never puts
// data into innerHTML: every element is built with createElement and textContent, so a job
// name or an error message can never become markup. No inline code anywhere (the app sends
// a Content-Security-Policy of script-src 'self'; style-src 'self').
(function () {
  "use strict";

  var body = document.body;
  var base = (body.dataset.base || "").replace(/\/$/, "");
  var pageName = body.dataset.page || "";
  var ACTIVE = ["queued", "running"];
  var FAILURES = ["failed", "timed_out", "crashed"];
  var MARKS = 10;

  // -- formatting (mirrors cronhub/web/formatting.py) -----------------------------------------
  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  function span(seconds) {
    var s = Math.floor(Math.abs(seconds));
    var days = Math.floor(s / 86400);
    var hours = Math.floor((s % 86400) / 3600);
    var minutes = Math.floor((s % 3600) / 60);
    var secs = s % 60;
    if (days) return hours ? days + "d " + hours + "h" : days + "d";
    if (hours) return hours + "h " + pad(minutes) + "m";
    if (minutes) return minutes + "m " + pad(secs) + "s";
    return secs + "s";
  }

  function reltime(date, now) {
    var delta = (date.getTime() - now) / 1000;
    if (Math.abs(delta) < 1) return "now";
    if (delta > 0) return "in " + span(delta);
    return span(delta).split(" ")[0] + " ago";
  }

  // One formatter for the page: building one per call costs more than the formatting.
  var localFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });

  function abstime(date) {
    var local = localFormat.format(date);
    var utc = date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    return local + " (" + utc + ")";
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "-";
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return span(ms / 1000);
  }

  function number(value) {
    if (value === null || value === undefined) return "-";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: 1 });
  }

  function percent(value) {
    if (value === null || value === undefined) return "-";
    return (value * 100).toFixed(1).replace(/\.0$/, "") + "%";
  }

  function words(status) {
    return String(status || "never").replace(/_/g, " ");
  }

  function errorText(run) {
    if (run.error) {
      var type = run.error.type || "";
      var message = run.error.message || "";
      return type && message ? type + ": " + message : type + message;
    }
    return run.missed_count > 1 ? run.missed_count + " slots" : "";
  }

  // -- DOM helpers ---------------------------------------------------------------------------
  // el("a", {class: "x", href: "/y", text: "z"}, child...): attributes are set one by one
  // with setAttribute, text with textContent.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function jobUrl(name) {
    return base + "/jobs/" + encodeURIComponent(name);
  }

  function runUrl(id) {
    return base + "/runs/" + id;
  }

  function statusClass(status) {
    return "s-" + (status || "never");
  }

  function setStatusClass(node, status) {
    Array.prototype.slice.call(node.classList).forEach(function (name) {
      if (name.indexOf("s-") === 0) node.classList.remove(name);
    });
    node.classList.add(statusClass(status));
  }

  function badge(status) {
    return el("span", { class: "badge " + statusClass(status), "data-role": "state", text: words(status) });
  }

  function timeEl(iso, countdown) {
    if (!iso) return el("span", { class: "muted", text: "-" });
    var date = new Date(iso);
    return el("time", {
      datetime: iso, title: abstime(date), "data-rel": true, "data-countdown": !!countdown,
      "data-titled": "1", text: reltime(date, Date.now()),
    });
  }

  function replaceChildren(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    for (var i = 1; i < arguments.length; i++) {
      if (arguments[i]) node.appendChild(arguments[i]);
    }
  }

  function rowOf(selector, attr, value) {
    var rows = document.querySelectorAll(selector);
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute(attr) === String(value)) return rows[i];
    }
    return null;
  }

  // -- API -----------------------------------------------------------------------------------
  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return "";
  }

  function api(method, path) {
    var headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("cronhub_csrf");
    return fetch(base + path, { method: method, headers: headers, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) {
          // The login page takes the path inside the app, without the prefix it is mounted at.
          var path = location.pathname.indexOf(base) === 0 ? location.pathname.slice(base.length) : "/";
          var next = (path || "/") + location.search;
          location.assign(base + "/login?next=" + encodeURIComponent(next));
          throw new Error("signed out: sign in again");
        }
        return response.text().then(function (text) {
          var data = null;
          try {
            data = text ? JSON.parse(text) : null;
          } catch (e) {
            data = null;
          }
          if (!response.ok) {
            var message = (data && (data.error || data.detail)) || response.status + " " + response.statusText;
            throw new Error(typeof message === "string" ? message : JSON.stringify(message));
          }
          return data;
        });
      });
  }

  // -- toasts --------------------------------------------------------------------------------
  var toasts = document.getElementById("toasts");

  function toast(message, kind, link) {
    if (!toasts) return;
    var node = el("div", { class: "toast " + (kind === "error" ? "s-failed" : kind === "ok" ? "s-succeeded" : "s-running") },
      message);
    if (link) node.appendChild(el("a", { href: link.href, text: link.text }));
    toasts.appendChild(node);
    setTimeout(function () {
      node.classList.add("is-leaving");
      setTimeout(function () { node.remove(); }, 400);
    }, kind === "error" ? 8000 : 4000);
  }

  // -- relative times and countdowns ---------------------------------------------------------
  var dueListeners = [];

  function tick() {
    var now = Date.now();
    var times = document.querySelectorAll("time[data-rel]");
    for (var i = 0; i < times.length; i++) {
      var node = times[i];
      var date = new Date(node.getAttribute("datetime"));
      if (isNaN(date.getTime())) continue;
      var text = reltime(date, now);
      if (node.textContent !== text) node.textContent = text;
      if (node.hasAttribute("data-countdown") && date.getTime() <= now && !node.dataset.due) {
        node.dataset.due = "1";
        dueListeners.forEach(function (fn) { fn(node); });
      }
    }
  }

  // The server's titles give times in UTC; the local time is added when one is pointed at
  // (not for every time on the page at load).
  function localTitle(event) {
    var node = event.target;
    if (!node || node.tagName !== "TIME" || node.dataset.titled) return;
    var date = new Date(node.getAttribute("datetime"));
    if (isNaN(date.getTime())) return;
    node.title = abstime(date);
    node.dataset.titled = "1";
  }
  document.addEventListener("mouseover", localTitle);
  document.addEventListener("focusin", localTitle);

  // -- debounced refreshes ---------------------------------------------------------------------
  var pending = {};

  function later(key, delay, fn) {
    if (pending[key]) return;
    pending[key] = setTimeout(function () {
      delete pending[key];
      if (document.hidden) {
        later(key, 2000, fn);
        return;
      }
      fn();
    }, delay);
  }

  function refreshStats() {
    var stats = document.getElementById("stats");
    if (!stats) return;
    // Later than the server's stats cache lives (2 s), so the answer includes this event.
    later("stats", 2500, function () {
      api("GET", "/api/stats").then(function (data) {
        var cards = stats.querySelectorAll("[data-stat]");
        for (var i = 0; i < cards.length; i++) {
          var key = cards[i].getAttribute("data-stat");
          if (!(key in data)) continue;
          var value = data[key];
          var text = cards[i].getAttribute("data-kind") === "percent" ? percent(value) : number(value);
          cards[i].querySelector(".stat-value").textContent = text;
          if (value) cards[i].setAttribute("data-nonzero", "");
          else cards[i].removeAttribute("data-nonzero");
        }
        stats.setAttribute("data-loaded", "yes");
      }).catch(function () { /* the next event or timer tries again */ });
    });
  }

  // At most a few job reads in flight: a page of 100 busy jobs must not fire 100 at once.
  var inFlight = 0;
  var waiting = [];

  function limited(task) {
    return new Promise(function (resolve, reject) {
      waiting.push({ task: task, resolve: resolve, reject: reject });
      pump();
    });
  }

  function pump() {
    while (inFlight < 4 && waiting.length) {
      var next = waiting.shift();
      inFlight += 1;
      next.task().then(next.resolve, next.reject).then(function () {
        inFlight -= 1;
        pump();
      });
    }
  }

  function refreshJob(name) {
    later("job:" + name, 1000, function () {
      limited(function () {
        return api("GET", "/api/jobs/" + encodeURIComponent(name));
      }).then(function (data) {
        var job = data && data.job ? data.job : data;
        if (job && job.name) updateJob(job);
      }).catch(function () { /* deleted or unreachable: leave the row */ });
    });
  }

  // -- jobs: rows on the jobs page and the header of a job page --------------------------------
  function jobContainers(name) {
    var found = [];
    var nodes = document.querySelectorAll("[data-job]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      if ((node.tagName === "TR" || node.id === "job-head") && node.getAttribute("data-job") === name) found.push(node);
    }
    return found;
  }

  // A row's status: an active run wins, else the newest run's status, else the job's.
  function jobState(job, container) {
    if (job.paused) return "paused";
    var marks = container ? container.querySelectorAll("a.mark") : [];
    var newest = null;
    for (var i = 0; i < marks.length; i++) {
      if (marks[i].classList.contains("s-running")) return "running";
      if (marks[i].classList.contains("s-queued")) return "queued";
      if (!newest || Number(marks[i].getAttribute("data-run")) > Number(newest.getAttribute("data-run"))) {
        newest = marks[i];
      }
    }
    if (newest && !job.last_status) {
      var found = /\bs-(\w+)/.exec(newest.className);
      if (found) return found[1];
    }
    return job.last_status || "never";
  }

  function pauseButton(name, paused, small) {
    return el("button", {
      type: "button", class: "btn" + (small ? " btn-sm" : ""), "data-action": paused ? "resume" : "pause",
      "data-job": name, text: paused ? "Resume" : "Pause",
    });
  }

  function updateJob(job) {
    jobContainers(job.name).forEach(function (container) {
      var isRow = container.tagName === "TR";
      container.classList.toggle("is-paused", !!job.paused);
      var next = (isRow ? container : document).querySelector("[data-role=next]");
      if (next) {
        var shown = next.querySelector("time");
        if (job.paused) replaceChildren(next, el("span", { class: "muted", text: "paused" }));
        else if (!job.next_run) replaceChildren(next, el("span", { class: "muted", text: "none" }));
        else if (!shown || shown.getAttribute("datetime") !== job.next_run) {
          replaceChildren(next, timeEl(job.next_run, true));
        }
      }
      var last = isRow ? null : document.querySelector("[data-role=last]");
      if (last) replaceChildren(last, timeEl(job.last_run, false));
      if (isRow && Array.isArray(job.runs)) setMarks(container, job.runs.slice(0, MARKS).reverse());
      var state = container.querySelector("[data-role=state]");
      if (state) {
        var status = isRow ? jobState(job, container) : job.paused ? "paused" : currentJobState(job);
        state.textContent = words(status);
        setStatusClass(state, status);
      }
      var old = container.querySelector("[data-action=pause], [data-action=resume]");
      if (old) old.replaceWith(pauseButton(job.name, job.paused, isRow));
    });
  }

  // The job page knows its active runs from its history table.
  function currentJobState(job) {
    var rows = document.querySelectorAll("#runs tbody tr");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-status") === "running") return "running";
    }
    for (var j = 0; j < rows.length; j++) {
      if (rows[j].getAttribute("data-status") === "queued") return "queued";
    }
    return job.last_status || "never";
  }

  function markEl(run) {
    var when = run.started_at || run.finished_at || run.created_at;
    return el("a", {
      class: "mark " + statusClass(run.status), href: runUrl(run.id), "data-run": run.id,
      title: "#" + run.id + " " + words(run.status) + (when ? " · " + abstime(new Date(when)) : ""),
    });
  }

  // Redraw a row's marks from its newest runs (oldest first).
  function setMarks(row, runs) {
    var marks = row.querySelector("[data-role=marks]");
    if (!marks) return;
    var nodes = [];
    for (var i = runs.length; i < MARKS; i++) nodes.push(el("span", { class: "mark mark-empty" }));
    runs.forEach(function (run) { nodes.push(markEl(run)); });
    replaceChildren.apply(null, [marks].concat(nodes));
    if (runs.length) marks.removeAttribute("title");
  }

  function updateMarks(row, run) {
    var marks = row.querySelector("[data-role=marks]");
    if (!marks) return;
    marks.removeAttribute("title");
    var existing = marks.querySelector('a.mark[data-run="' + Number(run.id) + '"]');
    if (existing) {
      existing.replaceWith(markEl(run));
      return;
    }
    var mark = markEl(run);
    mark.classList.add("is-new");
    setTimeout(function () { mark.classList.remove("is-new"); }, 2000);
    // In id order (events of different runs may arrive out of order), newest on the right.
    var after = null;
    var shown = marks.querySelectorAll("a.mark");
    for (var i = 0; i < shown.length; i++) {
      if (Number(shown[i].getAttribute("data-run")) > run.id) {
        after = shown[i];
        break;
      }
    }
    marks.insertBefore(mark, after);
    // Ten slots: a new run takes an empty one, or pushes the oldest out.
    var empty = marks.querySelector(".mark-empty");
    if (empty) empty.remove();
    var all = marks.querySelectorAll(".mark");
    for (var j = 0; j < all.length - MARKS; j++) all[j].remove();
  }

  function onJobsPageRun(run) {
    var row = rowOf("#jobs tbody tr", "data-job", run.job);
    if (!row) return;
    updateMarks(row, run);
    var state = row.querySelector("[data-role=state]");
    var paused = row.classList.contains("is-paused");
    var status = paused ? "paused" : jobState({ paused: false }, row);
    if (state) {
      state.textContent = words(status);
      setStatusClass(state, status);
    }
    refreshJob(run.job);
  }

  // -- runs: history rows (job page, dead letters) -------------------------------------------
  function runRow(run, showJob) {
    var trigger = el("td", { "data-label": "Trigger" }, words(run.trigger));
    if (run.attempt > 1) trigger.appendChild(el("span", { class: "muted", text: " · attempt " + run.attempt }));
    var actions = el("td", { class: "c-actions" });
    if (ACTIVE.indexOf(run.status) >= 0) {
      actions.appendChild(el("button", {
        type: "button", class: "btn btn-sm btn-danger", "data-action": "cancel", "data-run": run.id, text: "Cancel",
      }));
    }
    return el("tr", { "data-run": run.id, "data-status": run.status },
      el("td", { "data-label": "Run" }, el("a", { class: "mono", href: runUrl(run.id), text: "#" + run.id })),
      showJob ? el("td", { "data-label": "Job" }, el("a", { href: jobUrl(run.job), text: run.job })) : null,
      el("td", { "data-label": "Status" }, badge(run.status)),
      trigger,
      el("td", { "data-label": "Scheduled for" }, timeEl(run.scheduled_for, false)),
      el("td", { "data-label": "Started" }, timeEl(run.started_at, false)),
      el("td", { "data-label": "Duration", class: "num", text: duration(run.duration_ms) }),
      el("td", { "data-label": "Error", class: "c-error", text: errorText(run), title: errorText(run) || null }),
      actions
    );
  }

  function upsertRunRow(run, insertIfNew) {
    var table = document.getElementById("runs");
    if (!table) return;
    var tbody = table.querySelector("tbody");
    var showJob = table.hasAttribute("data-show-job");
    var existing = rowOf("#runs tbody tr", "data-run", run.id);
    if (existing) {
      existing.replaceWith(runRow(run, showJob));
      return;
    }
    if (!insertIfNew) return;
    var row = runRow(run, showJob);
    row.classList.add("is-flash");
    // Newest (highest id) first.
    var rows = tbody.querySelectorAll("tr");
    var before = null;
    for (var i = 0; i < rows.length; i++) {
      if (Number(rows[i].getAttribute("data-run")) < run.id) {
        before = rows[i];
        break;
      }
    }
    tbody.insertBefore(row, before);
    table.hidden = false;
    var empty = document.getElementById("runs-empty");
    if (empty) empty.hidden = true;
  }

  function onJobPageRun(run) {
    if (run.job !== body.dataset.job) return;
    var filter = body.dataset.filter;
    var matches = !filter || filter === run.status;
    var existing = rowOf("#runs tbody tr", "data-run", run.id);
    if (existing && !matches) {
      existing.remove();
    } else {
      upsertRunRow(run, matches && body.dataset.firstPage === "yes");
    }
    var head = document.getElementById("job-head");
    if (head) {
      var state = head.querySelector("[data-role=state]");
      if (state && state.textContent !== "paused") {
        var status = currentJobState({ last_status: run.status });
        state.textContent = words(status);
        setStatusClass(state, status);
      }
    }
    refreshJob(run.job);
  }

  // -- run page --------------------------------------------------------------------------------
  function showRun(run) {
    var head = document.getElementById("run-head");
    var state = head && head.querySelector("[data-role=state]");
    if (state) {
      state.textContent = words(run.status);
      setStatusClass(state, run.status);
    }
    var cancel = head && head.querySelector("[data-action=cancel]");
    if (cancel) cancel.hidden = ACTIVE.indexOf(run.status) < 0;
    ["scheduled_for", "created_at", "started_at", "finished_at"].forEach(function (key) {
      var field = document.querySelector("[data-field=" + key + "]");
      if (field) replaceChildren(field, timeEl(run[key], false));
    });
    var simple = { trigger: words(run.trigger), attempt: String(run.attempt), duration_ms: duration(run.duration_ms), instance: run.instance || "-" };
    Object.keys(simple).forEach(function (key) {
      var field = document.querySelector("[data-field=" + key + "]");
      if (field) field.textContent = simple[key];
    });
    var errorBox = document.getElementById("run-error");
    if (errorBox) {
      errorBox.hidden = !run.error;
      setStatusClass(errorBox, run.status);
      errorBox.querySelector("[data-field=error_heading]").textContent =
        FAILURES.indexOf(run.status) >= 0 ? "Error" : "Reason";
      errorBox.querySelector("[data-field=error_type]").textContent = run.error ? run.error.type || "" : "";
      errorBox.querySelector("[data-field=error_message]").textContent = run.error ? run.error.message || "" : "";
    }
    var tbBox = document.getElementById("run-traceback");
    if (tbBox && run.traceback !== undefined) {
      tbBox.hidden = !run.traceback;
      tbBox.querySelector("[data-field=traceback]").textContent = run.traceback || "";
    }
    var log = document.querySelector("[data-field=log]");
    if (log && run.log !== undefined) {
      log.textContent = run.log || "";
      log.hidden = !run.log;
      var none = document.querySelector("[data-role=no-log]");
      if (none) {
        none.hidden = !!run.log;
        none.textContent = ACTIVE.indexOf(run.status) >= 0 ? "Nothing logged yet." : "Nothing logged.";
      }
    }
  }

  function onRunPageRun(run) {
    if (String(run.id) !== body.dataset.run) return;
    showRun(run);
    later("run", 300, function () {
      api("GET", "/api/runs/" + run.id).then(function (data) {
        showRun(data && data.run ? data.run : data);
      }).catch(function () { /* keep what the event said */ });
    });
  }

  // -- dead letters ------------------------------------------------------------------------------
  function reloadDeadLetters() {
    api("GET", "/api/dead-letters").then(function (data) {
      var known = {};
      Array.prototype.forEach.call(document.querySelectorAll("#runs tbody tr"), function (row) {
        known[row.getAttribute("data-run")] = true;
      });
      setRunRows(data.runs);
      Array.prototype.forEach.call(document.querySelectorAll("#runs tbody tr"), function (row) {
        if (!known[row.getAttribute("data-run")]) row.classList.add("is-flash");
      });
      var count = document.getElementById("dead-count");
      if (count) count.textContent = String(data.runs.length);
      var clear = document.querySelector("[data-action=clear-dead-letters]");
      if (clear) clear.disabled = !data.runs.length;
    }).catch(function () { /* the next event tries again */ });
  }

  // A run that ended badly may be a dead letter (the event may predate the flag): re-read them.
  function onDeadLetterRun(run) {
    if (run.dead_letter || FAILURES.indexOf(run.status) >= 0) later("dead-letters", 500, reloadDeadLetters);
  }

  // -- after missed events (the server restarted, or this tab slept): read the state again -----
  function resync() {
    refreshStats();
    if (pageName === "jobs") {
      var rows = document.querySelectorAll("#jobs tbody tr[data-job]");
      for (var i = 0; i < rows.length; i++) refreshJob(rows[i].getAttribute("data-job"));
    } else if (pageName === "job") {
      refreshJob(body.dataset.job);
      if (body.dataset.firstPage === "yes") {
        var query = "?limit=50&job=" + encodeURIComponent(body.dataset.job) +
          (body.dataset.filter ? "&status=" + encodeURIComponent(body.dataset.filter) : "");
        api("GET", "/api/runs" + query).then(function (data) { setRunRows(data.runs); }).catch(function () {});
      }
    } else if (pageName === "run") {
      api("GET", "/api/runs/" + body.dataset.run).then(showRun).catch(function () {});
    } else if (pageName === "dead-letters") {
      reloadDeadLetters();
    }
  }

  function setRunRows(runs) {
    var table = document.getElementById("runs");
    if (!table) return;
    var showJob = table.hasAttribute("data-show-job");
    replaceChildren.apply(null, [table.querySelector("tbody")].concat(
      runs.map(function (run) { return runRow(run, showJob); })));
    table.hidden = !runs.length;
    var empty = document.getElementById("runs-empty");
    if (empty) empty.hidden = !!runs.length;
  }

  // -- events ----------------------------------------------------------------------------------
  var live = document.getElementById("live");

  function setLive(state, text) {
    if (!live) return;
    live.hidden = false;
    live.setAttribute("data-state", state);
    live.querySelector(".live-text").textContent = text;
    live.title = {
      live: "Live: updates arrive as they happen",
      reconnecting: "Connection lost: reconnecting",
      offline: "Not receiving updates: reload the page",
      connecting: "Connecting to live updates",
    }[state] || "";
  }

  function onRun(run) {
    if (!run || run.id === undefined) return;
    if (pageName === "jobs") onJobsPageRun(run);
    else if (pageName === "job") onJobPageRun(run);
    else if (pageName === "run") onRunPageRun(run);
    else if (pageName === "dead-letters") onDeadLetterRun(run);
    refreshStats();
  }

  function onJob(job) {
    if (!job || !job.name) return;
    updateJob(job);
  }

  var source = null;
  var failures = 0;

  function connect() {
    if (!window.EventSource || !pageName || pageName === "plugins") return;
    setLive("connecting", "connecting");
    source = new EventSource(base + "/api/events", { withCredentials: true });
    source.onopen = function () {
      failures = 0;
      setLive("live", "live");
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused (signed out, or not there): try again with backoff.
        failures += 1;
        setLive(failures > 5 ? "offline" : "reconnecting", failures > 5 ? "offline" : "reconnecting");
        setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, failures)));
      } else {
        setLive("reconnecting", "reconnecting");
      }
    };
    ["run.queued", "run.started", "run.finished", "run.cancelled"].forEach(function (type) {
      source.addEventListener(type, function (event) {
        var data = parse(event.data);
        onRun(data && data.run ? data.run : data);
      });
    });
    ["job.paused", "job.resumed"].forEach(function (type) {
      source.addEventListener(type, function (event) {
        var data = parse(event.data);
        onJob(data && data.job ? data.job : data);
      });
    });
    source.addEventListener("reset", resync);
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  // -- actions ---------------------------------------------------------------------------------
  function busy(button, on) {
    button.classList.toggle("is-busy", on);
    if (on) button.setAttribute("aria-busy", "true");
    else button.removeAttribute("aria-busy");
  }

  function clearDeadLetterTable() {
    var table = document.getElementById("runs");
    if (table) {
      replaceChildren(table.querySelector("tbody"));
      table.hidden = true;
    }
    var empty = document.getElementById("runs-empty");
    if (empty) empty.hidden = false;
    var count = document.getElementById("dead-count");
    if (count) count.textContent = "0";
    var clear = document.querySelector("[data-action=clear-dead-letters]");
    if (clear) clear.disabled = true;
  }

  var actions = {
    run: function (button) {
      var name = button.getAttribute("data-job");
      return api("POST", "/api/jobs/" + encodeURIComponent(name) + "/run").then(function (data) {
        var id = data && data.run_id;
        toast("Started " + name + (id ? " as run #" + id : ""), "ok", id ? { href: runUrl(id), text: "View" } : null);
      });
    },
    pause: function (button) {
      var name = button.getAttribute("data-job");
      return api("POST", "/api/jobs/" + encodeURIComponent(name) + "/pause").then(function (job) {
        if (job && job.name) updateJob(job);
        toast("Paused " + name, "ok");
      });
    },
    resume: function (button) {
      var name = button.getAttribute("data-job");
      return api("POST", "/api/jobs/" + encodeURIComponent(name) + "/resume").then(function (job) {
        if (job && job.name) updateJob(job);
        toast("Resumed " + name, "ok");
      });
    },
    cancel: function (button) {
      var id = button.getAttribute("data-run");
      return api("POST", "/api/runs/" + encodeURIComponent(id) + "/cancel").then(function () {
        toast("Cancelling run #" + id, "ok");
      });
    },
    "clear-dead-letters": function (button) {
      // Two clicks: the first arms the button for a few seconds.
      if (!button.classList.contains("is-confirming")) {
        button.classList.add("is-confirming");
        button.dataset.label = button.textContent;
        button.textContent = "Click again to clear";
        setTimeout(function () {
          button.classList.remove("is-confirming");
          if (button.dataset.label) button.textContent = button.dataset.label;
        }, 4000);
        return null;
      }
      button.classList.remove("is-confirming");
      button.textContent = button.dataset.label || "Clear all";
      return api("DELETE", "/api/dead-letters").then(function (data) {
        clearDeadLetterTable();
        var cleared = data && (data.cleared !== undefined ? data.cleared : data.count);
        toast("Cleared " + (cleared !== undefined ? cleared + " " : "") + "dead letters", "ok");
        refreshStats();
      });
    },
  };

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-action]") : null;
    if (!button || button.disabled || button.classList.contains("is-busy")) return;
    var action = actions[button.getAttribute("data-action")];
    if (!action) return;
    event.preventDefault();
    var result = action(button);
    if (!result) return;
    busy(button, true);
    result.catch(function (error) {
      toast(error.message || String(error), "error");
    }).then(function () {
      busy(button, false);
    });
  });

  // The tag filter applies as soon as it changes.
  var autosubmit = document.querySelectorAll("[data-autosubmit]");
  for (var i = 0; i < autosubmit.length; i++) {
    autosubmit[i].addEventListener("change", function (event) {
      if (event.target.form) event.target.form.submit();
    });
  }

  // A countdown that reaches zero: ask for the job's next run shortly after.
  dueListeners.push(function (node) {
    var container = node.closest("[data-job]") || (pageName === "job" ? body : null);
    var name = container && container.getAttribute("data-job");
    if (name) setTimeout(function () { refreshJob(name); }, 1500);
  });

  // -- start -------------------------------------------------------------------------------------
  tick();
  setInterval(tick, 1000);
  var stats = document.getElementById("stats");
  if (stats) {
    if (stats.getAttribute("data-loaded") !== "yes") refreshStats();
    setInterval(refreshStats, 30000);
  }
  connect();
})();
