// spacing-scp web page: refresh [data-poll] fragments (plain fetch, no held-open
// connection) and copy buttons. No build step, no dependencies.
"use strict";
(function () {
  function poll(el) {
    var url = el.getAttribute("data-poll");
    var ms = parseInt(el.getAttribute("data-poll-ms") || "2000", 10);
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null && html !== el.getAttribute("data-last")) {
            var focused = document.activeElement;
            var keep = focused && el.contains(focused) ? focused.getAttribute("href") : null;
            el.innerHTML = html;
            el.setAttribute("data-last", html);
            if (keep) {
              var again = el.querySelector('a[href="' + keep + '"]');
              if (again) again.focus();
            }
          }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, ms);
  }
  document.querySelectorAll("[data-poll]").forEach(poll);
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy]");
    if (!b) return;
    var text = document.getElementById(b.getAttribute("data-copy")).textContent;
    if (navigator.clipboard) {
      navigator.clipboard.writeText(text).then(function () { b.textContent = "Copied"; });
    }
  });
})();
