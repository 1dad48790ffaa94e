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
