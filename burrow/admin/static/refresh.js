// burrow admin: keep the live parts of a page fresh without reloading it.
// Every element with data-refresh="URL" is fetched again every data-interval
// seconds and its content swapped for the server-rendered fragment. A region the
// person is using (focus inside, a confirm step open) is left alone until they
// are done; a hidden tab does not poll. No framework: ~50 lines of our own.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var live = document.querySelector(".live");

  function busy(region) {
    var active = document.activeElement;
    return region.querySelector("details[open]") !== null ||
      (active !== null && active !== document.body && region.contains(active));
  }

  function mark(region, ok) {
    region.classList.toggle("stale", !ok);
    if (live) {
      live.classList.toggle("stale", !ok);
      live.textContent = ok ? "live" : "not updating";
    }
  }

  function refresh(region) {
    if (document.hidden || busy(region)) return;
    fetch(region.dataset.refresh, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (busy(region)) return;
        region.innerHTML = html;
        mark(region, true);
      })
      .catch(function () { mark(region, false); });
  }

  document.querySelectorAll("[data-refresh]").forEach(function (region) {
    var seconds = Number(region.dataset.interval) || 5;
    if (live) live.hidden = false;
    setInterval(function () { refresh(region); }, seconds * 1000);
  });

  // A task filter applies as soon as it is picked (its button is for pages without JS).
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.requestSubmit();
    }
  });
})();
