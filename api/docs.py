"""The API docs page: Swagger UI served from the installed package, no internet needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flask_swagger_ui
from flask import Blueprint, Response, send_from_directory

ASSETS = Path(flask_swagger_ui.__file__).parent / "dist"

blp = Blueprint("docs", __name__)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ipt-careplans API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# Kept out of the page so that a content security policy without inline scripts works.
_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""


@blp.get("/docs")
def page() -> Any:
    return Response(_PAGE, mimetype="text/html")


@blp.get("/docs/init.js")
def init_script() -> Any:
    return Response(_INIT, mimetype="text/javascript")


@blp.get("/docs/assets/<path:filename>")
def asset(filename: str) -> Any:
    return send_from_directory(ASSETS, filename, max_age=3600)
