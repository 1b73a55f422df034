"""Content promotion end to end on the real WordPress: a landing page built on a staging copy (a page with a
featured image and a gallery block, added to the menu, a changed tagline) goes to production while production
kept living (new posts and comments took the ids the copy used). Checked with WordPress's own PHP API and over
HTTP; production's dump, compared row by row, changed only by the promoted items. A failure after the database
change restores production exactly; a page edited on both sides blocks the promotion until --prefer resolves it.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml
from fleet import tree_checksums
from testbed.wordpress import _bootstrap, run_php

pytestmark = pytest.mark.e2e

TASK = "71301"
ENV = f"t{TASK}"
LANDING = "landing-spring-sale"
TAGLINE = "Spring sale on all roofs"

# PHP run on a WordPress (production or the copy): images made with GD, attached and given their sizes
IMAGES = r"""
require_once ABSPATH . 'wp-admin/includes/image.php';
function orch_image($name, $w, $h, $parent = 0) {
    $up = wp_upload_dir();
    $file = $up['path'] . "/$name.png";
    $im = imagecreatetruecolor($w, $h);
    imagefill($im, 0, 0, imagecolorallocate($im, crc32($name) % 200, 90, 140));
    imagepng($im, $file);
    $id = wp_insert_attachment(['post_mime_type' => 'image/png', 'post_title' => $name, 'post_status' => 'inherit',
                                'guid' => $up['url'] . "/$name.png"], $file, $parent, true);
    if (is_wp_error($id)) { fwrite(STDERR, $id->get_error_message()); exit(3); }
    wp_update_attachment_metadata($id, wp_generate_attachment_metadata($id, $file));
    return $id;
}
"""

BUILD_LANDING = (
    IMAGES
    + r"""
$page = wp_insert_post(['post_type' => 'page', 'post_status' => 'publish', 'post_title' => 'Landing: spring sale',
                        'post_name' => '@LANDING@', 'post_content' => 'draft'], true);
$hero = orch_image('landing-hero', 640, 360, $page);
$g1 = orch_image('gallery-one', 400, 300, $page);
$g2 = orch_image('gallery-two', 400, 300, $page);
$images = '';
foreach ([$g1, $g2] as $id) {
    $src = wp_get_attachment_image_url($id, 'medium');
    $images .= "<!-- wp:image {\"id\":$id,\"sizeSlug\":\"medium\",\"linkDestination\":\"none\"} -->\n"
             . "<figure class=\"wp-block-image size-medium\">"
             . "<img src=\"$src\" alt=\"\" class=\"wp-image-$id\"/></figure>\n"
             . "<!-- /wp:image -->\n";
}
$content = "<!-- wp:paragraph -->\n<p>All roofs 20 % off. "
         . "<a href=\"" . home_url('/services/') . "\">Our services</a>.</p>\n"
         . "<!-- /wp:paragraph -->\n\n<!-- wp:gallery {\"linkTo\":\"none\"} -->\n"
         . "<figure class=\"wp-block-gallery has-nested-images columns-default is-cropped\">$images</figure>\n"
         . "<!-- /wp:gallery -->";
wp_update_post(['ID' => $page, 'post_content' => wp_slash($content)]);
set_post_thumbnail($page, $hero);
$menu = wp_get_nav_menu_object('Main');
$item = wp_update_nav_menu_item($menu->term_id, 0, ['menu-item-title' => 'Spring sale', 'menu-item-object' => 'page',
    'menu-item-object-id' => $page, 'menu-item-type' => 'post_type', 'menu-item-status' => 'publish']);
update_option('blogdescription', '@TAGLINE@');
echo json_encode(['page' => $page, 'hero' => $hero, 'gallery' => [$g1, $g2], 'item' => $item,
                  'files' => array_map(fn ($id) => get_attached_file($id), [$hero, $g1, $g2])]);
""".replace("@LANDING@", LANDING).replace("@TAGLINE@", TAGLINE)
)

LIVE_ON = r"""
$ids = [];
foreach ([1, 2, 3, 4] as $n) {
    $ids[] = wp_insert_post(['post_status' => 'publish', 'post_title' => "Production news $n",
                             'post_content' => "<p>Written on production while the copy was worked on ($n).</p>"]);
}
$comments = [];
foreach (['Great roof!', 'When is the next sale?'] as $text) {
    $comments[] = wp_insert_comment(['comment_post_ID' => $ids[0], 'comment_content' => $text,
        'comment_author' => 'Visitor', 'comment_author_email' => 'visitor@example.org', 'comment_approved' => 1]);
}
echo json_encode(['posts' => $ids, 'comments' => $comments]);
"""

CHECK_LANDING = r"""
$page = get_page_by_path('@LANDING@');
$thumb = get_post_thumbnail_id($page);
$blocks = [];
foreach (parse_blocks($page->post_content) as $b) {
    foreach ($b['innerBlocks'] as $inner) { $blocks[] = $inner['attrs']['id'] ?? null; }
}
preg_match_all('/wp-image-(\d+)/', $page->post_content, $classes);
$items = array_map(fn ($i) => ['object_id' => (int) $i->object_id, 'title' => $i->title, 'type' => $i->type],
                   wp_get_nav_menu_items('Main'));
$attached = fn ($id) => ['id' => (int) $id, 'title' => get_the_title($id), 'parent' => wp_get_post_parent_id($id),
                         'file' => get_attached_file($id), 'exists' => file_exists(get_attached_file($id)),
                         'url' => wp_get_attachment_url($id),
                         'sizes' => array_keys(wp_get_attachment_metadata($id)['sizes'] ?? [])];
echo json_encode(['page' => $page->ID, 'url' => get_permalink($page), 'thumb' => $attached($thumb),
                  'gallery' => array_map($attached, $blocks), 'classes' => array_map('intval', $classes[1]),
                  'menu' => $items, 'tagline' => get_option('blogdescription'), 'content' => $page->post_content]);
""".replace("@LANDING@", LANDING)


def prod_php(wp, code: str) -> dict:
    return json.loads(wp.wordpress.run_php(code).strip().splitlines()[-1])


def stage_php(wp, staged: dict, code: str) -> dict:
    out = run_php(wp.stage1.user, _bootstrap(staged["url"], Path(staged["path"])) + code)
    return json.loads(out.strip().splitlines()[-1])


def rows(wp) -> dict[str, set[str]]:
    """Production's rows, one INSERT per row, by table (CREATE TABLE and its AUTO_INCREMENT left out)."""
    out = subprocess.run(
        [
            "mariadb-dump",
            "--no-defaults",
            "-S",
            str(wp.mariadb.socket),
            "-u",
            "root",
            "--skip-dump-date",
            "--skip-comments",
            "--skip-extended-insert",
            "--order-by-primary",
            "--no-create-info",
            wp.wordpress.db_name,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tables: dict[str, set[str]] = {}
    for line in out.splitlines():
        if line.startswith("INSERT INTO `"):
            table = line.split("`")[1]
            tables.setdefault(table, set()).add(line)
    return tables


def full_dump(wp) -> str:
    return subprocess.run(
        [
            "mariadb-dump",
            "--no-defaults",
            "-S",
            str(wp.mariadb.socket),
            "-u",
            "root",
            "--skip-dump-date",
            "--skip-comments",
            wp.wordpress.db_name,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def uploads(wp) -> dict[str, str]:
    return tree_checksums(wp.wordpress.host, f"{wp.wordpress.path}/wp-content/uploads", exclude="-none-")


def first_values(line: str) -> list[str]:
    """The leading values of an INSERT line (numbers and short strings), enough to say whose row it is."""
    body = line[line.index(" VALUES (") + 9 :]
    return re.findall(r"'(?:[^'\\]|\\.)*'|[^,']+", body)[:4]


@pytest.fixture(scope="module")
def landing(wp_fleet):
    """Production with a menu `Main` (its Services page in it), a staging copy of it, a landing page built on the
    copy, and production living on meanwhile (posts and comments taking the copy's ids)."""
    wp = wp_fleet
    prod_php(
        wp,
        """
        if (!wp_get_nav_menu_object('Main')) {
            $menu = wp_create_nav_menu('Main');
            wp_update_nav_menu_item($menu, 0, ['menu-item-title' => 'Services', 'menu-item-object' => 'page',
                'menu-item-object-id' => get_page_by_path('services')->ID, 'menu-item-type' => 'post_type',
                'menu-item-status' => 'publish']);
        }
        echo json_encode(wp_get_nav_menu_object('Main'));""",
    )
    services = prod_php(wp, "echo json_encode(get_page_by_path('services')->post_content);")
    staged = wp.orch_json("staging", "create", "wp", "--task", TASK, "--from", "fresh")
    try:
        built = stage_php(wp, staged, BUILD_LANDING)
        lived = prod_php(wp, LIVE_ON)
        assert set(lived["posts"]) & {built["page"], built["hero"], *built["gallery"], built["item"]}, (
            "production's new posts must take ids the copy used too"
        )
        yield wp, staged, built, lived
    finally:  # the session's other tests expect no copy of ours and the Services page as it was
        wp.orch("staging", "destroy", "wp", "--env", ENV, "--task", TASK)
        quoted = "'" + json.dumps(services).replace("\\", "\\\\").replace("'", "\\'") + "'"  # a PHP literal
        prod_php(
            wp,
            "echo json_encode(wp_update_post(['ID' => get_page_by_path('services')->ID, "
            f"'post_content' => wp_slash(json_decode({quoted}))]));",
        )


def promote(wp, *extra, expect: int | None = 0):
    return wp.orch("promote", "wp", "--from", ENV, "--content-only", "--task", TASK, *extra, expect=expect)


def test_the_dry_run_lists_the_items_new_ids_and_files_and_changes_nothing(landing):
    wp, staged, built, _ = landing
    before = full_dump(wp)
    plan = wp.orch_json("promote", "wp", "--from", ENV, "--content-only", "--task", TASK, "--dry-run")
    assert (plan["action"], plan["site"], plan["from"]) == ("promote-content", "wp", ENV)
    items = {(i["kind"], i["id"]): i for i in plan["items"]}
    assert items[("page", str(built["page"]))]["status"] == "added"
    assert {("media", str(i)) for i in (built["hero"], *built["gallery"])} <= set(items)
    assert items[("menu-item", str(built["item"]))]["status"] == "added"
    options = [i["title"] for i in plan["items"] if i["kind"] == "option"]
    assert "blogdescription" in options and set(options) <= {"blogdescription", "theme_mods_twentytwentythree"}
    assert plan["remaps"]["wp_posts"], "the ids production used meanwhile are remapped"
    assert not plan["blocked"] and plan["conflicts"] == []
    assert any(f.endswith("/landing-hero.png") for f in plan["files"])
    assert len([f for f in plan["files"] if "gallery-one" in f]) >= 2, "the image sizes go along"
    text = promote(wp, "--dry-run")
    assert "+ page" in text.stdout and "Landing: spring sale" in text.stdout and "remap wp_posts" in text.stdout
    assert full_dump(wp) == before


def test_a_failure_after_the_database_change_restores_production_exactly(landing, tmp_path):
    wp, *_ = landing
    site_file = wp.root / "sites" / "wp.yaml"
    original = site_file.read_text()
    site = yaml.safe_load(original)
    site["promote"] = {**site.get("promote", {}), "health_paths": ["/orch-no-such-page/"], "health_timeout": 5}
    before, files = full_dump(wp), uploads(wp)
    site_file.write_text(yaml.safe_dump(site, sort_keys=False))
    try:
        proc = promote(wp, "--yes", expect=1)
    finally:
        site_file.write_text(original)
    assert "rolled back" in proc.stderr and "health check failed" in proc.stderr, proc.stderr
    assert full_dump(wp) == before, "production's database is exactly as it was"
    assert uploads(wp) == files, "the copied files are gone again"
    op = wp.orch_json("log", "--task", TASK, "--action", "promote-content", "--steps")[-1]
    assert op["status"] == "rolled_back"
    assert [s["name"] for s in op["steps"]][-1] == "automatic rollback"


def test_the_landing_page_its_images_menu_item_and_tagline_reach_production(landing):
    wp, staged, built, lived = landing
    before, files_before = rows(wp), uploads(wp)
    out = json.loads(promote(wp, "--yes", "--json").stdout)
    assert out["status"] == "ok" and "1 page" in out["summary"] and "1 menu item" in out["summary"]

    live = prod_php(wp, CHECK_LANDING)
    assert live["tagline"] == TAGLINE
    assert live["thumb"]["title"] == "landing-hero" and live["thumb"]["exists"]
    assert live["thumb"]["parent"] == live["page"]
    assert [g["title"] for g in live["gallery"]] == ["gallery-one", "gallery-two"]
    assert all(g["exists"] and g["parent"] == live["page"] and "medium" in g["sizes"] for g in live["gallery"])
    assert live["classes"] == [g["id"] for g in live["gallery"]], "wp-image-N classes name the new ids"
    assert {"object_id": live["page"], "title": "Spring sale", "type": "post_type"} in live["menu"]
    assert any(i["title"] == "Services" for i in live["menu"]), "the menu keeps its item"
    assert wp.wordpress.url in live["content"] and staged["url"].rstrip("/") not in live["content"]
    # the copy's ids that production used meanwhile are production's posts still
    titles = json.loads(
        wp.wordpress.run_php(
            "echo json_encode(array_map(fn ($id) => get_the_title($id), %s));" % json.dumps(lived["posts"])
        )
    )
    assert titles == [f"Production news {n}" for n in (1, 2, 3, 4)]
    comments = json.loads(
        wp.wordpress.run_php(
            "echo json_encode(array_map(fn ($id) => get_comment($id)->"
            "comment_content, %s));" % json.dumps(lived["comments"])
        )
    )
    assert comments == ["Great roof!", "When is the next sale?"]

    # over HTTP: the page at its production URL, with its images
    path = urllib.parse.urlsplit(live["url"]).path
    status, _, body = wp.wordpress.get(path)
    assert status == 200 and "Landing: spring sale" in body
    for image in [live["thumb"], *live["gallery"]]:
        assert image["url"].startswith(wp.wordpress.url)
        assert wp.wordpress.get(urllib.parse.urlsplit(image["url"]).path)[0] == 200
    assert live["gallery"][0]["url"].rsplit(".", 1)[0] in body

    # nothing else changed: every row that differs belongs to a promoted item
    after = rows(wp)
    new_posts = {live["page"], live["thumb"]["id"], *(g["id"] for g in live["gallery"])}
    new_posts |= {
        i["db_id"]
        for i in json.loads(
            wp.wordpress.run_php(
                "echo json_encode(array_map(fn ($i) => ['db_id' => $i->db_id], wp_get_nav_menu_items('Main')));"
            )
        )
        if i["db_id"] not in _ids(before.get("wp_posts", set()))
    }
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, set()), after.get(table, set())
        gone, came = old - new, new - old
        if table == "wp_options":
            names = {first_values(line)[1] for line in gone | came}
            promoted = {f"'{i['title']}'" for i in out["items"] if i["kind"] == "option"}
            assert names - promoted <= {n for n in names if n.startswith(("'_transient", "'_site_transient"))}, names
            continue
        assert not gone, (table, sorted(gone)[:3])
        owner = {"wp_posts": 0, "wp_postmeta": 1, "wp_term_relationships": 0}.get(table)
        assert owner is not None or not came, (table, sorted(came)[:3])
        assert {int(first_values(line)[owner]) for line in came} <= new_posts, (table, sorted(came)[:3])
    copied = {p: s for p, s in uploads(wp).items() if p not in files_before}
    assert copied and all("landing-hero" in p or "gallery-" in p for p in copied), sorted(copied)
    op = wp.orch_json("log", "--task", TASK, "--action", "promote-content", "--steps")[-1]
    assert op["status"] == "ok"
    artifacts = [a for a in op["artifacts"] if a["kind"] == "content-item"]
    assert len(artifacts) == len(out["items"]) >= 6
    steps = [s["name"] for s in op["steps"]]
    assert steps.index("mandatory production backup") < steps.index("write the rows in one transaction")
    backup = next(a["ident"] for a in op["artifacts"] if a["kind"] == "pre-promotion-backup")
    assert backup == out["backup_id"] and backup in {b["backup_id"] for b in wp.orch_json("backups", "wp")}


def _ids(lines: set[str]) -> set[int]:
    return {int(first_values(line)[0]) for line in lines}


EDIT_SERVICES = r"""
$page = get_page_by_path('services');
wp_update_post(['ID' => $page->ID, 'post_content' => '<p>@TEXT@</p>']);
echo json_encode(['id' => $page->ID]);
"""


def test_a_page_edited_on_both_sides_blocks_until_prefer_staging_resolves_it(landing):
    wp, staged, built, _ = landing
    again = wp.orch_json("promote", "wp", "--from", ENV, "--content-only", "--task", TASK, "--dry-run")
    assert {(i["kind"], i["id"]) for i in again["earlier"]} >= {
        ("page", str(built["page"])),
        ("menu-item", str(built["item"])),
    }
    assert not [i for i in again["items"] if i["status"] == "added"], "a second run inserts nothing twice"
    page = stage_php(wp, staged, EDIT_SERVICES.replace("@TEXT@", "Services, as the copy has them"))["id"]
    prod_php(wp, EDIT_SERVICES.replace("@TEXT@", "Services, as production has them"))
    before = full_dump(wp)
    proc = promote(wp, "--select", f"page:{page}", "--yes", expect=1)
    assert "blocked" in proc.stderr and f"page {page} 'Services'" in proc.stderr, proc.stderr
    assert full_dump(wp) == before, "a blocked promotion changes nothing"
    plan = wp.orch_json(
        "promote", "wp", "--from", ENV, "--content-only", "--task", TASK, "--select", f"page:{page}", "--dry-run"
    )
    assert plan["blocked"] and [c["item"] for c in plan["conflicts"]] == [f"page:{page}"]

    out = json.loads(promote(wp, "--select", f"page:{page}", "--prefer", "staging", "--yes", "--json").stdout)
    assert out["status"] == "ok" and out["summary"] == "1 page promoted"
    text = wp.wordpress.run_php("echo get_post(get_page_by_path('services')->ID)->post_content;")
    assert "Services, as the copy has them" in text
    url = wp.wordpress.run_php("echo get_permalink(get_page_by_path('services'));").strip().splitlines()[-1]
    status, _, body = wp.wordpress.get(urllib.parse.urlsplit(url).path + "?" + urllib.parse.urlsplit(url).query)
    assert status == 200 and "Services, as the copy has them" in body
