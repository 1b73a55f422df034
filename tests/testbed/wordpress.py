"""A real WordPress (Debian's package, copied) installed on a host, served by that host's nginx + php-fpm.

:func:`install_wordpress` copies /usr/share/wordpress (symlinks resolved) into a docroot owned by the host's user,
writes a plain wp-config.php, installs from the PHP CLI as that user (no HTTP round trips), adds content that a
URL-rewriting promotion must handle (absolute links in posts, a serialized option, JSON-escaped URLs, an upload,
users with real-looking e-mail addresses) and drops a vhost into the host's nginx. About 1.5-2 s.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import secrets
import struct
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from . import TestbedError
from .mariadb import MariaDB
from .sshd import SshHost
from .webserver import Nginx, PhpFpm, php_vhost, run_as, user_env, write_user_file

WORDPRESS_SOURCE = Path("/usr/share/wordpress")
UPLOAD = "wp-content/uploads/2026/11/roof.png"
DEFAULT_TITLE = "Dachdeckerei Muster Shop"

# login -> (e-mail, role, display name); the admin is "admin" <admin@shop.example>
EXTRA_USERS = {
    "jane": ("jane.customer@gmail.example", "subscriber", "Jane Customer"),
    "max.mustermann": ("max.mustermann@web.example", "editor", "Max Mustermann"),
    "olga": ("olga.ivanova@yandex.example", "author", "Ольга Иванова"),
}


@dataclass
class WordPress:
    """An installed WordPress. ``url`` is its WP_HOME/WP_SITEURL (no trailing slash); ``path`` its docroot."""

    url: str
    path: Path
    host: SshHost
    nginx: Nginx
    php: PhpFpm
    title: str
    admin_user: str
    admin_password: str
    admin_email: str
    db_name: str
    db_user: str
    db_password: str
    db_host: str
    db_port: int
    vhost_path: Path
    table_prefix: str = "wp_"
    users: dict[str, str] = field(default_factory=dict)  # login -> e-mail, admin included
    user_passwords: dict[str, str] = field(default_factory=dict, repr=False)  # login -> password, admin included
    post_ids: dict[str, int] = field(default_factory=dict)  # "services", "roof", "krovlya", "attachment"
    upload: str = UPLOAD  # relative to path

    # ----------------------------------------------------------------------------------------------- HTTP

    def request(
        self,
        method: str,
        path: str = "/",
        *,
        data: dict | bytes | None = None,
        host: str | None = None,
        headers: dict[str, str] | None = None,
        cookies: http.cookiejar.CookieJar | None = None,
        timeout: float = 30,
    ) -> tuple[int, Message, str]:
        """One request to this site's nginx, redirects NOT followed: (status, headers, body as text).

        The connection goes to nginx's address:port; the Host header is the site URL's host:port unless ``host``
        says otherwise (so a site URL with a made-up name works too). ``data`` as dict is form-encoded.
        """
        if isinstance(data, dict):
            data = urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(self.nginx.url + path, data=data, method=method, headers=dict(headers or {}))
        req.add_header("Host", host or urllib.parse.urlsplit(self.url).netloc)
        handlers: list = [_NoRedirect()]
        if cookies is not None:
            handlers.append(urllib.request.HTTPCookieProcessor(cookies))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.headers, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:  # 3xx (not followed), 4xx, 5xx
            with e:
                return e.code, e.headers, e.read().decode("utf-8", "replace")

    def get(self, path: str = "/", **kwargs) -> tuple[int, Message, str]:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict | bytes, **kwargs) -> tuple[int, Message, str]:
        return self.request("POST", path, data=data, **kwargs)

    def login(self, user: str | None = None, password: str | None = None) -> http.cookiejar.CookieJar:
        """Log in through wp-login.php like a browser; returns the cookie jar. TestbedError if refused."""
        user = user or self.admin_user
        password = self.admin_password if password is None else password
        jar = http.cookiejar.CookieJar()
        self.get("/wp-login.php", cookies=jar)  # sets wordpress_test_cookie
        status, headers, body = self.post(
            "/wp-login.php",
            {
                "log": user,
                "pwd": password,
                "wp-submit": "Log In",
                "redirect_to": f"{self.url}/wp-admin/",
                "testcookie": "1",
            },
            cookies=jar,
        )
        if status != 302 or "/wp-admin" not in headers.get("Location", ""):
            raise TestbedError(f"login as {user} failed: HTTP {status} Location={headers.get('Location')}")
        return jar

    # ------------------------------------------------------------------------------------------------ PHP

    def run_php(self, code: str) -> str:
        """Run PHP statements (no ``<?php``) with WordPress loaded, as the host user; returns stdout.

        E.g. ``wp.run_php("echo json_encode(get_option('orch_test_widget'));")``.
        """
        return run_php(self.host.user, _bootstrap(self.url, self.path) + code)


def install_wordpress(
    host: SshHost,
    path: Path | str,
    db: MariaDB,
    db_name: str,
    db_user: str,
    db_password: str,
    url: str,
    nginx: Nginx,
    php: PhpFpm,
    *,
    title: str = DEFAULT_TITLE,
    admin_password: str | None = None,
    default_server: bool = True,
) -> WordPress:
    """Install WordPress into ``path`` (docroot; created, owned by ``host.user``) with database ``db_name`` on
    ``db`` (created with ``db_user``/``db_password``), site URL ``url``, served by ``nginx``/``php``.

    The vhost (``<nginx.sites_dir>/<path name>.conf``) answers ``url``'s host name and, with
    ``default_server``, any other Host too. nginx is reloaded before returning.
    """
    path = Path(path)
    url = url.rstrip("/")
    user = host.user
    admin_password = admin_password or "Adm1n-" + secrets.token_urlsafe(12)
    db.create_database(db_name, db_user, db_password)

    run_as(user, ["mkdir", "-p", str(path)])
    _copy_docroot(user, path)
    write_user_file(
        path / "wp-config.php", _wp_config(db_name, db_user, db_password, f"{db.host}:{db.port}", url), user, mode=0o640
    )

    passwords = {login: "Pw-" + secrets.token_urlsafe(9) for login in EXTRA_USERS}
    config = {
        "url": url,
        "title": title,
        "admin_user": "admin",
        "admin_email": "admin@shop.example",
        "admin_password": admin_password,
        "upload": UPLOAD,
        "png": base64.b64encode(_png(48, 32)).decode(),
        "users": [
            {"login": login, "email": email, "role": role, "name": name, "password": passwords[login]}
            for login, (email, role, name) in EXTRA_USERS.items()
        ],
    }
    out = run_php(
        user,
        _bootstrap(url, path, installing=True)
        + _INSTALL.replace("@CONFIG@", base64.b64encode(json.dumps(config).encode()).decode()),
    )
    result = _result(out)

    host_name = urllib.parse.urlsplit(url).hostname or "_"
    server_name = host_name if not default_server or host_name == "_" else f"{host_name} _"
    vhost = nginx.sites_dir / f"{path.name}.conf"
    write_user_file(
        vhost,
        php_vhost(
            listen=nginx.listen,
            root=path,
            php_socket=php.socket,
            server_name=server_name,
            default_server=default_server,
        ),
        user,
    )
    nginx.reload()
    return WordPress(
        url=url,
        path=path,
        host=host,
        nginx=nginx,
        php=php,
        title=title,
        admin_user="admin",
        admin_password=admin_password,
        admin_email="admin@shop.example",
        db_name=db_name,
        db_user=db_user,
        db_password=db_password,
        db_host=db.host,
        db_port=db.port,
        vhost_path=vhost,
        users={"admin": "admin@shop.example", **{login: v[0] for login, v in EXTRA_USERS.items()}},
        user_passwords={"admin": admin_password, **passwords},
        post_ids=result["post_ids"],
    )


def run_php(user: str, script: str) -> str:
    """``php`` as ``user`` with ``script`` (starting ``<?php``) on stdin; PHP errors go to stderr."""
    proc = run_as(user, ["php", "-d", "display_errors=stderr", "-d", "memory_limit=256M"], input=script, check=False)
    if proc.returncode:
        raise TestbedError(f"php as {user} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


# ------------------------------------------------------------------------------------------------------ helpers


def _copy_docroot(user: str, path: Path) -> None:
    """tar the package's docroot with symlinks resolved (root reads) and unpack it as ``user``."""
    pack = subprocess.Popen(
        [
            "tar",
            "-C",
            str(WORDPRESS_SOURCE),
            "-chf",
            "-",
            "--exclude=./.htaccess",
            "--exclude=./wp-config.php",
            "--exclude=./wp-content/languages/*",
            ".",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        unpack = subprocess.run(
            ["tar", "-C", str(path), "--no-same-owner", "-xf", "-"],
            stdin=pack.stdout,
            capture_output=True,
            user=user,
            group=user,
            extra_groups=[],
            env=user_env(user),
        )
    finally:
        pack.stdout.close()
        pack_err = pack.stderr.read().decode(errors="replace")
        pack.stderr.close()
        pack.wait()
    if pack.returncode or unpack.returncode:
        raise TestbedError(f"copying {WORDPRESS_SOURCE} to {path} failed: {pack_err}{unpack.stderr.decode()}")


def _php_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _wp_config(db_name: str, db_user: str, db_password: str, db_host: str, url: str) -> str:
    salts = "\n".join(
        f"define( '{name}', {_php_str(secrets.token_urlsafe(48))} );"
        for name in (
            "AUTH_KEY",
            "SECURE_AUTH_KEY",
            "LOGGED_IN_KEY",
            "NONCE_KEY",
            "AUTH_SALT",
            "SECURE_AUTH_SALT",
            "LOGGED_IN_SALT",
            "NONCE_SALT",
        )
    )
    return f"""<?php
// Written by the orch testbed (tests/testbed/wordpress.py).
define( 'DB_NAME', {_php_str(db_name)} );
define( 'DB_USER', {_php_str(db_user)} );
define( 'DB_PASSWORD', {_php_str(db_password)} );
define( 'DB_HOST', {_php_str(db_host)} );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );

{salts}

$table_prefix = 'wp_';

define( 'WP_HOME', {_php_str(url)} );
define( 'WP_SITEURL', {_php_str(url)} );
define( 'DISABLE_WP_CRON', true );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'WP_AUTO_UPDATE_CORE', false );
define( 'FS_METHOD', 'direct' );
define( 'WP_DEBUG', false );

if ( ! defined( 'ABSPATH' ) ) {{
\tdefine( 'ABSPATH', __DIR__ . '/' );
}}
require_once ABSPATH . 'wp-settings.php';
"""


def _bootstrap(url: str, path: Path, installing: bool = False) -> str:
    """PHP preamble that fakes the request WordPress expects from the CLI and loads it."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    lines = [
        "<?php",
        f"$_SERVER['HTTP_HOST'] = {_php_str(parts.netloc)};",
        f"$_SERVER['SERVER_NAME'] = {_php_str(parts.hostname or '')};",
        f"$_SERVER['SERVER_PORT'] = '{port}';",
        "$_SERVER['REQUEST_URI'] = '/';",
        "$_SERVER['REQUEST_METHOD'] = 'GET';",
        "$_SERVER['HTTPS'] = 'on';" if parts.scheme == "https" else "",
    ]
    if installing:
        lines += [
            "define( 'WP_INSTALLING', true );",
            "function wp_new_blog_notification() {}  // no MTA: pluggable, replaced before upgrade.php",
        ]
    lines += [f"require_once {_php_str(str(path / 'wp-load.php'))};", ""]
    return "\n".join(lines)


_INSTALL = r"""
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
require_once ABSPATH . 'wp-admin/includes/image.php';
$cfg = json_decode( base64_decode( '@CONFIG@' ), true );
$url = $cfg['url'];
function orch_check( $value, $what ) {
    if ( is_wp_error( $value ) || ! $value ) {
        fwrite( STDERR, "$what failed: " . ( is_wp_error( $value ) ? $value->get_error_message() : 'false' ) . "\n" );
        exit( 3 );
    }
    return $value;
}

// wp_install() probes pretty permalinks with HTTP requests to the site itself: no network while installing
add_filter( 'pre_http_request', function () { return new WP_Error( 'orch_testbed', 'no HTTP during install' ); } );
$installed = wp_install( $cfg['title'], $cfg['admin_user'], $cfg['admin_email'], true, '', $cfg['admin_password'] );
orch_check( $installed['user_id'] ?? 0, 'wp_install' );
update_option( 'siteurl', $url );
update_option( 'home', $url );
update_option( 'blogdescription', 'Roofing & gutters since 1998' );
update_option( 'timezone_string', 'Europe/Berlin' );
global $wp_rewrite;
$wp_rewrite->set_permalink_structure( '/%postname%/' );
$wp_rewrite->flush_rules( false );
wp_set_current_user( $installed['user_id'] );

foreach ( $cfg['users'] as $u ) {
    [ $first, $last ] = array_pad( explode( ' ', $u['name'], 2 ), 2, '' );
    orch_check( wp_insert_user( [
        'user_login' => $u['login'], 'user_email' => $u['email'], 'user_pass' => $u['password'],
        'role' => $u['role'], 'display_name' => $u['name'], 'first_name' => $first, 'last_name' => $last,
        'user_url' => 'https://' . explode( '@', $u['email'] )[1] . '/~' . $u['login'],
    ] ), "user {$u['login']}" );
}

$upload_file = ABSPATH . $cfg['upload'];
wp_mkdir_p( dirname( $upload_file ) );
orch_check( file_put_contents( $upload_file, base64_decode( $cfg['png'] ) ), 'upload' );
$upload_url = "$url/{$cfg['upload']}";

$ids = [];
$ids['services'] = orch_check( wp_insert_post( [
    'post_type' => 'page', 'post_status' => 'publish', 'post_title' => 'Services', 'post_name' => 'services',
    'post_content' => "<p>Roofs, gutters, chimneys. <a href=\"$url/contact/\">Contact us</a> or read "
        . "<a href=\"$url/new-roof-kreuzberg/\">our latest job</a>.</p>",
], true ), 'page services' );
$ids['roof'] = orch_check( wp_insert_post( [
    'post_status' => 'publish', 'post_title' => 'New roof in Kreuzberg', 'post_name' => 'new-roof-kreuzberg',
    'post_content' => "<p>Before and after:</p>\n"
        . "<p><img src=\"$upload_url\" alt=\"roof\" width=\"48\" height=\"32\" /></p>\n"
        . "<p>See <a href=\"$url/services/\">our services</a> &amp; <a href=\"$url/?p=1\">the first post</a>.</p>",
], true ), 'post roof' );
$ids['krovlya'] = orch_check( wp_insert_post( [
    'post_status' => 'publish', 'post_title' => 'Кровля: советы', 'post_name' => 'krovlya',
    'post_content' => "<p>Кровля под ключ — <a href=\"$url/services/\">услуги</a>, "
        . "<a href=\"$url/new-roof-kreuzberg/\">пример</a>.</p>",
], true ), 'post krovlya' );
$ids['attachment'] = orch_check( wp_insert_attachment( [
    'post_mime_type' => 'image/png', 'post_title' => 'roof', 'post_status' => 'inherit', 'guid' => $upload_url,
], $upload_file, $ids['roof'], true ), 'attachment' );
$meta = wp_generate_attachment_metadata( $ids['attachment'], $upload_file );
wp_update_attachment_metadata( $ids['attachment'], $meta );
set_post_thumbnail( $ids['roof'], $ids['attachment'] );

// URLs hidden in serialized and JSON-escaped values (what a naive search-replace breaks)
$json = json_encode( [ 'link' => "$url/services/", 'home' => $url ] );
update_post_meta( $ids['roof'], '_orch_json', wp_slash( $json ) );  // meta functions unslash
update_option( 'orch_test_widget', [ 'url' => $url, 'html' => "<a href=\"$url/x\">Кровля</a>" ] );
update_option( 'orch_test_json', json_encode( [ 'url' => $url, 'links' => [ "$url/a", "$url/b" ] ] ) );
update_option( 'widget_text', [
    2 => [ 'title' => 'Kontakt', 'text' => "<a href=\"$url/services/\">Services</a>", 'filter' => false ],
    '_multiwidget' => 1,
] );

echo "\nORCH_RESULT=" . json_encode( [ 'post_ids' => $ids ] ) . "\n";
"""


def _result(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("ORCH_RESULT="):
            return json.loads(line.removeprefix("ORCH_RESULT="))
    raise TestbedError(f"WordPress install printed no result:\n{stdout[-3000:]}")


def _png(width: int, height: int) -> bytes:
    """A small valid RGB PNG (a roof-red gradient)."""
    rows = b"".join(b"\0" + bytes(c for x in range(width) for c in (160 + x, 40 + y, 30)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None
