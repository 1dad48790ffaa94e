// sixpn admin console: progressive enhancement only; every page works without it.
"use strict";
document.addEventListener("click", function (ev) {
  var button = ev.target.closest && ev.target.closest("button[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent).then(function () {
    button.textContent = "Copied";
  });
});

// Live updates of an org page: the server sends an event each time the DNS snapshot publishes
// a change; the page fetches itself again and swaps in its peers, groups and tokens.
(function () {
  var peers = document.getElementById("peers");
  if (!peers || !window.EventSource || !window.fetch) return;
  var base = peers.getAttribute("data-events");
  var source = new EventSource(base + "/events");
  var seen = null, pending = false;
  function refresh() {
    pending = false;
    fetch(location.pathname + location.search, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        ["peers", "groups", "tokens", "network"].forEach(function (id) {
          var fresh = doc.getElementById(id), old = document.getElementById(id);
          if (!fresh || !old) return;
          // Keep what the user is typing in a form of the section.
          if (old.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
          old.replaceWith(fresh);
        });
      });
  }
  source.addEventListener("generation", function (ev) {
    // The generation the page follows (the browser tests wait for it before they change things).
    document.documentElement.setAttribute("data-live-generation", ev.data);
    if (seen !== null && ev.data !== seen && !pending) {
      pending = true;
      setTimeout(refresh, 100);
    }
    seen = ev.data;
  });
})();
