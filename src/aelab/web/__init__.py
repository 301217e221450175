"""The latent-space explorer: a local web app over one run folder (or a folder of runs).

    from aelab.web import create_app, BackgroundServer
    with BackgroundServer(create_app("runs/vae-mnist5k")) as url:
        ...  # open url in a browser

``aelab serve RUN`` is the command-line face. The page, its script and style are in ``static/`` and are
served by the app itself: no network, no CDN.
"""
from .app import LIMITS, create_app, load_views
from .server import BackgroundServer, bind, is_loopback, serve, url_of
from .views import RunView, find_runs, png_bytes

__all__ = ["BackgroundServer", "LIMITS", "RunView", "bind", "create_app", "find_runs", "is_loopback",
           "load_views", "png_bytes", "serve", "url_of"]
