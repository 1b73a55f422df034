"""Bad input, end to end: each gets one clear line naming what is wrong and its exit code, never a traceback,
and nothing is lost or changed."""
from __future__ import annotations

import copy

import pytest
from fleet import Fleet

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def own_fleet(fleet: Fleet, root, **sites: dict) -> Fleet:
    """Given the e2e fleet, return one on its own inventory folder (same hosts, oplog and secrets) with these
    sites (default: shop and blog)."""
    other = Fleet(root, fleet.env, fleet.hosts)
    other.write_inventory(copy.deepcopy(fleet.base), sites or copy.deepcopy(fleet.sites))
    return other


def alias_bomb(levels: int = 9, fan_out: int = 9) -> str:
    """A site file whose `sanitize` block is tiny as written and fan_out**levels strings once expanded."""
    lines = ["name: bomb", "environments:", "  production: {host: web1, path: /srv/bomb}", "sanitize:",
             "  a0: &a0 [" + ", ".join(['"lol"'] * fan_out) + "]"]
    lines += [f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orch: ") and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_defect_3_a_yaml_alias_bomb_is_refused_at_once_in_little_memory_naming_its_file(fleet, tmp_path):
    other = own_fleet(fleet, tmp_path / "inv")
    normal = other.orch_measured("backup", "shop", "--task", "3003", "--dry-run")
    assert normal.returncode == 0, normal.stderr
    (other.root / "sites" / "bomb.yaml").write_text(alias_bomb())
    assert (other.root / "sites" / "bomb.yaml").stat().st_size < 1000

    # a limit keeps today's 14 GB runaway from taking the machine down: it then dies of MemoryError
    bomb = other.orch_measured("backup", "bomb", "--task", "3003", memory_limit=normal.max_rss + 1024 * MIB)
    assert bomb.returncode == 2, bomb.stderr[-2000:]
    line = one_error_line(bomb.stderr)
    assert line.startswith("orch: sites/bomb.yaml: ") and "alias" in line
    assert bomb.max_rss - normal.max_rss < 100 * MIB, f"{bomb.max_rss / MIB:.0f} MiB vs {normal.max_rss / MIB:.0f}"
    assert bomb.seconds < normal.seconds + 1.0, f"{bomb.seconds:.2f} s vs {normal.seconds:.2f} s normally"

    # the same file in a fleet command costs that site alone
    listed = other.orch_measured("sites", memory_limit=normal.max_rss + 1024 * MIB)
    assert listed.returncode == 1 and "sites/bomb.yaml" in listed.stderr and "Traceback" not in listed.stderr
    assert {"shop", "blog"} <= {line.split()[0] for line in listed.stdout.splitlines()[1:]}
