#!/usr/bin/env python3
"""Headless-browser test of the sqlvigil web console (api/console/).

    python3 tests/browser/console_test.py --base http://127.0.0.1:18080 \
        --operator-token svk_... --viewer-token svk_... --shots /tmp/shots [--timeout 120]

Against a running sqlvigil (tests/e2e_browser.rs starts `sqlvigil demo` and runs this)
whose first anomaly opens after the test has started: it signs in with a bad
token (refused, clearly), then the operator token; waits until an anomaly arrives LIVE
through the stream (the open list was empty, or did not have it, and the page was not
reloaded), opens it (evidence chart drawn, root-cause summary shown), acknowledges and
silences it and sees that; opens the fleet and the anomaly's instance; signs out, signs
in as a viewer and checks the anomaly page has no operator buttons. A PNG of each page
(fleet, instance, anomaly, viewer-anomaly) goes to --shots. Any uncaught JS error, any
request leaving the console's origin, or any wait running out fails the run (exit 1).

Needs the `playwright` package (pip) and a Chromium at --chromium (Debian `chromium`);
never downloads a browser.
"""
import argparse
import json
import os
import re
import sys
import time
import traceback
import urllib.parse

from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
]
TOKEN_KEY = 'sqlvigil.token'

# Finds an anomaly that arrived through the stream and was not in the list at first:
# a toast announcing it, or a row the stream put in a list.
LIVE_ARRIVAL_JS = """(known) => {
  const seen = new Set(known);
  const found = [];
  for (const t of document.querySelectorAll('[data-testid=toast][data-kind="anomaly.open"]')) {
    const id = t.getAttribute('data-anomaly-id');
    if (id && !seen.has(id)) found.push({id, via: 'toast', severity: null});
  }
  for (const r of document.querySelectorAll('[data-testid=open-anomalies] [data-testid=anomaly-row][data-live=true]')) {
    const id = r.getAttribute('data-anomaly-id');
    if (id && !seen.has(id)) found.push({id, via: 'row', severity: r.getAttribute('data-severity')});
  }
  return found.length ? found : null;
}"""


class Failure(Exception):
    pass


class Run:
    def __init__(self, args):
        self.args = args
        self.base = args.base.rstrip('/')
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.timeout
        self.step_name = 'start'
        self.js_errors = []
        self.console_errors = []
        self.foreign = []
        self.notes = []

    # -- bookkeeping -------------------------------------------------------------
    def ms(self, cap_s):
        """A wait's timeout: `cap_s`, or what is left of the run's budget if less."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failure(f'the run is over its {self.args.timeout:.0f} s budget')
        return int(max(0.5, min(cap_s, left)) * 1000)

    def step(self, name):
        self.check_js()
        self.step_name = name
        print(f'[{time.monotonic() - self.t0:6.1f}s] {name}', flush=True)

    def check_js(self):
        if self.js_errors:
            raise Failure('JavaScript error in the page: ' + ' | '.join(self.js_errors))
        # A refused request (401 of the bad token, …) is logged as "Failed to load
        # resource"; that is the API answering, not a script error.
        script = [m for m in self.console_errors if 'Failed to load resource' not in m]
        if script:
            raise Failure('console error in the page: ' + ' | '.join(script))
        if self.foreign:
            raise Failure('the page loaded something from outside its origin: ' + ', '.join(self.foreign))

    def shot(self, page, name, keep_toasts=False):
        if not keep_toasts:  # fixed toasts would cover the page in a full-page shot
            page.evaluate("document.querySelectorAll('[data-testid=toast]').forEach((t) => t.remove())")
        path = os.path.join(self.args.shots, name + '.png')
        page.screenshot(path=path, full_page=True)
        print(f'         screenshot {path}', flush=True)

    def expect(self, cond, message):
        if not cond:
            raise Failure(message)

    # -- helpers -----------------------------------------------------------------
    def sign_in(self, page, token, role):
        page.wait_for_selector('[data-testid=login-form]', state='visible', timeout=self.ms(15))
        page.fill('[data-testid=token-input]', token)
        page.click('[data-testid=login-submit]')
        page.wait_for_selector('[data-testid=whoami-role]', state='visible', timeout=self.ms(20))
        shown = page.inner_text('[data-testid=whoami-role]').strip().lower()
        self.expect(shown == role, f'signed in as role {shown!r}, expected {role!r}')
        stored = page.evaluate(f'sessionStorage.getItem({json.dumps(TOKEN_KEY)})')
        self.expect(stored == token, 'the token is not kept in sessionStorage')
        self.expect(page.evaluate(f'localStorage.getItem({json.dumps(TOKEN_KEY)})') is None, 'the token was written to localStorage')
        self.expect(token not in page.url, 'the token is in the URL')

    def canvas_ok(self, page, selector):
        box = page.evaluate("""(sel) => {
          const c = document.querySelector(sel);
          if (!c) return null;
          const r = c.getBoundingClientRect();
          return {w: r.width, h: r.height, cw: c.width, ch: c.height};
        }""", selector)
        return bool(box) and box['w'] > 0 and box['h'] > 0 and box['cw'] > 0 and box['ch'] > 0, box

    def wait_canvas(self, page, selector, cap_s):
        page.wait_for_selector(selector, state='attached', timeout=self.ms(cap_s))
        ok, box = self.canvas_ok(page, selector)
        self.expect(ok, f'{selector} has no size: {box}')

    # -- the flow ----------------------------------------------------------------
    def run(self, page):
        a = self.args
        self.step('open the console')
        page.goto(self.base + '/', wait_until='domcontentloaded', timeout=self.ms(20))
        page.wait_for_selector('[data-testid=login-form]', state='visible', timeout=self.ms(15))
        page.wait_for_function(
            "document.querySelector('[data-testid=pipeline-status]').getAttribute('data-state') !== 'unknown'",
            timeout=self.ms(15))

        self.step('a bad token is refused with a clear message')
        page.fill('[data-testid=token-input]', 'svk_000000000000_' + '0' * 48)
        page.click('[data-testid=login-submit]')
        page.wait_for_selector('[data-testid=login-error]', state='visible', timeout=self.ms(15))
        msg = page.inner_text('[data-testid=login-error]')
        self.expect('refused' in msg.lower(), f'login error does not say the token was refused: {msg!r}')
        self.expect(page.evaluate(f'sessionStorage.getItem({json.dumps(TOKEN_KEY)})') is None, 'a refused token was kept')

        self.step('sign in as operator')
        self.sign_in(page, a.operator_token, 'operator')
        page.wait_for_selector('[data-testid=open-anomalies][data-loaded=true]', timeout=self.ms(30))
        known = page.evaluate("""() => [...document.querySelectorAll('[data-testid=anomaly-row]')].map((r) => r.getAttribute('data-anomaly-id'))""")
        open_at_start = page.evaluate("""() => document.querySelectorAll('[data-testid=open-anomalies] [data-testid=anomaly-row]').length""")
        if open_at_start:
            self.notes.append(f'{open_at_start} anomalies were already open at sign-in; waiting for a new one')
        else:
            print('         the open-anomaly list is empty at first', flush=True)
        page.evaluate("window.__consoleTestMarker = 'not reloaded'")

        self.step('an anomaly arrives live through the stream')
        handle = page.wait_for_function(LIVE_ARRIVAL_JS, arg=known, timeout=self.ms(a.timeout), polling=250)
        arrivals = handle.json_value()
        first = arrivals[0]['id']
        print(f'         arrived live: {first} (via {arrivals[0]["via"]})', flush=True)
        self.expect(page.evaluate('window.__consoleTestMarker') == 'not reloaded', 'the page reloaded to show the anomaly')
        page.wait_for_selector(f'[data-testid=open-anomalies] [data-anomaly-id="{first}"]', timeout=self.ms(10))
        # Prefer a critical one (the demo's incidents last): give it a few seconds.
        chosen = first
        try:
            h = page.wait_for_function(
                """(known) => { const r = [...document.querySelectorAll('[data-testid=open-anomalies] [data-testid=anomaly-row][data-live=true][data-severity=critical]')]
                  .find((x) => !known.includes(x.getAttribute('data-anomaly-id'))); return r ? r.getAttribute('data-anomaly-id') : null; }""",
                arg=known, timeout=self.ms(20), polling=250)
            chosen = h.json_value()
        except Exception:  # noqa: BLE001 - no critical one: the first will do
            self.notes.append('no critical anomaly arrived within 20 s; using the first')
        print(f'         opening {chosen}', flush=True)

        self.step('open the anomaly: evidence chart and root cause')
        page.click(f'[data-testid=open-anomalies] [data-anomaly-id="{chosen}"]')
        page.wait_for_selector(f'[data-testid=anomaly-page][data-anomaly-id="{chosen}"]', timeout=self.ms(15))
        self.wait_canvas(page, '[data-testid=evidence-chart][data-rendered=true] canvas', 30)
        page.wait_for_selector('[data-testid=root-cause][data-loaded=true]', timeout=self.ms(60))
        summary = page.inner_text('[data-testid=rc-summary]').strip()
        self.expect(summary and summary != 'No summary.', f'root-cause summary is empty: {summary!r}')
        print(f'         root cause: {summary[:140]}', flush=True)
        for b in ('acknowledge', 'resolve', 'silence'):
            self.expect(page.is_visible(f'[data-testid=btn-{b}]'), f'operator does not see the {b} button')
        instance = page.get_attribute('[data-testid=instance-link]', 'href')
        instance = urllib.parse.unquote(instance.split('/instance/', 1)[1].split('?')[0])

        self.step('acknowledge it')
        page.fill('[data-testid=action-note]', 'looking into it (browser test)')
        page.click('[data-testid=btn-acknowledge]')
        page.wait_for_function(
            "document.querySelector('[data-testid=anomaly-handling]') && document.querySelector('[data-testid=anomaly-handling]').innerText.includes('Acknowledged by')",
            timeout=self.ms(15))
        self.expect(page.is_disabled('[data-testid=btn-acknowledge]'), 'Acknowledge is still enabled after acknowledging')
        page.wait_for_selector('[data-testid=audit-row][data-action=acknowledge]', timeout=self.ms(15))
        self.expect(not page.is_visible('[data-testid=action-error]'), 'an action error is shown')

        self.step('silence it (duration and reason)')
        page.click('[data-testid=btn-silence]')
        page.wait_for_selector('[data-testid=silence-dialog][open]', timeout=self.ms(5))
        page.click('[data-testid=silence-submit]')  # no reason yet: refused in the dialog
        page.wait_for_selector('[data-testid=silence-error]', state='visible', timeout=self.ms(5))
        page.fill('[data-testid=silence-duration]', '30m')
        page.fill('[data-testid=silence-reason]', 'browser test: planned work')
        page.click('[data-testid=silence-submit]')
        page.wait_for_selector('[data-testid=silence-dialog]:not([open])', state='attached', timeout=self.ms(15))
        page.wait_for_function(
            "document.querySelector('[data-testid=anomaly-handling]').innerText.includes('Silenced until')",
            timeout=self.ms(15))
        page.wait_for_selector('[data-testid=audit-row][data-action=silence]', timeout=self.ms(15))
        self.shot(page, 'anomaly', keep_toasts=True)

        self.step('the fleet')
        page.click('[data-testid=nav-fleet]')
        page.wait_for_selector('[data-testid=fleet][data-loaded=true]', timeout=self.ms(45))
        cards = page.locator('[data-testid=instance-card]').count()
        self.expect(cards >= 1, 'no instance cards on the fleet page')
        self.wait_canvas(page, '[data-testid=spark-cpu] canvas', 10)
        sparks = page.locator('.spark canvas').count()
        self.expect(sparks >= cards, f'only {sparks} sparklines for {cards} instances')
        page.wait_for_selector(f'[data-testid=open-anomalies] [data-anomaly-id="{chosen}"]', timeout=self.ms(10))
        row = page.inner_text(f'[data-testid=open-anomalies] [data-anomaly-id="{chosen}"]')
        self.expect('acknowledged' in row, f'the fleet list does not show the anomaly acknowledged: {row!r}')
        self.expect(page.locator('[data-testid=pipeline-panel] tbody tr').count() >= 1, 'no pipeline parts shown')
        self.shot(page, 'fleet')

        self.step(f'the instance page of {instance}')
        page.click(f'[data-testid=instance-card][data-instance="{instance}"]')
        page.wait_for_selector(f'[data-testid=instance-page][data-instance="{instance}"][data-loaded=true]', timeout=self.ms(60))
        self.wait_canvas(page, '[data-testid=instance-page] [data-testid=chart][data-rendered=true] canvas', 5)
        for part in ('waits-panel', 'top-queries', 'blocking-tree', 'instance-anomalies'):
            self.expect(page.locator(f'[data-testid={part}]').count() == 1, f'the instance page has no {part}')
        self.expect(page.get_attribute('[data-testid=range-1h]', 'aria-pressed') == 'true', 'range 1h is not selected')
        self.shot(page, 'instance')
        page.click('[data-testid=range-15m]')
        page.wait_for_selector(f'[data-testid=instance-page][data-range="15m"][data-loaded=true]', timeout=self.ms(60))

        self.step('sign out')
        page.click('[data-testid=logout]')
        page.wait_for_selector('[data-testid=login-form]', state='visible', timeout=self.ms(10))
        self.expect(page.evaluate(f'sessionStorage.getItem({json.dumps(TOKEN_KEY)})') is None, 'the token is still stored after signing out')
        self.expect(not page.is_visible('[data-testid=view]'), 'the console is still shown after signing out')

        self.step('sign in as viewer: the anomaly without operator buttons')
        self.sign_in(page, a.viewer_token, 'viewer')
        page.evaluate('(h) => { location.hash = h; }', '#/anomaly/' + urllib.parse.quote(chosen, safe=''))
        page.wait_for_selector(f'[data-testid=anomaly-page][data-anomaly-id="{chosen}"][data-loaded=true]', timeout=self.ms(60))
        for sel in ('[data-testid=anomaly-actions]', '[data-testid=btn-acknowledge]', '[data-testid=btn-resolve]', '[data-testid=btn-silence]'):
            self.expect(page.locator(sel).count() == 0, f'a viewer sees {sel}')
        buttons = page.get_by_role('button', name=re.compile(r'acknowledge|resolve|silence', re.I)).count()
        self.expect(buttons == 0, f'a viewer sees {buttons} operator button(s)')
        handling = page.inner_text('[data-testid=anomaly-handling]')
        self.expect('Acknowledged by' in handling, f'the viewer does not see the acknowledgement: {handling!r}')
        self.wait_canvas(page, '[data-testid=evidence-chart][data-rendered=true] canvas', 10)
        self.shot(page, 'viewer-anomaly')
        self.check_js()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--base', required=True, help='the console, e.g. http://127.0.0.1:18080')
    ap.add_argument('--operator-token', required=True)
    ap.add_argument('--viewer-token', required=True)
    ap.add_argument('--shots', required=True, help='directory for the PNG screenshots')
    ap.add_argument('--timeout', type=float, default=120.0, help='budget of the whole run, seconds (default 120)')
    ap.add_argument('--chromium', default='/usr/bin/chromium')
    ap.add_argument('--headed', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    run = Run(args)
    origin = urllib.parse.urlsplit(run.base)
    origin = f'{origin.scheme}://{origin.netloc}'
    code = 1
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=not args.headed, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={'width': 1280, 'height': 800})
            page = context.new_page()
            page.set_default_timeout(15000)
            page.on('pageerror', lambda e: run.js_errors.append(f'{e}'))
            page.on('console', lambda m: run.console_errors.append(m.text) if m.type == 'error' else None)

            def on_request(r):
                u = r.url
                if not (u.startswith(origin + '/') or u == origin or u.startswith('data:') or u.startswith('blob:')):
                    run.foreign.append(u)
            page.on('request', on_request)
            try:
                run.run(page)
                code = 0
            except Exception as e:  # noqa: BLE001 - report whatever failed
                print(f'\nFAILED at step "{run.step_name}": {e}', flush=True)
                if not isinstance(e, Failure):
                    traceback.print_exc()
                if run.js_errors:
                    print('JavaScript errors: ' + ' | '.join(run.js_errors))
                try:
                    run.shot(page, 'failure')
                except Exception:  # noqa: BLE001
                    pass
        finally:
            browser.close()
    for n in run.notes:
        print('note: ' + n)
    took = time.monotonic() - run.t0
    print(('PASSED' if code == 0 else 'FAILED') + f' in {took:.1f} s', flush=True)
    return code


if __name__ == '__main__':
    sys.exit(main())
