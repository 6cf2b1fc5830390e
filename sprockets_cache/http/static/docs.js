// Starts Swagger UI on /docs. A file, not an inline script, so the page can run under a strict CSP.
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No badge from the online validator: the page asks no other host for anything.
    validatorUrl: null,
  });
});
