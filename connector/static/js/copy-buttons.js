document.querySelectorAll("button.copy").forEach(function (button) {
  button.addEventListener("click", function () {
    const done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(button.dataset.copy).then(done); }
    else { const t = document.createElement("textarea"); t.value = button.dataset.copy; document.body.appendChild(t); t.select(); document.execCommand("copy"); t.remove(); done(); }
  });
});
