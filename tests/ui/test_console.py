"""The web console in a real browser (Debian's Chromium, driven by Playwright) against a real
tasq with auth on: the queue list, live updates, the keyboard, a dead letter redriven from
the page and then dispatched, a paused queue's task explained, and a viewer key that sees no
action and is refused when it tries one. Each page is written to SCREENSHOTS as a PNG.

Waits are Playwright's own (up to its default 30 s per expectation), never fixed sleeps.
"""

import re

from conftest import q, shot, sign_in
from playwright.sync_api import expect


def add(tasq, ns, name, task, kind="activity"):
    return tasq.ok("POST", q(ns, name, kind) + "/tasks", task, role="producer")["task_id"]


def kill(tasq, ns, name, task_id, message):
    """Adds a task allowed one attempt, takes it as a worker and fails it: a dead letter."""
    add(tasq, ns, name, {"task_type": "charge", "task_id": task_id, "retry": {"max_attempts": 1},
                         "payload": {"order": task_id}})
    tasks = tasq.ok("POST", q(ns, name) + "/poll",
                    {"identity": "worker-1", "max_tasks": 1, "wait_ms": 0, "task_types": ["charge"]},
                    role="worker")["tasks"]
    assert [t["task_id"] for t in tasks] == [task_id]
    tasq.ok("POST", f"/api/v1/leases/{tasks[0]['lease']}/fail",
            {"error": {"message": message, "type": "CardDeclined"}}, role="worker")


def test_queue_list_is_live_sortable_and_keyboard_navigable(tasq, page):
    for i in range(3):
        add(tasq, "shop", "orders", {"task_type": "send-email", "payload": {"n": i},
                                     "fairness_key": f"tenant-{i % 2}"})
    add(tasq, "billing", "invoices", {"task_type": "render-pdf"})
    sign_in(page, tasq, "admin")
    rows = page.locator("main table tbody tr")
    expect(rows.filter(has_text="orders")).to_have_count(1)
    expect(rows.filter(has_text="invoices")).to_have_count(1)
    # Sorted by backlog, largest first: orders (3) above invoices (1).
    expect(rows.first).to_contain_text("orders")
    page.get_by_role("button", name=re.compile("^Queue")).click()
    expect(rows.first).to_contain_text("invoices")

    # A queue made while the page is open shows up without a reload.
    add(tasq, "shop", "late-arrival", {"task_type": "t"})
    expect(rows.filter(has_text="late-arrival")).to_have_count(1)
    shot(page, "queues")

    # Tab from the filter box to the first queue link, then Enter opens it.
    page.get_by_label("Filter queues").fill("orders")
    expect(rows).to_have_count(1)
    page.get_by_label("Filter queues").focus()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "orders":
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("shop / orders")


def test_queue_and_task_pages(tasq, page):
    tasq.ok("POST", q("shop", "mail") + "/poll",
            {"identity": "mailer-v2", "max_tasks": 1, "wait_ms": 0, "task_types": ["send-email"],
             "build_id": "v2"}, role="worker")
    tasq.ok("POST", q("shop", "mail") + "/poll",
            {"identity": "mailer-v1", "max_tasks": 1, "wait_ms": 0,
             "task_types": ["send-email", "send-sms"], "build_id": "v1"}, role="worker")
    tid = add(tasq, "shop", "mail", {"task_type": "send-email", "payload": {"to": "a@example.com"},
                                     "headers": {"trace-id": "abc"}, "priority": 2})
    sign_in(page, tasq, "admin", "q/shop/mail")
    activity = page.get_by_role("region", name="activity")
    expect(activity.locator(".mismatch")).to_contain_text("mailer-v1 (build v1) run [send-email, send-sms]")
    expect(activity.get_by_role("cell", name="mailer-v2")).to_be_visible()
    expect(activity.locator(".chart")).to_have_count(4)
    # The charts fill in live: a second sample arrives without a reload.
    expect(activity.locator(".chart").first).not_to_contain_text("collecting")
    shot(page, "queue")

    page.goto(f"{tasq.base}/ui#/t/shop/mail/activity/pending?task_type=send-email")
    expect(page.get_by_role("link", name=tid)).to_be_visible()
    shot(page, "tasks")
    page.get_by_role("link", name=tid).click()
    expect(page.locator(".payload")).to_contain_text("a@example.com")
    expect(page.get_by_text('"trace-id": "abc"')).to_be_visible()
    expect(page.locator(".reasons li").first).to_have_attribute("data-code", re.compile(".+"))
    shot(page, "task")

    # Cancel from the task page (the operator key is admin and producer).
    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator("#banner")).to_contain_text(f"Task {tid} cancelled")
    expect(page.get_by_role("heading", name="State: cancelled")).to_be_visible()
    assert tasq.ok("GET", q("shop", "mail") + f"/tasks/{tid}", role="producer")["state"] == "cancelled"


def test_dead_letter_is_redriven_from_the_page_then_dispatched(tasq, page):
    kill(tasq, "shop", "payments", "order-17", "card declined")
    kill(tasq, "shop", "payments", "order-18", "insufficient funds")
    sign_in(page, tasq, "admin", "dl/shop/payments/activity")
    rows = page.locator("main table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="order-17")).to_contain_text("card declined")
    shot(page, "dead-letters")

    page.get_by_label("Select order-17").check()
    page.get_by_role("button", name="Redrive selected (1)").click()
    expect(page.locator("#banner")).to_contain_text("1 selected dead letters redriven")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("order-18")

    # The redriven task is dispatched again, with its attempts reset.
    tasks = tasq.ok("POST", q("shop", "payments") + "/poll",
                    {"identity": "worker-2", "max_tasks": 10, "wait_ms": 5000},
                    role="worker")["tasks"]
    assert [t["task_id"] for t in tasks] == ["order-17"], tasks
    assert tasks[0]["attempt"] == 1
    tasq.ok("POST", f"/api/v1/leases/{tasks[0]['lease']}/complete", {"result": {"paid": True}},
            role="worker")
    status = tasq.ok("GET", q("shop", "payments") + "/tasks/order-17", role="producer")
    assert status["state"] == "completed"

    # "Redrive all" asks once more before it acts.
    page.get_by_role("button", name="Redrive all").click()
    page.get_by_role("button", name=re.compile("^Confirm: redrive all")).click()
    expect(page.get_by_text("No dead letters.")).to_be_visible()


def test_paused_queue_task_page_explains_paused(tasq, page):
    sign_in(page, tasq, "admin", "q/shop/slow")
    activity = page.get_by_role("region", name="activity")
    activity.get_by_role("button", name="Pause").click()
    expect(activity.locator(".limit")).to_have_text("paused")
    assert tasq.ok("GET", "/api/v1/namespaces/shop/task-queues/slow")["types"]["activity"][
        "rate_limit"]["max_tasks_per_second"] == 0
    tid = add(tasq, "shop", "slow", {"task_type": "resize"})
    page.goto(f"{tasq.base}/ui#/task/shop/slow/activity/{tid}")
    expect(page.locator('.reasons li[data-code="paused"]')).to_contain_text("paused")
    shot(page, "task-paused")

    page.goto(f"{tasq.base}/ui#/q/shop/slow")
    activity.get_by_role("button", name="Resume").click()
    expect(activity.locator(".limit")).to_have_text("no limit")


def test_viewer_sees_no_actions_and_is_refused(tasq, page):
    kill(tasq, "shop", "audit", "order-99", "timeout")
    tid = add(tasq, "shop", "audit", {"task_type": "charge"})
    sign_in(page, tasq, "viewer", "q/shop/audit")
    activity = page.get_by_role("region", name="activity")
    expect(activity.get_by_text("Dispatch limit:")).to_be_visible()
    for name in ["Pause", "Resume", "Save limit"]:
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    page.goto(f"{tasq.base}/ui#/dl/shop/audit/activity")
    expect(page.locator("main table tbody tr")).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile("Redrive"))).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    page.goto(f"{tasq.base}/ui#/task/shop/audit/activity/{tid}")
    expect(page.locator(".reasons li")).not_to_have_count(0)
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)

    # The page's own key, used by hand for a change, is refused and changes nothing.
    answer = page.evaluate("""async (path) => {
        const r = await fetch(path, {method: 'PUT', headers: {
            Authorization: 'Bearer ' + sessionStorage.getItem('tasq.key'),
            'Content-Type': 'application/json'}, body: JSON.stringify({max_tasks_per_second: 0})});
        return [r.status, await r.json()];
    }""", q("shop", "audit") + "/config")
    assert answer[0] == 403 and answer[1]["error"]["code"] == "permission_denied", answer
    stats = tasq.ok("GET", "/api/v1/namespaces/shop/task-queues/audit", role="viewer")
    assert stats["types"]["activity"]["rate_limit"]["source"] == "none"


def test_sign_in_refuses_a_wrong_key_and_sign_out_forgets(tasq, page):
    page.goto(f"{tasq.base}/ui")
    page.get_by_label("API key").fill("tq_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#banner")).to_contain_text("not valid")
    shot(page, "sign-in")
    sign_in(page, tasq, "viewer")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('tasq.key')") is None


def test_phone_and_dark_mode(tasq, browser):
    add(tasq, "shop", "orders", {"task_type": "send-email"})
    phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                is_mobile=True, has_touch=True)
    page = phone.new_page()
    sign_in(page, tasq, "admin", "q/shop/orders")
    expect(page.get_by_role("region", name="activity").locator(".chart")).to_have_count(4)
    # Nothing wider than the screen but the tables' own scroll boxes.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 17, 21)", background
    shot(page, "queue-phone-dark")
    phone.close()
