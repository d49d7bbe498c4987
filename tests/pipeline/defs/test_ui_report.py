"""The HTML report reachable from the Dagster UI (issue 26).

The UI renders Markdown metadata (images as data URIs, GitHub tables) but not raw HTML, and a
browser refuses a ``file://`` link from the UI's page; so ``performance_report`` carries the
whole report as Markdown (``report``), and a ``report_url`` when ``$ML4T_REPORT_BASE_URL`` names
a server of the stored ``performance_report`` folder.
"""

from __future__ import annotations

import functools
import re
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from ml4t_pipeline.defs.assets_backtest import REPORT_BASE_URL_ENV, report_url
from ml4t_pipeline.lib.html_markdown import html_to_markdown
from ml4t_pipeline.runner import materialize_experiment
from tests.pipeline.helpers import demo_config

PIXEL = "data:image/png;base64,iVBORw0KGgo="


def test_html_to_markdown_headings_tables_images_code_and_skipped_style() -> None:
    html = f"""<!DOCTYPE html><html><head><title>t</title><style>h1 {{ color: red; }}</style>
    </head><body><h1>ml4t experiment: demo</h1>
    <table class="lineage"><tbody><tr><th scope="row">config_hash</th><td><code>ab12</code></td>
    </tr><tr><th scope="row">run_id</th><td><code>r-1</code></td></tr></tbody></table>
    <section><h2>Headline   metrics</h2>
    <table><thead><tr><th>metric</th><th>value</th></tr></thead>
    <tbody><tr><th>sharpe</th><td>0.38</td></tr><tr><th>a|b</th><td class="neg">-1.00%</td></tr>
    </tbody></table></section>
    <figure><img src="{PIXEL}" alt="Equity [and] drawdown"><figcaption>3 bars &amp; more
    </figcaption></figure><p class="note">Net <strong>P&amp;L</strong><br>by reason.</p>
    </body></html>"""
    assert html_to_markdown(html) == (
        "# ml4t experiment: demo\n\n"
        "|   |   |\n|---|---|\n| config_hash | `ab12` |\n| run_id | `r-1` |\n\n"
        "## Headline metrics\n\n"
        "| metric | value |\n|---|---|\n| sharpe | 0.38 |\n| a\\|b | -1.00% |\n\n"
        f"![Equity and drawdown]({PIXEL})\n\n"
        "3 bars & more\n\n"
        "Net **P&L** by reason.\n"
    )


def test_html_to_markdown_empty_page_is_empty() -> None:
    assert html_to_markdown("<html><head><style>p {}</style></head><body></body></html>") == ""


def test_report_url_joins_base_and_experiment_file() -> None:
    assert report_url("http://127.0.0.1:8765/", "demo") == "http://127.0.0.1:8765/demo.html"
    assert report_url("http://host/reports", "sp500_top25") == (
        "http://host/reports/sp500_top25.html"
    )


def _serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_demo_report_materialization_holds_report_markdown_and_served_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "storage"
    (storage / "performance_report").mkdir(parents=True)
    server, base = _serve(storage / "performance_report")
    try:
        monkeypatch.setenv(REPORT_BASE_URL_ENV, base)
        instance = dg.DagsterInstance.ephemeral()
        result = materialize_experiment(
            demo_config(tmp_path / "configs"), storage, instance=instance
        )
        assert result.success
        record = instance.fetch_materializations(
            dg.AssetKey("performance_report"), limit=1
        ).records[0]
        materialization = record.event_log_entry.asset_materialization
        assert materialization is not None
        meta = materialization.metadata
        html = (storage / "performance_report" / "demo.html").read_text(encoding="utf-8")

        # the whole report, as Markdown the UI renders: every section, every plot
        markdown = meta["report"]
        assert isinstance(markdown, dg.MarkdownMetadataValue)
        text = markdown.value
        headings = re.findall(r"<h2>(.*?)</h2>", html)
        assert len(headings) >= 8, headings
        for heading in headings:
            assert f"\n## {heading.replace('&amp;', '&')}\n" in text, heading
        images = re.findall(r'<img src="(data:image/png;base64,[^"]+)"', html)
        assert images and re.findall(r"!\[[^\]]*\]\((data:image/png;base64,[^)]+)\)", text) == (
            images
        )
        shown_sharpe = re.search(r"<th[^>]*>sharpe</th><td[^>]*>([^<]+)</td>", html)
        assert shown_sharpe is not None
        assert f"| sharpe | {shown_sharpe.group(1)} |" in text

        # the link opens the stored HTML file, byte for byte
        url = meta["report_url"]
        assert isinstance(url, dg.UrlMetadataValue)
        assert url.value == f"{base}/demo.html"
        with urllib.request.urlopen(url.value, timeout=10) as response:
            assert response.read() == html.encode("utf-8")
    finally:
        server.shutdown()
        server.server_close()
