"""The read API for merchants and operators (FastAPI; docs/api.md). Read-only.

Every merchant path answers 404 both for what does not exist and for what belongs to another
merchant: a merchant's key must not even reveal that another merchant's order exists.
Build it with `create_app(engine, settings)`; nothing connects until a request comes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from worker.api import views
from worker.api.keys import Caller, authenticate
from worker.api.store_metrics import StoreCollector

Now = Callable[[], datetime]
MAX_LIMIT = 10_000
bearer = HTTPBearer(auto_error=False, description="A merchant's API key or the operator key.")


def create_app(engine: Engine, settings: Settings, now: Now | None = None) -> FastAPI:
    """The API on `engine`; `now` is the clock (tests pass a fixed one)."""
    clock: Now = now or (lambda: datetime.now(UTC))
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    registry = CollectorRegistry()
    registry.register(StoreCollector(engine, clock))
    app = FastAPI(title="slatimer read API", version="1", description=__doc__)
    app.state.sessions = sessions
    app.state.settings = settings
    app.state.clock = clock
    app.include_router(_health_routes(engine, registry))
    _merchant_routes(app)
    return app


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


def _caller(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    key = credentials.credentials if credentials else ""
    caller = (
        authenticate(session, key, request.app.state.settings.operator_api_key) if key else None
    )
    if caller is None:
        raise HTTPException(401, "a valid API key is required", {"WWW-Authenticate": "Bearer"})
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]
NOT_FOUND = HTTPException(404, "not found")


def _merchant(merchant_id: str, caller: CallerDep, session: SessionDep) -> str:
    """The path's merchant, if the caller may read it and it exists; else 404."""
    if not caller.may_read(merchant_id) or not views.merchant_exists(session, merchant_id):
        raise NOT_FOUND
    return merchant_id


MerchantDep = Annotated[str, Depends(_merchant)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


def _merchant_routes(app: FastAPI) -> None:
    @app.get("/orders/{order_id}", response_model=views.OrderView, tags=["orders"])
    def get_order(order_id: str, caller: CallerDep, session: SessionDep) -> views.OrderView:
        """The order's clocks, its outcomes (with retractions) and the evidence timeline."""
        exists, merchant_id = views.order_merchant(session, order_id)
        if not exists or not caller.may_read(merchant_id):
            raise NOT_FOUND
        return views.order_view(session, order_id)

    @app.get("/merchants/{merchant_id}/violations", tags=["merchants"])
    def get_violations(
        merchant: MerchantDep, session: SessionDep, limit: Limit = 1000
    ) -> views.Violations:
        """Violations in order of their deadline; withdrawn ones stay, flagged `retracted`."""
        return views.violations(session, merchant, limit)

    @app.get("/merchants/{merchant_id}/points", tags=["merchants"])
    def get_points(merchant: MerchantDep, session: SessionDep, limit: Limit = 1000) -> views.Points:
        """The points ledger: the total, and its charges and reversals oldest first."""
        return views.points(session, merchant, limit)

    @app.get("/merchants/{merchant_id}/at-risk", tags=["merchants"])
    def get_at_risk(
        request: Request,
        merchant: MerchantDep,
        session: SessionDep,
        hours: Annotated[float, Query(gt=0, le=24 * 90)] = 24,
    ) -> views.AtRisk:
        """Orders with an open deadline due within the next `hours` hours, soonest first."""
        return views.at_risk(session, merchant, hours, request.app.state.clock())


def _health_routes(engine: Engine, registry: CollectorRegistry) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        """200 when the store answers, else 503 (no key needed)."""
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:  # noqa: BLE001 - any failure means "not healthy"
            raise HTTPException(503, f"store unavailable: {type(error).__name__}") from None
        return {"status": "ok"}

    @router.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus gauges computed from the store at scrape time (docs/monitoring.md)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
