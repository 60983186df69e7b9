// The API documentation page: Swagger UI on the app's schema, without deep links (a link inside each
// operation's button is a control nested in a control), and with the CSRF token on session requests.
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  const csrf = root.dataset.csrfToken;
  window.ui = SwaggerUIBundle({
    url: root.dataset.schemaUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: false,
    requestInterceptor: (request) => {
      if (!["GET", undefined].includes(request.method) && request.credentials === "same-origin") {
        request.headers[root.dataset.csrfHeader] = csrf;
      }
      return request;
    },
  });
})();
