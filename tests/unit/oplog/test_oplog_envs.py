"""The registry of run-time environments, and the migration that adds it to an existing oplog."""
import sqlalchemy as sa

from orchestrator.oplog import Oplog, schema


def test_an_environment_is_recorded_updated_and_destroyed(tmp_path):
    oplog = Oplog(f"sqlite:///{tmp_path}/oplog.db")
    oplog.record_env("shop", "t14883", task="14883", host="stage1", path="/srv/stage/shop/t14883",
                     url="https://t14883.shop.stage.example", database={"engine": "mysql", "name": "shop_t14883"},
                     details={"backup_id": "b1"})
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
