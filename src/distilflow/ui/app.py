"""The dashboard's web app (Starlette, Jinja templates, server-sent events): pages over the workspace's store and job
folders, and the two requests that change a job, cancel and resume, through the same functions as the command
line (pipeline/cancel.py, pipeline/start.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

import anyio
import jinja2
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from distilflow.errors import DistilflowError
from distilflow.jobs.store import JobStore
from distilflow.jobspec import JOB_NAME_PATTERN
from distilflow.ui.comparison import compared, frontier, model_views
from distilflow.ui.detail import job_page
from distilflow.ui.overview import job_row
from distilflow.ui.records import read_jobs
from distilflow.ui.security import LOOPBACK_NAMES, Access, Guard
from distilflow.ui.watch import StoreWatcher
from distilflow.workspace import Workspace

HERE = Path(__file__).parent


def _templates() -> Jinja2Templates:
    # Autoescape everything: job names, teacher answers and data rows are shown as text, never as markup.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return Jinja2Templates(env=env)


class Dashboard:
    """The routes, with the workspace, access rules and store watcher they share."""

    def __init__(self, workspace: Workspace, access: Access) -> None:
        self.workspace, self.access = workspace, access
        self.store = JobStore(workspace.db_path)
        self.watcher = StoreWatcher(workspace)
        self.templates = _templates()

    def page(self, request: Request, template: str, status_code: int = 200, **context) -> Response:
        context.update(workspace=str(self.workspace.root), form_token=self.access.form_token)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def _record(self, name: str):
        if not JOB_NAME_PATTERN.fullmatch(name) or not self.store.exists(name):
            return None
        return self.store.get(name)

    async def jobs(self, request: Request) -> Response:
        records = await run_in_threadpool(read_jobs, self.store)
        return self.page(request, "jobs.html", rows=[job_row(r) for r in records], events="/events")

    async def job(self, request: Request, notice: str = "", status_code: int = 200) -> Response:
        name = request.path_params["name"]
        record = await run_in_threadpool(self._record, name)
        if record is None:
            return self.page(request, "missing.html", status_code=404, name=name)
        number = request.query_params.get("rejected", "1")
        view = await run_in_threadpool(job_page, record, self.workspace.job(name),
                                       int(number) if number.isdigit() else 1)
        return self.page(request, "job.html", status_code=status_code, view=view, notice=notice,
                         events=f"/events?job={name}")

    async def report_html(self, request: Request) -> Response:
        name = request.path_params["name"]
        path = self.workspace.job(name).report_html
        if not JOB_NAME_PATTERN.fullmatch(name) or not path.is_file():
            return PlainTextResponse("this job has no report.html yet", status_code=404)
        return FileResponse(path, media_type="text/html")

    async def change(self, request: Request) -> Response:
        """POST /jobs/NAME/cancel or /resume: refused without the form token and this server as origin."""
        name, action = request.path_params["name"], request.path_params["action"]
        form = parse_qs((await request.body()).decode("utf-8", "replace"))  # a one-field form: no multipart parser
        refused = self.access.may_change(request, (form.get("form_token") or [None])[0])
        if refused:
            return PlainTextResponse(f"refused: {refused}", status_code=403)
        record = await run_in_threadpool(self._record, name)
        if record is None or action not in ("cancel", "resume"):
            return PlainTextResponse(f"no job named {name!r} here", status_code=404)
        try:
            await run_in_threadpool(self._cancel if action == "cancel" else self._resume, name)
        except DistilflowError as error:
            return await self.job(request, notice=str(error), status_code=409)
        return RedirectResponse(f"/jobs/{name}", status_code=303)

    def _cancel(self, name: str) -> None:
        from distilflow.pipeline.cancel import cancel_job

        cancel_job(self.workspace, name)  # returns once the job's processes are gone

    def _resume(self, name: str) -> None:
        from distilflow.jobspec import load_spec
        from distilflow.pipeline.start import launch_job

        launch_job(load_spec(self.workspace.job(name).spec), self.workspace)  # the resolved spec the job ran with

    async def compare(self, request: Request) -> Response:
        wanted = request.query_params.getlist("job")
        records = await run_in_threadpool(read_jobs, self.store)
        chosen = [r for r in records if r.name in wanted] if wanted else \
            [r for r in records if self.workspace.job(r.name).report_json.exists()]
        columns = await run_in_threadpool(lambda: [compared(r, self.workspace) for r in chosen])
        return self.page(request, "compare.html", columns=columns, chart=frontier(columns),
                         names=[r.name for r in records], wanted=set(wanted))

    async def models(self, request: Request) -> Response:
        models = await run_in_threadpool(self.store.registered_models)
        return self.page(request, "models.html", views=model_views(models))

    async def events(self, request: Request) -> Response:
        """Server-sent events: `jobs` (every job's line) or, with ?job=NAME, `job` (that job's live part)."""
        name = request.query_params.get("job")
        stopping = anyio.Event()  # set by sse-starlette when the server stops: the stream then ends cleanly

        async def stream() -> AsyncIterator[dict]:
            seen = -1
            while not stopping.is_set():
                try:
                    seen = await asyncio.wait_for(self.watcher.newer_than(seen), timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                payload = self.watcher.job_payload(name) if name else self.watcher.jobs_payload()
                if payload is not None:
                    yield {"event": "job" if name else "jobs", "data": json.dumps(payload)}

        return EventSourceResponse(stream(), ping=15, shutdown_event=stopping, shutdown_grace_period=1)


def build_app(workspace: Workspace, access: Access) -> Starlette:
    dashboard = Dashboard(workspace, access)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(dashboard.watcher.run())
        try:
            yield
        finally:
            task.cancel()
            dashboard.watcher.close()

    middleware = [Middleware(Guard, access=access)]
    if not access.public:  # a Host allowlist on loopback: a rebinding page of another site is refused
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES))
    routes = [
        Route("/", dashboard.jobs),
        Route("/jobs/{name}", dashboard.job),
        Route("/jobs/{name}/report.html", dashboard.report_html),
        Route("/jobs/{name}/{action}", dashboard.change, methods=["POST"]),
        Route("/compare", dashboard.compare),
        Route("/models", dashboard.models),
        Route("/events", dashboard.events),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
