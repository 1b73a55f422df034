"""The registry of run-time environments, and the migration that adds it to an existing oplog."""

import sqlalchemy as sa

from orchestrator.oplog import Oplog, schema


def test_an_environment_is_recorded_updated_and_destroyed(tmp_path):
    oplog = Oplog(f"sqlite:///{tmp_path}/oplog.db")
    oplog.record_env(
        "shop",
        "t14883",
        task="14883",
        host="stage1",
        path="/srv/stage/shop/t14883",
        url="https://t14883.shop.stage.example",
        database={"engine": "mysql", "name": "shop_t14883"},
        details={"backup_id": "b1"},
    )
    oplog.update_env("shop", "t14883", vhost="/etc/nginx/t14883.conf")
    (env,) = oplog.envs("shop")
    assert env["details"] == {"backup_id": "b1", "vhost": "/etc/nginx/t14883.conf"}
    assert env["database"]["name"] == "shop_t14883" and env["destroyed_at"] is None
    oplog.env_destroyed("shop", "t14883")
    assert oplog.envs("shop") == []
    assert oplog.envs("shop", include_destroyed=True)[0]["destroyed_at"]


def test_recreating_a_destroyed_environment_revives_it(tmp_path):
    oplog = Oplog(f"sqlite:///{tmp_path}/oplog.db")
    for _ in range(2):
        oplog.record_env("shop", "t1", task="1", host="h", path="/p", url=None, database=None, details=None)
        oplog.env_destroyed("shop", "t1")
    oplog.record_env("shop", "t1", task="2", host="h", path="/p", url=None, database=None, details=None)
    assert [e["task"] for e in oplog.envs()] == ["2"]


def test_a_version_1_oplog_gains_the_environments_table(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        schema.schema_version.create(conn)
        conn.execute(schema.schema_version.insert().values(version=1))
        schema.MIGRATIONS[0](conn)
    Oplog(url).record_env("s", "e", task="1", host="h", path="/p", url=None, database=None, details=None)
    with engine.connect() as conn:
        assert conn.execute(sa.select(schema.schema_version.c.version)).scalar() == schema.CURRENT_VERSION


def test_a_held_lock_is_renewed_by_the_heartbeat_and_released_at_the_end(tmp_path):
    import time

    from orchestrator.oplog import locks as site_locks
    from orchestrator.oplog import run

    oplog = Oplog(f"sqlite:///{tmp_path}/oplog.db")
    original = run._Heartbeat.__init__

    def fast(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.ttl = 0.3  # beat every 0.1 s

    run._Heartbeat.__init__ = fast
    try:
        with run.locked_operation(oplog, site="shop", task="1", env="production", action="backup"):
            from datetime import datetime, timezone

            first = oplog.locks()[0]["expires_at"]
            time.sleep(0.35)
            renewed = oplog.locks()[0]["expires_at"]
            assert renewed != first  # the heartbeat re-set it to now + ttl
            delta = datetime.fromisoformat(renewed) - datetime.now(timezone.utc)
            assert abs(delta.total_seconds()) < 1
    finally:
        run._Heartbeat.__init__ = original
    assert oplog.locks() == []
    assert site_locks.DEFAULT_TTL <= 3600
