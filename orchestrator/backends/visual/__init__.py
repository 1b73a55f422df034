"""Visual checks: headless Chromium screenshots (browser), their comparison (diff), where they are kept (shots)
and which pages are checked (urls). Playwright and Pillow are imported only by the modules that need them."""
