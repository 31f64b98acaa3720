"""Render a page of the built documentation in headless Chromium, as a reader sees it.

    python -m sphinx -W -b html docs build/docs        # build the site first
    python docs/screenshot.py                           # -> build/screenshots/tutorial.png
    python docs/screenshot.py --page api --height 4000 --tiles 3

Needs Chromium (Debian: ``apt-get install chromium``); with ``--tiles N`` also matplotlib
(the docs extra), to cut the tall screenshot into N pieces that an image viewer shows at
a readable size. Screenshots are build outputs: not committed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit(f"no Chromium found (tried {', '.join(BROWSERS)}): apt-get install chromium")


def screenshot(html, out, width, height):
    """Chromium's screenshot of ``html`` (a file) at width x height CSS pixels."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={out}",
               "file://" + os.path.abspath(html)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not os.path.isfile(out):
        sys.exit(f"Chromium failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def tiles(path, n):
    """Cut the PNG at ``path`` into ``n`` horizontal bands, path-1.png .. path-n.png."""
    import matplotlib.image as mpimg

    image = mpimg.imread(path)
    rows = image.shape[0]
    written = []
    for i in range(n):
        band = image[i * rows // n:(i + 1) * rows // n]
        name = f"{os.path.splitext(path)[0]}-{i + 1}.png"
        mpimg.imsave(name, band)
        written.append(name)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", default=os.path.join(REPO, "build", "docs"),
                        help="the built site (default build/docs)")
    parser.add_argument("--page", default="tutorial", help="page name (default tutorial)")
    parser.add_argument("--out", help="PNG (default build/screenshots/PAGE.png)")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=9000,
                        help="CSS pixels rendered; the page below is cut off")
    parser.add_argument("--tiles", type=int, default=0,
                        help="also cut the screenshot into this many bands")
    args = parser.parse_args(argv)
    html = os.path.join(args.html, f"{args.page}.html")
    if not os.path.isfile(html):
        sys.exit(f"{html} does not exist: build the site first "
                 f"(python -m sphinx -W -b html docs build/docs)")
    out = args.out or os.path.join(REPO, "build", "screenshots", f"{args.page}.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    screenshot(html, out, args.width, args.height)
    print(out)
    for name in tiles(out, args.tiles) if args.tiles > 1 else []:
        print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
