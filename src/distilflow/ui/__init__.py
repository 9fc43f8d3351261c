"""The dashboard, `distilflow ui`: server-rendered pages (Starlette, Jinja templates, no build step) over the
workspace's job store and job folders, live through server-sent events fed by one store watcher per server.

  records.py   every job of the store in one read (the jobs page, the watcher)
  overview.py  a job's line: status, stage, progress, ETA       detail.py  a job's page; files.py  its folder
  comparison.py  compare and models pages; charts.py  SVG geometry of the plots
  watch.py     the one loop that watches the store                security.py  who may read, who may change a job
  app.py       routes and templates                               server.py  binding, the token, uvicorn
"""

from distilflow.ui.server import DEFAULT_PORT, serve_ui

__all__ = ["DEFAULT_PORT", "serve_ui"]
