// "/" puts the cursor in the page's search box (the first input marked data-search, else the
// first search field), as on GitHub and most dashboards; never while typing in a field.
(function () {
  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "/" || evt.ctrlKey || evt.metaKey || evt.altKey) { return; }
    var active = document.activeElement;
    if (active && (active.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName))) { return; }
    var box = document.querySelector("main [data-search]") || document.querySelector("main input[type=search]");
    if (!box) { return; }
    evt.preventDefault();
    box.focus();
    if (box.select) { box.select(); }
  });
})();
