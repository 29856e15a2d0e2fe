"""Per-client rate limits (idp_service/web/ratelimit.py) and their database storage.

* Every route under a limited prefix carries its group's limit: the URL map is
  walked, so a new route cannot slip through, and each one is driven past a
  limit of 1 to see the 429.
* The database storage counts atomically and shares its counters (both
  databases), starts a new window when the old one ended, and deletes expired
  counters.
* The client key cannot be changed by a header the client sends itself, and
  follows ``X-Forwarded-For`` only as far as the configured proxies.
* With the real service under gunicorn (two workers) on SQLite and PostgreSQL:
  a low limit refuses exactly the excess across workers with 429, Retry-After
  and ``rate_limited``, audits the first refusal per window only, leaves other
  clients alone, and lets requests through again once the window passed.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from idp_service.app import create_app
from idp_service.platform.config import RATE_LIMITS, Settings
from idp_service.platform.db import make_engine
from idp_service.platform.models import AuditEvent
from idp_service.platform.ratelimit_store import DatabaseStorage
from idp_service.platform.ratelimit_tables import RateLimitCounter
from idp_service.web import ratelimit
from tests.procs import start_service

# --- which routes must be limited, decided from the URL map, not from GROUPS ---------


def expected_groups(path: str, methods: set[str]) -> set[str]:
    """The limit groups a route must carry, from its path and methods alone."""
    groups = set()
    post = "POST" in methods
    if path.startswith("/agent/"):
        groups.add("agent")
    if path.startswith("/saml/") and path != "/saml/metadata":
        groups.add("saml")
    if path.startswith("/login/") and post:
        groups.add("login")
    if path == "/login":  # a GET that starts a sign-in writes its transaction, as /saml/sso does
        groups.add("login")
    if post and (path in ("/agent/v1/register", "/agent/v1/challenges") or "register" in path):
        groups.add("enroll")
    if path.startswith("/login/") and path.endswith("/approve") and post:
        groups.add("approval")
    if path in ("/admin/signin", "/admin/bootstrap") and post:
        groups.add("admin_signin")
    if path.startswith("/oidc/") and path not in (
        "/oidc/.well-known/openid-configuration",
        "/oidc/jwks",
    ):
        groups.add("oidc")
    return groups


def _app(url: str, tmp_path: Path, **env: str):
    settings = Settings.from_env(
        {
            "DEVICETRUST_DATABASE_URL": url,
            "DEVICETRUST_DATA_DIR": str(tmp_path / "data"),
            "DEVICETRUST_PUBLIC_URL": "http://127.0.0.1:8000",
            **env,
        }
    )
    return create_app(settings)


@pytest.fixture
def sqlite_migrated(sqlite_url: str) -> str:
    from idp_service.platform.migrate import upgrade

    upgrade(sqlite_url)
    return sqlite_url


ONE_EACH = {f"DEVICETRUST_RATELIMIT_{g.upper()}": "1/hour" for g in RATE_LIMITS}


def test_every_route_under_a_limited_prefix_has_its_groups_limit(sqlite_migrated, tmp_path):
    app = _app(sqlite_migrated, tmp_path, **ONE_EACH)
    client = app.test_client()
    checked = 0
    for n, rule in enumerate(app.url_map.iter_rules()):
        methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        want = expected_groups(rule.rule, methods)
        if not want:
            continue
        assert want <= set(ratelimit.limited_groups(app, rule.endpoint)), rule.rule
        # And it really is enforced: a second request from one address is refused.
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "1" if "int" in m.group(0) else "x", rule.rule)
        method = "POST" if "POST" in methods else "GET"
        env = {"REMOTE_ADDR": f"10.1.{n // 250}.{n % 250 + 1}"}
        client.open(path, method=method, environ_base=env)
        again = client.open(path, method=method, environ_base=env)
        assert again.status_code == 429, (rule.rule, again.status_code)
        assert again.headers["Retry-After"].isdigit()
        assert "rate_limited" in again.get_data(as_text=True)
        checked += 1
    assert checked >= 15  # agent, saml, login, approval and admin sign-in routes
    # GROUPS names no endpoint that does not exist (init_app would have refused).
    assert all(ep in app.view_functions for eps in ratelimit.GROUPS.values() for ep in eps)
    app.extensions["devicetrust"].db.dispose()


def test_json_routes_get_the_error_body_and_pages_get_a_page(sqlite_migrated, tmp_path):
    app = _app(
        sqlite_migrated,
        tmp_path,
        DEVICETRUST_RATELIMIT_LOGIN="1/hour",
        DEVICETRUST_RATELIMIT_SAML="1/hour",
    )
    client = app.test_client()
    client.post("/login/x/challenge", json={})
    refused = client.post("/login/x/challenge", json={})
    assert refused.status_code == 429
    body = refused.get_json()
    assert body["error"]["code"] == "rate_limited"
    assert "Try again in" in body["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    client.get("/saml/sso")
    page = client.get("/saml/sso")
    assert page.status_code == 429
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "Too many requests" in html and '<code id="code">rate_limited</code>' in html
    assert 1 <= int(page.headers["Retry-After"]) <= 3600
    app.extensions["devicetrust"].db.dispose()


def test_switched_off_nothing_is_limited(sqlite_migrated, tmp_path):
    app = _app(
        sqlite_migrated,
        tmp_path,
        DEVICETRUST_RATELIMIT_ENABLED="false",
        DEVICETRUST_RATELIMIT_AGENT="1/hour",
    )
    client = app.test_client()
    assert all(client.get("/agent/v1/server").status_code == 200 for _ in range(5))
    assert ratelimit.limited_groups(app, "agent_api.server_info") == ()
    app.extensions["devicetrust"].db.dispose()


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("DEVICETRUST_RATELIMIT_AGENT", "lots", "DEVICETRUST_RATELIMIT_AGENT"),
        ("DEVICETRUST_RATELIMIT_STORAGE", "memcached://x", "DEVICETRUST_RATELIMIT_STORAGE"),
        ("DEVICETRUST_RATELIMIT_ENABLED", "maybe", "DEVICETRUST_RATELIMIT_ENABLED"),
        ("DEVICETRUST_TRUSTED_PROXIES", "11", "DEVICETRUST_TRUSTED_PROXIES"),
        ("DEVICETRUST_TRUSTED_PROXIES", "one", "DEVICETRUST_TRUSTED_PROXIES"),
    ],
)
def test_bad_settings_stop_the_service_with_the_variable_named(name, value, complaint):
    with pytest.raises(ValueError, match=complaint):
        Settings.from_env({name: value})


def test_defaults_and_memory_storage(sqlite_migrated, tmp_path):
    s = Settings.from_env({})
    assert s.ratelimit_enabled and s.ratelimit_storage == "database"
    assert s.rate_limits == RATE_LIMITS and s.trusted_proxies == 0
    app = _app(
        sqlite_migrated,
        tmp_path,
        DEVICETRUST_RATELIMIT_STORAGE="memory://",
        DEVICETRUST_RATELIMIT_AGENT="2/hour",
    )
    client = app.test_client()
    codes = [client.get("/agent/v1/server").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    with make_engine(sqlite_migrated).connect() as conn:  # nothing went to the database
        assert conn.execute(select(func.count()).select_from(RateLimitCounter)).scalar_one() == 0
    app.extensions["devicetrust"].db.dispose()


def test_the_console_hides_a_redis_password():
    from idp_service.admin.records import redacted

    settings = Settings.from_env({"DEVICETRUST_RATELIMIT_STORAGE": "redis://:s3cret@cache:6379/0"})
    shown = dict(redacted(settings))
    assert shown["ratelimit_storage"] == "redis://(hidden)@cache:6379/0"
    assert "s3cret" not in repr(shown)


# --- the client key -------------------------------------------------------------------


def _codes(client, n: int, **environ: str) -> list[int]:
    headers = {}
    if "xff" in environ:
        headers["X-Forwarded-For"] = environ.pop("xff")
    return [
        client.get("/agent/v1/server", headers=headers, environ_base=environ).status_code
        for _ in range(n)
    ]


def test_a_forwarded_for_header_is_ignored_without_trusted_proxies(sqlite_migrated, tmp_path):
    app = _app(sqlite_migrated, tmp_path, DEVICETRUST_RATELIMIT_AGENT="2/hour")
    client = app.test_client()
    assert _codes(client, 2, REMOTE_ADDR="192.0.2.7") == [200, 200]
    # Claiming to be someone else in X-Forwarded-For changes nothing.
    for fake in ("198.51.100.1", "198.51.100.2, 198.51.100.3"):
        assert _codes(client, 1, REMOTE_ADDR="192.0.2.7", xff=fake) == [429]
    assert _codes(client, 1, REMOTE_ADDR="192.0.2.8") == [200]  # another client
    app.extensions["devicetrust"].db.dispose()


def test_behind_one_proxy_the_client_is_the_address_the_proxy_saw(sqlite_migrated, tmp_path):
    app = _app(
        sqlite_migrated,
        tmp_path,
        DEVICETRUST_RATELIMIT_AGENT="2/hour",
        DEVICETRUST_TRUSTED_PROXIES="1",
    )
    client = app.test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    assert _codes(client, 2, xff="203.0.113.5", **proxy) == [200, 200]
    # The client prepends whatever it likes; the proxy appended the real address.
    assert _codes(client, 1, xff="1.2.3.4, 203.0.113.5", **proxy) == [429]
    assert _codes(client, 1, xff="5.6.7.8, 203.0.113.5", **proxy) == [429]
    assert _codes(client, 1, xff="203.0.113.6", **proxy) == [200]  # another client
    app.extensions["devicetrust"].db.dispose()


def test_ipv6_clients_are_counted_per_64(sqlite_migrated, tmp_path):
    app = _app(sqlite_migrated, tmp_path, DEVICETRUST_RATELIMIT_AGENT="2/hour")
    client = app.test_client()
    assert _codes(client, 1, REMOTE_ADDR="2001:db8:1:2::1") == [200]
    assert _codes(client, 1, REMOTE_ADDR="2001:db8:1:2:ffff::9") == [200]
    assert _codes(client, 1, REMOTE_ADDR="2001:db8:1:2::abcd") == [429]  # same /64
    assert _codes(client, 1, REMOTE_ADDR="2001:db8:1:3::1") == [200]
    app.extensions["devicetrust"].db.dispose()


# --- the database storage, on both databases --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_database_storage_counts_atomically_across_connections(migrated_url):
    engine = make_engine(migrated_url)
    stores = [DatabaseStorage(engine=engine), DatabaseStorage(engine=make_engine(migrated_url))]
    results: list[int] = []
    lock = threading.Lock()

    def hit(i: int) -> None:
        n = stores[i % 2].incr("k", 60)
        with lock:
            results.append(n)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(hit, range(40)))
    assert sorted(results) == list(range(1, 41))  # no two requests saw the same count
    assert stores[0].get("k") == 40 and stores[1].get("k") == 40
    for s in stores:
        s.engine.dispose()


def test_database_storage_windows_end_and_expired_counters_are_deleted(migrated_url):
    clock = Clock()
    store = DatabaseStorage(engine=make_engine(migrated_url), clock=clock)
    assert store.check()
    assert (store.incr("a", 10), store.incr("a", 10, amount=2)) == (1, 3)
    assert store.incr("b", 100) == 1
    assert store.get("a") == 3 and store.get_expiry("a") == clock.now + 10
    assert store.get("missing") == 0 and store.get_expiry("missing") == clock.now
    clock.now += 10  # a's window ended
    assert store.get("a") == 0 and store.get_expiry("a") == clock.now
    assert store.incr("a", 10) == 1  # a new window, not 4
    assert store.get_expiry("a") == clock.now + 10
    clock.now += 50
    assert store.sweep() == 1  # a went, b stays
    with store.engine.connect() as conn:
        keys = conn.execute(select(RateLimitCounter.key)).scalars().all()
    assert keys == ["b"]
    store.clear("b")
    assert store.get("b") == 0
    store.incr("c", 5)
    assert store.reset() == 1
    store.engine.dispose()


def test_expired_counters_never_count_and_only_the_expiry_job_deletes_them(migrated_url):
    """The request path deletes nothing: an ended window is skipped by reads and restarts
    in place on its next increment; the expiry job (``expiry.clean_up``) deletes it."""
    import datetime as dt

    from idp_service.expiry import clean_up
    from idp_service.platform.db import Database

    clock = Clock()
    store = DatabaseStorage(engine=make_engine(migrated_url), clock=clock)
    store.incr("old", 1)
    store.incr("kept", 100)
    clock.now += 61
    store.incr("new", 60)
    with store.engine.connect() as conn:  # increments deleted nothing
        keys = conn.execute(select(RateLimitCounter.key)).scalars().all()
    assert sorted(keys) == ["kept", "new", "old"]
    assert store.get("old") == 0 and store.get("kept") == 1
    db = Database(migrated_url)
    try:
        deleted = clean_up(db, now=dt.datetime.fromtimestamp(clock.now, dt.UTC))
    finally:
        db.dispose()
    assert deleted.get("rate_limit_counters") == 1
    with store.engine.connect() as conn:
        keys = conn.execute(select(RateLimitCounter.key)).scalars().all()
    assert sorted(keys) == ["kept", "new"]
    store.engine.dispose()


# --- the real service: gunicorn, two workers, SQLite and PostgreSQL ----------------------


def _client(svc, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=svc.url, transport=transport, timeout=20)


def _refusals(svc, addr: str, group: str) -> list[dict]:
    engine = make_engine(svc.env["DEVICETRUST_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEvent.code, AuditEvent.details).where(
                    AuditEvent.action == "rate_limit", AuditEvent.remote_addr == addr
                )
            ).all()
    finally:
        engine.dispose()
    return [{"code": c, **(d or {})} for c, d in rows if (d or {}).get("group") == group]


@pytest.fixture
def limited_service(tmp_path, database_url):
    svc = start_service(
        tmp_path,
        database_url,
        workers=2,
        extra_env={
            "DEVICETRUST_RATELIMIT_AGENT": "40/minute",
            "DEVICETRUST_RATELIMIT_ENROLL": "3 per 4 seconds",
        },
    )
    yield svc
    svc.stop()


def test_a_low_limit_is_shared_by_both_workers_and_audited_once(limited_service):
    svc = limited_service
    with _client(svc, "127.0.0.1") as one:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: one.get("/agent/v1/server"), range(60)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 40 + [429] * 20  # one counter for both workers
    refused = [a for a in answers if a.status_code == 429]
    for r in refused:
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    # Twenty refusals, one audit event.
    assert _refusals(svc, "127.0.0.1", "agent") == [
        {
            "code": "rate_limited",
            "group": "agent",
            "limit": "40 per 1 minute",
            "endpoint": "agent_api.server_info",
            "method": "GET",
        }
    ]
    # Another client is not affected.
    with _client(svc, "127.0.0.2") as other:
        assert other.get("/agent/v1/server").status_code == 200


def test_after_the_window_requests_go_through_again(limited_service):
    svc = limited_service
    with _client(svc, "127.0.0.3") as c:

        def challenge() -> httpx.Response:
            return c.post("/agent/v1/challenges", json={"purpose": "register"})

        deadline = time.monotonic() + 30
        # The window is 4 seconds; on a loaded machine it may end before the fourth
        # request, so ask until refused rather than expect it at a fixed place.
        while (refused := challenge()).status_code != 429:
            assert refused.status_code == 200
            assert time.monotonic() < deadline
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 4
        while (again := challenge()).status_code == 429:
            assert time.monotonic() < deadline, "the window never ended"
            time.sleep(0.5)
        assert again.status_code == 200 and again.json()["challenge"]
        while challenge().status_code != 429:  # exceed the new window too
            assert time.monotonic() < deadline
    # One audit event per window in which the client was refused.
    assert [e["group"] for e in _refusals(svc, "127.0.0.3", "enroll")] == ["enroll", "enroll"]
