// The main menu on a phone: one button that opens and closes the links, so the bar never wraps.
// Loaded (not deferred) right after the bar, so the links are folded before the page first paints.
(function () {
  "use strict";
  const bar = document.querySelector(".topbar");
  const button = bar && bar.querySelector(".menu-button");
  if (!button) return;
  bar.classList.add("js-menu");
  button.hidden = false;
  button.addEventListener("click", () => {
    const open = !bar.classList.contains("menu-open");
    bar.classList.toggle("menu-open", open);
    button.setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && bar.classList.contains("menu-open")) {
      bar.classList.remove("menu-open");
      button.setAttribute("aria-expanded", "false");
      button.focus();
    }
  });
})();
