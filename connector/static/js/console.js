document.querySelectorAll("[data-copy]").forEach(function (button) {
  button.addEventListener("click", function () {
    var input = button.parentNode.querySelector("input");
    input.select();
    var copied = navigator.clipboard ? navigator.clipboard.writeText(input.value) : Promise.reject();
    copied.then(function () { button.textContent = "Copied"; }, function () {
      document.execCommand("copy");  // EHR frames often lack clipboard permission
      button.textContent = "Copied";
    });
  });
});
