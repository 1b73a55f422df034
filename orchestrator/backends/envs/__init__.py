"""Where staging environments live: a folder and a database on a host, and a vhost in its web server."""
