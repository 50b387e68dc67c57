// A form came back with a problem: move the focus to the summary, which names the field.
(function () {
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();
})();
