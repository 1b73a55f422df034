"""Check URLs: configured paths win; otherwise the home page plus an even spread of the site's sitemap."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.backends.visual import shots, urls

BASE = "http://shop.example:8080"


def sitemap_site(pages: dict[str, tuple[int, dict, str]]):
    asked = []

    def fetch(url):
        asked.append(url)
        return pages.get(url, (404, {}, "not found"))

    return fetch, asked


def urlset(*locs):
    return "<?xml version='1.0'?><urlset>" + "".join(f"<url><loc>{loc}</loc></url>" for loc in locs) + "</urlset>"


def site(**verify):
    return SimpleNamespace(verify=verify)


def test_configured_urls_are_used_as_they_are():
    fetch, asked = sitemap_site({})

    assert urls.check_paths(site(urls=["/", "/shop/", "/shop/"]), fetch, BASE) == ["/", "/shop/"]
    assert asked == []


def test_without_a_sitemap_only_the_home_page_is_checked():
    fetch, _ = sitemap_site({})

    assert urls.check_paths(site(), fetch, BASE) == ["/"]


def test_a_sitemap_index_is_followed_through_a_redirect_and_sampled_evenly():
    pages = {
        f"{BASE}/sitemap.xml": (301, {"Location": "/wp-sitemap.xml"}, ""),
        f"{BASE}/wp-sitemap.xml": (
            200,
            {},
            "<sitemapindex><sitemap><loc>" + BASE + "/wp-sitemap-posts-post-1.xml</loc></sitemap><sitemap><loc>"
            "http://elsewhere.example/x.xml</loc></sitemap></sitemapindex>",
        ),
        f"{BASE}/wp-sitemap-posts-post-1.xml": (
            200,
            {},
            urlset(
                BASE + "/",
                *(f"{BASE}/post-{i}/" for i in range(10)),
                "http://elsewhere.example/post/",
                BASE + "/?p=7&amp;preview=1",
            ),
        ),
    }
    fetch, asked = sitemap_site(pages)

    paths = urls.check_paths(site(sitemap_sample=3), fetch, BASE)

    assert paths == ["/", "/?p=7&preview=1", "/post-4/", "/post-9/"]
    assert "http://elsewhere.example/x.xml" not in asked


def test_a_redirect_to_another_host_is_not_followed():
    fetch, asked = sitemap_site({f"{BASE}/sitemap.xml": (302, {"location": "https://cdn.example/sitemap.xml"}, "")})

    assert urls.sitemap_paths(fetch, BASE) == [] and asked == [f"{BASE}/sitemap.xml"]


def test_paths_are_below_a_site_that_lives_in_a_folder():
    fetch, _ = sitemap_site({f"{BASE}/blog/sitemap.xml": (200, {}, urlset(f"{BASE}/blog/about/", f"{BASE}/x/"))})

    assert urls.sitemap_paths(fetch, BASE + "/blog/") == ["/about/", "/x/"]


def test_spread_keeps_first_and_last_and_never_more_than_there_are():
    items = [str(i) for i in range(10)]

    assert urls.spread(items, 0) == [] and urls.spread(items, 1) == ["0"]
    assert urls.spread(items, 3) == ["0", "4", "9"] and urls.spread(items[:2], 5) == ["0", "1"]


def test_screenshots_live_beside_a_sqlite_oplog_and_in_the_state_dir_otherwise(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path))

    assert shots.root("sqlite:////var/lib/orch/oplog.db").as_posix() == "/var/lib/orch/screenshots"
    assert shots.root("postgresql://orch@db/orch") == tmp_path / "screenshots"


def test_file_names_are_safe_and_unique_per_path():
    names = {shots.slug(p) for p in ("/", "/a b/", "/a-b/", "/?p=1", "/../etc/passwd")}

    assert len(names) == 5 and all("/" not in n and ".." not in n for n in names)
    assert shots.slug("/").startswith("home-")
