// Swagger UI over this service's own OpenAPI document. No validator badge: it would call an outside host.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "swagger",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
