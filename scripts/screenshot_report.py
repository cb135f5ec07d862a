"""Take a PNG screenshot of the governance validation report with headless Chromium.

Usage::

    python scripts/screenshot_report.py                      # settings' index.html
    python scripts/screenshot_report.py --report path/index.html --out report.png
    python scripts/screenshot_report.py --fixture --out /tmp/report.png

``--fixture`` renders a report from the small built-in fixture warehouse (with
one warning and some quarantined rows) in a temporary folder first, so the
page can be reviewed without running the pipeline. Needs
``/usr/bin/chromium`` (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def screenshot(report: Path, out: Path, *, chromium: str, width: int, height: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            report.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.exists():
        raise SystemExit(f"chromium did not write {out}")
    return out


def render_fixture_report(workdir: Path) -> Path:
    """Build the fixture warehouse in ``workdir`` and validate it (report only)."""
    os.environ["SEGMENTS_WAREHOUSE_DIR"] = str(workdir / "warehouse")
    os.environ["SEGMENTS_REPORTS_DIR"] = str(workdir / "reports")
    from segment_tools.validation_fixture import build_fixture_warehouse

    from segment_warehouse.config import get_settings
    from segment_warehouse.validation import validate_layer
    from segment_warehouse.warehouse import warehouse

    settings = get_settings()
    with warehouse(settings=settings) as con:
        build_fixture_warehouse(con)
        # One visible warning so the preview shows what reviewers would see.
        con.execute(
            "update staging.stg_crm__contacts set email = 'not-an-email' where contact_id = 'k2'"
        )
    validate_layer(["raw", "staging", "marts"], run_id="preview__warehouse", settings=settings)
    validate_layer("segments", run_id="preview__segments", settings=settings)
    return settings.validation_reports_dir / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="index.html to capture")
    parser.add_argument("--out", type=Path, default=Path("validation_report.png"))
    parser.add_argument("--fixture", action="store_true", help="render from fixture data first")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)

    if args.fixture:
        workdir = Path(tempfile.mkdtemp(prefix="validation-preview-"))
        report = render_fixture_report(workdir)
    elif args.report:
        report = args.report
    else:
        from segment_warehouse.config import get_settings

        report = get_settings().validation_reports_dir / "index.html"
    if not report.exists():
        raise SystemExit(f"no report at {report}; run the validation first or use --fixture")
    png = screenshot(report, args.out, chromium=args.chromium, width=args.width, height=args.height)
    print(f"report: {report}\nscreenshot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
