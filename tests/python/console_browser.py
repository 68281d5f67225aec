"""Drives the web console in a real headless browser (Debian's chromium,
through Playwright) against a running server, as a user would.

Usage: python console_browser.py BASE_URL TOKEN SCREENSHOT_DIR [browse]
TOKEN may be "" for a server without auth; `browse` stops after the
table browser. Prints a JSON report of what
the page showed; exits non-zero (with the reason) when a step fails.
"""

import json
import os
import sys

from playwright.sync_api import expect, sync_playwright

base, token, shots = sys.argv[1], sys.argv[2], sys.argv[3]
browse_only = sys.argv[4:] == ["browse"]
CHROMIUM = os.environ.get("ALLSOURCE_CHROMIUM", "/usr/bin/chromium")
report = {}
problems = []

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(base + "/")

    def shot(name):
        page.screenshot(path=os.path.join(shots, name + ".png"), full_page=True)

    if token:
        expect(page.locator("#login")).to_be_visible()
        report["login_asked"] = True
        page.fill("#token", "not-a-token")
        page.click("#login-button")
        expect(page.locator("#login-error")).not_to_be_empty()
        report["bad_token_error"] = page.inner_text("#login-error")
        shot("1-login-refused")
        page.fill("#token", token)
        page.click("#login-button")
        expect(page.locator("#login")).to_be_hidden()
        # A 401 on a page load is the only console error the login causes.
        problems[:] = [m for m in problems if "401" not in m]

    tables = page.locator("#tables li")
    expect(tables.first).to_be_visible()
    report["tables"] = tables.all_inner_texts()
    page.locator("#tables li", has_text="events").first.click()
    expect(page.locator("#tables li.column").first).to_be_visible()
    report["columns"] = page.locator("#tables li.column").all_inner_texts()
    report["editor_after_click"] = page.input_value("#editor")
    report["login_asked"] = page.is_visible("#login") or report.get("login_asked", False)
    shot("2-browser")
    if browse_only:
        browser.close()
        print(json.dumps(report))
        sys.exit(0)

    def run(mode, text):
        page.check("#mode-" + mode)
        page.fill("#editor", text)
        page.click("#run")

    run("sql", "SELECT date_trunc('hour', timestamp) AS hour, count(*) AS n, "
               "sum(amount) AS amount FROM events GROUP BY 1 ORDER BY 1")
    expect(page.locator("#grid")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("rows in")
    report["series_rows"] = page.locator("#grid tbody tr").count()
    report["series_header"] = page.locator("#grid thead th").all_inner_texts()
    expect(page.locator("#chart[data-kind=timeseries]")).to_be_visible()
    report["series_lines"] = page.locator("#chart path.series").count()
    report["status"] = page.inner_text("#status")
    shot("3-timeseries")

    run("dsl", json.dumps({
        "from": "events",
        "funnel": {"steps": [["=", "event_type", "view"], ["=", "event_type", "buy"]],
                   "window": "1 day"},
    }))
    expect(page.locator("#chart[data-kind=funnel]")).to_be_visible()
    report["funnel_bars"] = page.locator("#chart rect.bar").count()
    report["funnel_users"] = [
        row.locator("td").nth(1).inner_text() for row in page.locator("#grid tbody tr").all()
    ]
    report["funnel_header"] = page.locator("#grid thead th").all_inner_texts()
    shot("4-funnel")

    run("sql", "SELECT nosuch_column FROM events")
    expect(page.locator("#error")).to_be_visible()
    report["error"] = page.inner_text("#error")
    shot("5-error")

    report["history"] = page.locator("#history li").all_inner_texts()
    page.locator("#history li").nth(1).click()
    report["mode_after_history"] = "dsl" if page.is_checked("#mode-dsl") else "sql"
    browser.close()

# A failed request shows in the console as an error too; only script
# errors (and Content-Security-Policy refusals) count as problems.
report["problems"] = [m for m in problems if "Failed to load resource" not in m]
print(json.dumps(report))
