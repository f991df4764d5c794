(function () {
  // Switch language on the page: every language's texts are in the form, so nothing typed is lost.
  const links = Array.from(document.querySelectorAll("#sms-endpoint-settings a[data-switch-language]"));
  links.forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      const code = link.dataset.switchLanguage;
      document.querySelectorAll("#sms-endpoint-settings .language-texts").forEach(function (group) {
        group.hidden = group.dataset.language !== code;
      });
      links.forEach(function (other) {
        other.className = other === link ? "badge ok" : "badge";
        if (other === link) other.setAttribute("aria-current", "true"); else other.removeAttribute("aria-current");
      });
      const input = document.getElementById("current-language");
      if (input) input.value = code;
    });
  });
})();
