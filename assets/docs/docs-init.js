// Starts Swagger UI on the Chat API document of this server. A served file rather than an inline
// script, so that the page's Content-Security-Policy can forbid inline scripts.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    // The default would load a badge from validator.swagger.io: nothing leaves this server.
    validatorUrl: null,
    // Tokens entered in "Authorize" stay in memory; they are not written to local storage.
    persistAuthorization: false,
    tryItOutEnabled: false,
    displayRequestDuration: true,
  });
});
