"""The HTML template that makes ``dvc plots show`` / ``dvc plots diff`` work offline.

DVC's default page loads Vega from a CDN, so offline (or behind a firewall) it is blank. DVC accepts a
page template of our own (``plots.html_template`` in ``.dvc/config``, or ``--html-template``): ours
inlines pinned copies of vega, vega-lite and vega-embed from ``vendor/vega/`` and leaves out DVC's
``{scripts}`` placeholder, through which DVC would add its CDN ``<script src=...>`` tags. The page
that DVC writes is then one self-contained file: it renders with no network, wherever it is copied.

DVC's plot divs call ``vegaEmbed(element, spec)``; the template keeps that function and only wraps it
to render SVG (crisp, and its marks are DOM elements a test can count) and to log a failed embed on
the console instead of leaving an empty div silently.

Only the tests and the maintainer use this module (no stage imports it). Update the vendored files:

    python -m shrink.offline_plots update     # npm pack of VERSIONS into vendor/vega, rebuilds the template
    python -m shrink.offline_plots build      # rebuild vendor/vega/dvc_plots.html from the vendored files
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .io import sha256_file

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "vendor" / "vega"
TEMPLATE_NAME = "dvc_plots.html"
# Same major versions as DVC's own page (dvc-render 1.0.2 loads vega@5.20.2, vega-lite@5.2.0, vega-embed@6.18.2):
# DVC's plot templates are Vega-Lite v5 specs. package -> (version, file in the npm package's build/)
VERSIONS = {
    "vega": ("5.33.1", "vega.min.js"),
    "vega-lite": ("5.23.0", "vega-lite.min.js"),
    "vega-embed": ("6.29.0", "vega-embed.min.js"),
}

# DVC fills {refresh_tag} and {plot_divs}; there is no {scripts}, so DVC's CDN script tags are dropped.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Offline page: {versions} inlined from vendor/vega (BSD-3-Clause, see vendor/vega/README.md). -->
{scripts_inline}
    <script type="text/javascript">
    // DVC's plot divs call vegaEmbed(el, spec): render SVG, and put a failed embed on the console.
    (function () {
        var embed = window.vegaEmbed;
        window.vegaEmbed = Object.assign(function (el, spec, opt) {
            var result = embed(el, spec, Object.assign({renderer: "svg"}, opt || {}));
            result.catch(function (err) { console.error("vegaEmbed(" + el + ") failed: " + err); });
            return result;
        }, embed);
    })();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def _script(package: str, version: str, js: str) -> str:
    # the source-map comment points at a .map file that is not vendored; a browser would try to load it
    body = "\n".join(line for line in js.splitlines() if not line.startswith("//# sourceMappingURL="))
    if "</script" in body.lower():
        raise ValueError(f"{package}: the script contains '</script' and cannot be inlined")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        if placeholder in body:  # DVC would substitute it inside the library's code
            raise ValueError(f"{package}: the script contains DVC's placeholder {placeholder}")
    return f'    <script type="text/javascript">/* {package} {version} */\n{body}\n    </script>'


def build_template(vendor: Path = VENDOR) -> str:
    """The page template, with the vendored scripts of ``vendor`` inlined.

    Args:
        vendor: folder holding the ``*.min.js`` files named in ``VERSIONS``.
    """
    scripts = []
    for package, (version, name) in VERSIONS.items():
        path = vendor / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing vendored {package} {version} (python -m shrink.offline_plots update)")
        scripts.append(_script(package, version, path.read_text(encoding="utf-8")))
    versions = ", ".join(f"{p} {v}" for p, (v, _) in VERSIONS.items())
    # str.replace, not format: the page's own CSS and JS have braces
    return PAGE.replace("{versions}", versions).replace("{scripts_inline}", "\n".join(scripts))


def update(vendor: Path = VENDOR) -> None:
    """Fetch the pinned packages with ``npm pack`` and copy their minified builds and licenses into ``vendor``."""
    vendor.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package, (version, name) in VERSIONS.items():
            out = subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=tmp, check=True,
                                 capture_output=True, text=True).stdout.split()[-1]
            with tarfile.open(Path(tmp) / out) as tar:
                tar.extractall(Path(tmp) / package, filter="data")
            pkg = Path(tmp) / package / "package"
            shutil.copyfile(pkg / "build" / name, vendor / name)
            if (pkg / "LICENSE").is_file():  # vega's own npm package ships none: vendor/vega/LICENSE.vega is kept
                shutil.copyfile(pkg / "LICENSE", vendor / f"LICENSE.{package}")
    build(vendor)


def build(vendor: Path = VENDOR) -> Path:
    path = vendor / TEMPLATE_NAME
    path.write_text(build_template(vendor), encoding="utf-8")
    for package, (version, name) in VERSIONS.items():
        print(f"{package} {version}  {name}  sha256 {sha256_file(vendor / name)}")
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shrink.offline_plots", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["build", "update"])
    ap.add_argument("--vendor", type=Path, default=VENDOR)
    args = ap.parse_args(argv)
    (update if args.command == "update" else build)(args.vendor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
