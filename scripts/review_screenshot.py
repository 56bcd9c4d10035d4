"""Screenshots of the review App on queues: the grid, then its first sample open.

    python scripts/review_screenshot.py DATASET [--queue swap --queue badloc] [--out docs/review]

writes docs/review-<queue>-grid.png and docs/review-<queue>-sample.png (and docs/review.png, the
first queue's sample view, for the README).

Needs Debian's chromium and chromium-driver and the selenium package; the dataset must be scored.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--queue", action="append", default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/review"))
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from cvcurate import store

    queues = args.queue or ["swap", "badloc"]
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-dev-shm-usage", "--window-size=1500,950"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for n, queue in enumerate(queues):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            session = store.launch_app(args.dataset, f"cvc-{queue}", port=port, address="127.0.0.1", remote=True)
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                t0 = time.time()
                while time.time() - t0 < 90 and not driver.find_elements("css selector", '[data-cy="looker"]'):
                    time.sleep(0.5)
                time.sleep(3)
                for b in driver.find_elements("xpath", "//*[normalize-space(text())='Dismiss']"):
                    try:
                        b.click()
                    except Exception:  # noqa: BLE001
                        pass
                time.sleep(1)
                grid = args.out.parent / f"{args.out.name}-{queue}-grid.png"
                driver.save_screenshot(str(grid))
                driver.find_elements("css selector", '[data-cy="looker"]')[0].click()
                time.sleep(6)
                sample = args.out.parent / f"{args.out.name}-{queue}-sample.png"
                driver.save_screenshot(str(sample))
                print(f"wrote {grid} and {sample}")
                if n == 0:
                    driver.save_screenshot(str(args.out.parent / f"{args.out.name}.png"))
            finally:
                session.close()
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
