/* Live updates of the rollout page.
 *
 * The page subscribes to the rollout's event stream (Server-Sent Events,
 * CONTRACT section 9). Each event is added to the timeline at once; then the
 * server-rendered live region (status, actions, bars, devices, timeline) is
 * fetched again, at most once per REFRESH_MS, and swapped in. The server stays
 * the one place that renders the page: no template is duplicated in JS.
 * EventSource reconnects by itself and sends Last-Event-ID, so nothing is lost.
 */
(function () {
  "use strict";
  var REFRESH_MS = 400;
  var root = document.getElementById("c-rollout");
  if (!root || !window.EventSource) return;

  var live = document.getElementById("c-live");
  var timer = null, inFlight = false, again = false;

  function partialUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    return url.toString();
  }

  function refresh() {
    timer = null;
    if (inFlight) { again = true; return; }
    inFlight = true;
    fetch(partialUrl(), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { live.innerHTML = html; markLive(source.readyState === 1); } })
      .catch(function () {})
      .then(function () {
        inFlight = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (!timer) timer = window.setTimeout(refresh, REFRESH_MS);
  }

  function prepend(message) {
    var list = document.getElementById("c-timeline");
    if (!list || list.querySelector('[data-event-id="' + message.lastEventId + '"]')) return;
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    var item = document.createElement("li");
    item.className = "c-new c-tone-" + tone(message.type);
    item.dataset.eventId = message.lastEventId;
    var time = document.createElement("time");
    time.textContent = (event.timestamp || "").slice(11, 19);
    var kind = document.createElement("span");
    kind.className = "c-event-type";
    kind.textContent = message.type.replace(/^image\./, "").replace(/_/g, " ");
    var text = document.createElement("span");
    text.className = "c-event-msg";
    text.textContent = event.message || "";
    var head = document.createElement("span");
    head.className = "c-event-head";
    head.append(time, kind);
    item.append(head, text);
    list.prepend(item);
  }

  function tone(type) {
    if (/failed$/.test(type)) return "bad";
    if (/(rolled_back|paused|cancelled|rejected)$/.test(type)) return "warn";
    if (/(superseded|deferred|skipped)$/.test(type)) return "muted";
    if (/(passed|completed|approved)$/.test(type)) return "good";
    return "info";
  }

  function markLive(on) {
    var badge = document.getElementById("c-live-state");
    if (!badge) return;
    badge.textContent = on ? "live" : "reconnecting";
    badge.classList.toggle("c-on", on);
  }

  var source = new EventSource(root.dataset.streamUrl, { withCredentials: true });
  function onEvent(message) { prepend(message); schedule(); }
  // Every message is a named event (`event: <type>`): onmessage sees none of them.
  root.dataset.eventTypes.split(",").forEach(function (type) { source.addEventListener(type, onEvent); });
  source.onmessage = onEvent;
  source.onopen = function () { markLive(true); };
  source.onerror = function () { markLive(false); };
  window.addEventListener("pagehide", function () { source.close(); });
})();
