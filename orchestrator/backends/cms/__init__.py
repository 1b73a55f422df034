"""CMS-specific helpers (WordPress, Drupal, ...) that work on a site's files and database dumps."""
