/* Runtime schedules on the job page: a live preview of the next run times while the form is
   filled in (GET /api/preview), adding (POST /api/jobs/{name}/schedules), and pause, resume
   and delete of the listed schedules. Text from the server is set with textContent only;
   every POST and DELETE carries the X-CSRF-Token header (the cronhub_csrf cookie). */
(function () {
  "use strict";

  var panel = document.getElementById("rs");
  if (!panel || !window.fetch) return;
  var base = document.body.getAttribute("data-base") || "";
  var job = panel.getAttribute("data-rs-job");
  var form = document.getElementById("rs-form");
  var kind = document.getElementById("rs-kind");
  var expr = document.getElementById("rs-expr");
  var tz = document.getElementById("rs-tz");
  var params = document.getElementById("rs-params");
  var save = document.getElementById("rs-save");
  var errorBox = document.getElementById("rs-error");
  var statusLine = document.getElementById("rs-status");
  var previewText = document.getElementById("rs-preview-text");
  var times = document.getElementById("rs-times");
  var table = document.getElementById("rs-table");
  var empty = document.getElementById("rs-empty");
  var count = document.getElementById("rs-count");
  var WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

  // -- helpers ---------------------------------------------------------------------------------
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (attrs[key] === true) node.setAttribute(key, "");
      else if (attrs[key] !== false && attrs[key] !== null && attrs[key] !== undefined) {
        node.setAttribute(key, attrs[key]);
      }
    });
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return "";
  }

  // Resolves to {ok, status, data}; a 401 sends the browser to the login page.
  function request(method, path, body) {
    var headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("cronhub_csrf");
    var options = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(base + path, options).then(function (response) {
      if (response.status === 401) {
        location.assign(base + "/login?next=" + encodeURIComponent(location.pathname + location.search));
        throw new Error("signed out: sign in again");
      }
      return response.text().then(function (text) {
        var data = null;
        try {
          data = text ? JSON.parse(text) : null;
        } catch (e) {
          data = null;
        }
        return { ok: response.ok, status: response.status, data: data };
      });
    });
  }

  function problem(result) {
    var data = result.data || {};
    var text = data.detail || data.error || result.status + " error";
    return typeof text === "string" ? text : JSON.stringify(text);
  }

  function jobPath() {
    return "/api/jobs/" + encodeURIComponent(job) + "/schedules";
  }

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  function say(message) {
    statusLine.textContent = message || "";
  }

  // "2026-01-05T09:00:00+01:00" -> "Mon 2026-01-05 09:00 +01:00" (the wall time in the zone).
  function wallTime(iso) {
    var match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}:\d{2})(:\d{2})?(?:\.\d+)?(.*)$/.exec(iso);
    if (!match) return iso;
    var day = new Date(Date.UTC(+match[1], +match[2] - 1, +match[3])).getUTCDay();
    var seconds = match[5] && match[5] !== ":00" ? match[5] : "";
    var offset = match[6] === "Z" || match[6] === "+00:00" ? "UTC" : match[6];
    return WEEKDAYS[day] + " " + match[1] + "-" + match[2] + "-" + match[3] + " " + match[4] + seconds + " " + offset;
  }

  // A <time> the page's script keeps relative ("in 5 min"); the absolute time is its title.
  function relTime(iso) {
    if (!iso) return el("span", { class: "muted" }, "-");
    return el("time", { datetime: iso, "data-rel": true }, wallTime(iso));
  }

  // -- preview ---------------------------------------------------------------------------------
  var previewSeq = 0;
  var previewTimer = null;
  var previewValid = false;

  function resetPreview(message) {
    previewValid = false;
    times.hidden = true;
    while (times.firstChild) times.removeChild(times.firstChild);
    previewText.classList.remove("is-error");
    previewText.textContent = message;
  }

  function preview() {
    var text = expr.value.trim();
    if (!text) {
      resetPreview("Type an expression to see when it runs.");
      return;
    }
    var seq = ++previewSeq;
    var query = "?expr=" + encodeURIComponent(text) + "&kind=" + encodeURIComponent(kind.value) +
      "&tz=" + encodeURIComponent(tz.value.trim() || "UTC") + "&count=5";
    previewText.textContent = "…";
    request("GET", "/api/preview" + query).then(function (result) {
      if (seq !== previewSeq) return; // an older answer arriving late
      var data = result.data || {};
      if (!result.ok || !data.valid) {
        resetPreview(result.ok ? data.error : problem(result));
        previewText.classList.add("is-error");
        return;
      }
      previewValid = true;
      while (times.firstChild) times.removeChild(times.firstChild);
      data.times.forEach(function (iso) {
        var item = el("li");
        item.appendChild(el("span", { class: "rs-when" }, wallTime(iso)));
        item.appendChild(document.createTextNode(" "));
        item.appendChild(el("time", { datetime: iso, "data-rel": true, class: "muted" }, ""));
        times.appendChild(item);
      });
      times.hidden = data.times.length === 0;
      previewText.classList.remove("is-error");
      previewText.textContent = data.times.length ? data.schedule_text : data.schedule_text + ": no run from now on";
    }).catch(function (error) {
      if (seq === previewSeq) resetPreview(error.message || String(error));
    });
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 250);
  }

  [expr, tz].forEach(function (input) { input.addEventListener("input", schedulePreview); });
  kind.addEventListener("change", function () {
    expr.placeholder = expr.getAttribute("data-placeholder-" + kind.value) || "";
    preview();
  });

  // -- the list --------------------------------------------------------------------------------
  function actionButton(action, label, danger) {
    return el("button", {
      type: "button", class: "btn btn-sm" + (danger ? " btn-danger" : ""), "data-rs-action": action,
    }, label);
  }

  function row(schedule) {
    var tr = el("tr", { "data-schedule": schedule.id, "data-paused": schedule.paused ? "yes" : "no" });
    var what = el("td", { "data-label": "Schedule" });
    what.appendChild(el("div", null, schedule.schedule_text));
    what.appendChild(el("code", { class: "code-inline" }, schedule.kind + " " + schedule.schedule));
    what.appendChild(document.createTextNode(" "));
    what.appendChild(el("span", { class: "muted mono rs-id" }, schedule.id));
    tr.appendChild(what);
    var args = el("td", { "data-label": "Parameters" });
    args.appendChild(el("code", { class: "code-inline rs-params" }, sortedJson(schedule.params)));
    tr.appendChild(args);
    var next = el("td", { "data-label": "Next run", "data-role": "rs-next" });
    if (schedule.paused) {
      next.appendChild(el("span", { class: "badge s-paused", "data-role": "state" }, "paused"));
    } else {
      next.appendChild(relTime(schedule.next_run));
    }
    tr.appendChild(next);
    var added = el("td", { "data-label": "Added" });
    added.appendChild(relTime(schedule.created_at));
    if (schedule.created_by) added.appendChild(el("span", { class: "muted" }, " by " + schedule.created_by));
    tr.appendChild(added);
    var actions = el("td", { class: "c-actions rs-actions" });
    actions.appendChild(actionButton(schedule.paused ? "resume" : "pause", schedule.paused ? "Resume" : "Pause"));
    actions.appendChild(document.createTextNode(" "));
    actions.appendChild(actionButton("delete", "Delete", true));
    tr.appendChild(actions);
    return tr;
  }

  // Keys sorted, as the server renders them (Python's json.dumps(sort_keys=True)).
  function sortedJson(value) {
    if (Array.isArray(value)) return "[" + value.map(sortedJson).join(", ") + "]";
    if (value && typeof value === "object") {
      return "{" + Object.keys(value).sort().map(function (key) {
        return JSON.stringify(key) + ": " + sortedJson(value[key]);
      }).join(", ") + "}";
    }
    return JSON.stringify(value);
  }

  function render(schedules) {
    var body = table.tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    schedules.forEach(function (schedule) { body.appendChild(row(schedule)); });
    table.hidden = schedules.length === 0;
    empty.hidden = schedules.length !== 0;
    count.textContent = String(schedules.length);
  }

  function refresh() {
    return request("GET", jobPath()).then(function (result) {
      if (result.ok && result.data) render(result.data.schedules);
    });
  }

  panel.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-rs-action]") : null;
    if (!button || button.disabled) return;
    var tr = button.closest("tr[data-schedule]");
    var id = tr && tr.getAttribute("data-schedule");
    if (!id) return;
    var action = button.getAttribute("data-rs-action");
    if (action === "delete" && !button.classList.contains("is-confirming")) {
      // A second click confirms (no modal dialog).
      button.classList.add("is-confirming");
      button.textContent = "Confirm delete";
      setTimeout(function () {
        button.classList.remove("is-confirming");
        button.textContent = "Delete";
      }, 4000);
      return;
    }
    button.disabled = true;
    var path = "/api/schedules/" + encodeURIComponent(id);
    var call = action === "delete" ? request("DELETE", path) : request("POST", path + "/" + action);
    call.then(function (result) {
      if (!result.ok) throw new Error(problem(result));
      say(action === "delete" ? "Deleted schedule " + id : "Schedule " + id + ": " + action + "d");
      return refresh();
    }).catch(function (error) {
      button.disabled = false;
      say("");
      showError(error.message || String(error));
    });
  });

  // -- adding ----------------------------------------------------------------------------------
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    showError("");
    say("");
    var text = expr.value.trim();
    if (!text) {
      showError("Expression: required (" + (expr.getAttribute("data-placeholder-" + kind.value) || "") + ")");
      expr.focus();
      return;
    }
    var values = {};
    var raw = params.value.trim();
    if (raw) {
      try {
        values = JSON.parse(raw);
      } catch (e) {
        showError("Parameters: not valid JSON (" + e.message + ")");
        params.focus();
        return;
      }
    }
    var body = { tz: tz.value.trim() || "UTC", params: values };
    body[kind.value] = text;
    save.disabled = true;
    request("POST", jobPath(), body).then(function (result) {
      if (!result.ok) throw new Error(problem(result));
      say("Added schedule " + result.data.id + (result.data.next_run ? ", next run " + wallTime(result.data.next_run) : ""));
      expr.value = "";
      params.value = "";
      resetPreview("Type an expression to see when it runs.");
      return refresh();
    }).catch(function (error) {
      showError(error.message || String(error));
    }).then(function () {
      save.disabled = false;
    });
  });

  // Schedules change from other places too (the CLI, another instance): look again when the
  // page comes back into view.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") refresh().catch(function () { /* next time */ });
  });
  if (expr.value.trim()) preview();
})();
