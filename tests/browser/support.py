"""What the browser tests share: the two widths, screenshots, the Content-Security-Policy watch, axe-core."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("HPAWEB_SCREENSHOTS_DIR") or REPO_ROOT / "var" / "screenshots")
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
PASSWORD = "a-long-test-password"
# axe-core as the npm registry ships it (package-lock.json), copied under static/ by `make venv`.
AXE_JS = REPO_ROOT / "static" / "vendor" / "axe.min.js"
AXE_URL = "/static/vendor/axe.min.js"

# Every page reports Content-Security-Policy violations into window.cspViolations (an init script
# runs outside the page's policy) and Chromium logs them on the console; both are collected.
CSP_LISTENER = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} on ${location.pathname}`);
});
"""


def watch_csp(context) -> list[str]:
    """Console messages about the Content-Security-Policy from every page of `context`."""
    messages: list[str] = []
    context.add_init_script(CSP_LISTENER)
    context.on(
        "console",
        lambda message: messages.append(message.text) if "Content Security Policy" in message.text else None,
    )
    return messages


def csp_violations(page) -> list[str]:
    return page.evaluate("window.cspViolations || []")


def wait_until(page, expression: str, *, timeout_ms: int = 30_000) -> None:
    """Poll a page expression until it is true (wait_for_function compiles its predicate in the page, which the
    Content-Security-Policy forbids)."""
    for _ in range(timeout_ms // 50):
        if page.evaluate(expression):
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"{expression} stayed false for {timeout_ms} ms on {page.url}")


def shot(page, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Lazy images below the fold would show as empty boxes in a full-page picture.
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach((image) => { image.loading = 'eager'; })")
    for _ in range(200):
        if page.evaluate("() => [...document.images].every((image) => image.complete)"):
            break
        page.wait_for_timeout(50)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=full_page)


def axe_serious(page) -> list[str]:
    """axe-core's serious and critical violations on the page, served from the app's own static files."""
    if not AXE_JS.exists():
        pytest.fail(f"axe-core is missing at {AXE_JS}; run `make venv` (npm ci, then the copy into static/vendor/).")
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(url=AXE_URL)
    found = page.evaluate(
        """async () => {
          const result = await axe.run(document, { resultTypes: ["violations"] });
          return result.violations
            .filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 4).map((n) => n.target.join(" ")).join("; ")}`);
        }"""
    )
    return [f"{page.url}: {line}" for line in found]


def sign_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
