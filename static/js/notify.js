// A long job's page polls its status fragment; when a poll brings the job's end (the fragment
// carries data-job-ended), say so even if the tab is in the background: the tab's title, and a
// desktop notification where the user allowed them (the Jobs page asks).
(function () {
  var baseTitle = document.title;
  document.body.addEventListener("htmx:afterSwap", function (evt) {
    var ended = evt.detail.target && evt.detail.target.querySelector
      ? evt.detail.target.querySelector("[data-job-ended]") || (evt.detail.target.matches && evt.detail.target.matches("[data-job-ended]") ? evt.detail.target : null)
      : null;
    if (!ended) { return; }
    var text = ended.getAttribute("data-job-ended");
    document.title = text + " · " + baseTitle;
    if (window.Notification && Notification.permission === "granted" && document.hidden) {
      new Notification("EmbedHub", { body: text });
    }
  });
  document.addEventListener("click", function (evt) {
    var button = evt.target.closest && evt.target.closest("#notify-me");
    if (!button || !window.Notification) { return; }
    Notification.requestPermission().then(function (answer) {
      button.textContent = answer === "granted" ? "Notifications on" : "Notifications blocked by the browser";
      button.disabled = true;
    });
  });
})();
