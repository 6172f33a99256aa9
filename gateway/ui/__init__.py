"""The dashboard at ``/ui``: one HTML shell and its static assets, read from this package.

Nothing is fetched from elsewhere (no CDN, no font): the page is plain ES modules and CSS
under ``gateway/ui/static/``. The page keeps the bearer token in ``sessionStorage`` and calls
the JSON API with it, so every action it offers is an API route with that route's rules.
"""

from gateway.ui.assets import ui_handlers, ui_shell

__all__ = ["ui_handlers", "ui_shell"]
