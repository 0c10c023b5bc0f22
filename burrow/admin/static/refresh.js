// burrow admin: keep the live parts of a page fresh without reloading it.
// Every element with data-refresh="URL" is fetched again every data-interval
// seconds and its content swapped for the server-rendered fragment. A region with
// data-swap="outer" is served whole (the fragment is the region's own element):
// its content is swapped the same way, and a fragment without data-refresh ends
// the polling (a finished job's page). A region the person is using (focus
// inside, a confirm step open, text selected) is left alone until they are done;
// a hidden tab does not poll. No framework: ~70 lines of our own.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var live = document.querySelector(".live");

  function busy(region) {
    var active = document.activeElement;
    var selection = window.getSelection();
    return region.querySelector("details[open]") !== null ||
      (active !== null && active !== document.body && region.contains(active)) ||
      (selection !== null && !selection.isCollapsed && region.contains(selection.anchorNode));
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
        swap(region, html);
        mark(region, true);
      })
      .catch(function () { mark(region, false); });
  }

  function swap(region, html) {
    if (region.dataset.swap !== "outer") {
      region.innerHTML = html;
      return;
    }
    var holder = document.createElement("template");
    holder.innerHTML = html;
    var served = holder.content.firstElementChild;
    if (served === null) throw new Error("empty fragment");
    region.replaceChildren.apply(region, Array.prototype.slice.call(served.childNodes));
    if (served.hasAttribute("data-refresh")) {
      region.dataset.refresh = served.dataset.refresh;
    } else {
      region.removeAttribute("data-refresh");  // nothing more will change: stop asking
      if (live && document.querySelector("[data-refresh]") === null) live.hidden = true;
    }
  }

  function watch(region) {
    var seconds = Number(region.dataset.interval) || 5;
    if (live) live.hidden = false;
    var timer = setInterval(function () {
      if (!region.hasAttribute("data-refresh")) {
        clearInterval(timer);
        return;
      }
      refresh(region);
    }, seconds * 1000);
  }

  document.querySelectorAll("[data-refresh]").forEach(watch);

  // A task filter applies as soon as it is picked (its button is for pages without JS).
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.requestSubmit();
    }
  });
})();
