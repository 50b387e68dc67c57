"""The staff story in a real browser, by keyboard alone: an editor signs in by the emailed link,
writes a course of three lessons, meets the checker's lock-screen problem and fixes it, previews
the email for two readers (live as they type, with htmx), sends a test to themselves and submits;
a second account reads the changes and signs them off, publishes and offers the course; a reader
signs up for it on the public page and gets lesson 1.

Every staff page on the way has no WCAG 2.2 AA violation by axe-core, its title is its heading,
it is served with the staff Content-Security-Policy, and the browser logs no error (a CSP
violation is logged as one). Every control the keyboard lands on shows a focus ring with 3:1
contrast against what is behind it (WCAG 1.4.11), which axe does not check.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.staff.support import add_staff, sign_in_link
from tests.support import confirm_link, lessons_to, wait_for
from tests.web.browser import LiveServer, axe_violations, fits_the_screen, record_errors

EDITOR, REVIEWER, READER = "ed@centre.org", "rita@centre.org", "reader@example.org"
# The narrowest screen WCAG 1.4.10 asks a page to fit, and addresses long enough to need it.
NARROW = {"width": 320, "height": 640}
LONG_ADMIN = "margaritagonzalezwhitfield@northernrecoverycentre.org"  # no hyphen to break at
LONG_READER = "siobhanfitzgeraldoyelaranfamily@examplemailprovider.org"
# Staff write at a desk: wide enough for the editor and its preview side by side.
DESK = {"width": 1280, "height": 900}
# Long enough for a slow CI machine, short enough that a broken step fails quickly.
WAIT_MS = 10_000

# Each lesson names the reader's relationship and substance, so a preview for one reader
# reads differently from a preview for another.
BODY = (
    "{% if first_name %}Hi {{ first_name }},{% else %}Hello,{% endif %}\n\n"
    "{% if relationship == 'partner' %}Your partner{% else %}Someone you love{% endif %} may be "
    "using {% if substance == 'alcohol' %}alcohol{% else %}drugs{% endif %}. {text}\n"
)
SOURCE = "SAMHSA National Helpline | https://www.samhsa.gov/find-help/national-helpline"


@pytest.fixture
def site(settings, clock, mini_course, queued) -> Any:
    from course.web import create_app

    add_staff(settings, clock, EDITOR, "editor")
    # The centre's admin reviews too: admins sign off, publish, and see people and the log.
    add_staff(settings, clock, REVIEWER, "admin")
    settings.sequences = {"en": "mini-course"}
    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with LiveServer(app) as live:
        yield live


def new_tab(browser: Any, **options: Any) -> Any:  # noqa: F811
    """A fresh browser (its own cookies) and a page that remembers what went wrong on it."""
    context = browser.new_context(viewport=DESK, locale="en-US", **options)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.failed = []  # answers of 400 or more, with their address
    page.documents = []  # (address, its Content-Security-Policy) of every staff page and frame

    def answered(response: Any) -> None:
        if response.status >= 400:
            page.failed.append(f"{response.status} {response.url}")
        # A redirect has nothing to show, so no policy to carry; every page it leads to does.
        shown = not 300 <= response.status < 400
        if shown and "/staff" in response.url and response.request.resource_type == "document":
            page.documents.append((response.url, response.headers.get("content-security-policy")))

    page.on("response", answered)
    record_errors(page)
    return page


def check_page(page: Any, expect_status_errors: int = 0) -> str:
    """axe finds nothing; the title is the heading; the page (and any frame in it) came with
    its Content-Security-Policy; nothing failed or was logged as an error. Returns the heading."""
    assert axe_violations(page) == [], page.url
    heading: str = page.inner_text("h1").strip()
    assert page.title() == f"{heading} — Homeward staff", page.url
    assert page.documents, "the page was loaded"
    for url, policy in page.documents:
        assert policy and "default-src" in policy and "frame-ancestors" in policy, url
    assert len(page.failed) == expect_status_errors, page.failed
    assert page.errors == [], page.errors
    page.failed.clear()
    page.documents.clear()
    return heading


# --- the keyboard ----------------------------------------------------------------------------

# The focused element's focus ring: its style, width, and its contrast against the nearest
# background behind it (the ring is drawn outside the element, on its parent's background).
FOCUS_RING = """el => {
  const s = getComputedStyle(el);
  const rgba = c => c.match(/[\\d.]+/g).map(Number);
  let behind = [255, 255, 255];
  for (let p = el.parentElement; p; p = p.parentElement) {
    const c = rgba(getComputedStyle(p).backgroundColor);
    if (c.length < 4 || c[3] > 0) { behind = c; break; }
  }
  const lum = c => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [hi, lo] = [lum(rgba(s.outlineColor)), lum(behind)].sort((x, y) => y - x);
  return {style: s.outlineStyle, width: parseFloat(s.outlineWidth),
          contrast: (hi + 0.05) / (lo + 0.05), tag: el.tagName,
          where: el.outerHTML.slice(0, 120)};
}"""


def tab_to(page: Any, selector: str, *, back: bool = False, most: int = 80) -> None:
    """Press Tab (Shift+Tab with `back`) until `selector` has the focus, as a keyboard user
    would: it must be reachable, and every stop on the way must show where the focus is."""
    target = page.locator(selector)
    for _ in range(most):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        ring = page.evaluate(f"() => ({FOCUS_RING})(document.activeElement)")
        # Inside the preview the email's own styles apply; on <body> nothing has the focus (Tab
        # went past the last stop to the browser's own controls, or out of the preview while
        # it loads): neither is a stop on the page.
        if ring["tag"] not in ("IFRAME", "BODY"):
            where = ring["where"]  # read with the ring, in one go: the focus may move on
            assert ring["style"] != "none" and ring["width"] >= 2, f"no focus ring on {where}"
            assert ring["contrast"] >= 3, f"a faint focus ring ({ring['contrast']:.1f}:1) {where}"
        if target.evaluate_all("found => found.includes(document.activeElement)"):
            return
    pytest.fail(f"{selector} is not reachable by the keyboard on {page.url}")


def type_into(page: Any, selector: str, text: str) -> None:
    """Tab to a field, select what it holds and type over it."""
    tab_to(page, selector)
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


def press(page: Any, key: str = "Enter") -> None:
    """Press a key on the focused control and wait for the page it leads to."""
    with page.expect_navigation():
        page.keyboard.press(key)


def notice(page: Any) -> str:
    return str(page.inner_text("[role=status]")).strip()


def sign_in(page: Any, site: Any, smtp: Any, email: str) -> None:
    """Ask for a link, open it from the email, press the button: by keyboard."""
    page.goto(site.url + "/staff/sign-in")
    assert check_page(page) == "Staff sign-in"
    # The first Tab reaches the skip link, which shows itself and moves the focus to the page.
    page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    box = skip.bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0, "the skip link shows on focus"
    type_into(page, "#email", email)
    press(page)  # Enter in the field sends the form
    assert check_page(page) == "Check your email"
    # The email goes out just after the answer (so an unknown address answers as fast).
    wait_for(lambda: bool(smtp.to(email)), 10, "the sign-in email")
    assert [str(m["Subject"]) for m in smtp.to(email)][-1] == "Your sign-in link for Homeward staff"
    page.goto(site.url + sign_in_link(smtp, email))  # as if opened from the email
    assert check_page(page) == "Sign in to Homeward staff"
    tab_to(page, "button[type=submit]")
    press(page)
    assert check_page(page) == "Courses"


def preview_text(page: Any) -> Any:
    """The email in the preview frame, as the reader would read it."""
    return page.frame_locator("#preview iframe").locator("body")


def write_lesson(page: Any, *, subject: str, preheader: str, text: str) -> None:
    """Fill in a lesson's fields by keyboard, watching the preview follow the typing."""
    from playwright.sync_api import expect

    type_into(page, "#subject", subject)
    type_into(page, "#preheader", preheader)
    type_into(page, "#body", BODY.replace("{text}", text))
    # Unsaved, the preview already shows it: htmx posts the typed fields and swaps the frame.
    expect(preview_text(page)).to_contain_text(text, timeout=WAIT_MS)
    type_into(page, "#sources", SOURCE)
    # The preview follows this typing too: let it land before tabbing on (tabbing through the
    # frame while htmx swaps it would move the focus under the keyboard's feet).
    expect(preview_text(page)).to_contain_text("SAMHSA National Helpline", timeout=WAIT_MS)
    tab_to(page, "button:text('Save and preview')")
    press(page)


def test_staff_write_review_and_publish_a_course_by_keyboard_and_a_reader_gets_it(
    site, browser, smtp, intake, deliver
):
    from playwright.sync_api import expect

    # --- the editor -------------------------------------------------------------------------
    page = new_tab(browser)
    sign_in(page, site, smtp, EDITOR)
    assert "Mini course" in page.inner_text("table")

    tab_to(page, "a:text('Write a new course')")
    press(page)
    assert check_page(page) == "Write a new course"
    type_into(page, "#title", "For partners")
    type_into(page, "#slug", "For Partners")
    tab_to(page, "button:text('Create the course')")
    press(page)
    # A mistake: the summary at the top takes the focus and links to the field it names.
    assert page.evaluate("() => document.activeElement.id") == "error-summary"
    assert "lower-case letters, digits and dashes" in page.inner_text("#error-summary")
    assert page.get_attribute("#slug", "aria-invalid") == "true"
    assert "slug-error" in (page.get_attribute("#slug", "aria-describedby") or "")
    assert check_page(page, expect_status_errors=1) == "Write a new course"  # a 422
    tab_to(page, "#error-summary a")
    page.keyboard.press("Enter")  # the link takes the focus to the field
    assert page.evaluate("() => document.activeElement.id") == "slug"
    assert page.input_value("#title") == "For partners", "what was typed is kept"
    page.keyboard.press("Control+A")
    page.keyboard.type("partners")
    tab_to(page, "button:text('Create the course')")
    press(page)
    assert check_page(page) == "Draft: For partners"

    # Lesson 1: a subject that names the topic is a problem the checker explains.
    tab_to(page, "a:text('(no subject yet)')")
    press(page)
    assert check_page(page) == "Lesson 1: welcome"
    write_lesson(
        page,
        subject="What to do in an overdose",
        preheader="One small idea, and one step to try.",
        text="You do not have to do this alone. Call a friend today.",
    )
    assert notice(page) == "Saved."
    findings = page.inner_text("section[aria-labelledby=findings-heading]")
    assert "To fix:" in findings and "'overdose'" in findings and "lock screen" in findings
    assert check_page(page) == "Lesson 1: What to do in an overdose"
    type_into(page, "#subject", "A note for this week")
    tab_to(page, "button:text('Save and preview')")
    press(page)
    assert "The checker finds nothing to fix" in page.inner_text("main")
    assert check_page(page) == "Lesson 1: A note for this week"

    # Two readers: the frame reads differently for each, live and once saved.
    expect(preview_text(page)).to_contain_text("Someone you love may be using drugs.")
    tab_to(page, "#relationship")
    page.keyboard.type("partner")  # a closed list picks the option typed
    tab_to(page, "#substance")
    page.keyboard.type("alcohol")
    assert page.input_value("#relationship") == "partner"
    expect(preview_text(page)).to_contain_text("Your partner may be using alcohol.")
    tab_to(page, "button:text('Save and preview')")
    press(page)
    assert page.input_value("#substance") == "alcohol", "the reader chosen stays chosen"
    expect(preview_text(page)).to_contain_text("Your partner may be using alcohol.")
    check_page(page)

    # A test to themselves, as that reader would get it.
    tab_to(page, "button:text('Send this lesson to me as a test')")
    press(page)
    assert notice(page) == "Sent to your own address, marked as a test."
    check_page(page)
    [test] = [m for m in smtp.to(EDITOR) if str(m["Subject"]).startswith("[TEST]")]
    assert test["Subject"] == "[TEST] lesson 1: A note for this week"
    assert "Your partner may be using alcohol." in test.get_body(("plain",)).get_content()

    # Two more lessons.
    for number, subject, text in (
        (2, "Something to try this week", "Pick one calm time to talk."),
        (3, "A small step for you", "Rest is part of helping."),
    ):
        tab_to(page, "a:text('Back to For partners')")
        press(page)
        assert check_page(page) == "Draft: For partners"
        tab_to(page, "button:text('Add a lesson')")
        press(page)
        assert check_page(page) == f"Lesson {number}: lesson-{number}"
        write_lesson(page, subject=subject, preheader="A few minutes to read.", text=text)
        assert "The checker finds nothing to fix" in page.inner_text("main")
        assert check_page(page) == f"Lesson {number}: {subject}"

    tab_to(page, "a:text('Back to For partners')")
    press(page)
    lessons = page.locator("table tbody tr")
    assert lessons.count() == 3
    assert [lessons.nth(n).locator("td").nth(4).inner_text().split("\n")[0] for n in range(3)] == [
        "OK",
        "OK",
        "OK",
    ]
    check_page(page)
    tab_to(page, "button:text('Submit for review')")
    press(page)
    assert notice(page) == "Submitted for review."
    assert "Waiting for a reviewer." in page.inner_text("main")
    check_page(page)

    # --- the reviewer, in a browser of their own ----------------------------------------------
    page = new_tab(browser)
    sign_in(page, site, smtp, REVIEWER)
    tab_to(page, "a:text('For partners')")
    press(page)
    assert check_page(page) == "For partners"
    assert "Not published yet." in page.inner_text("table")
    tab_to(page, "a:text('Open the draft (in review)')")
    press(page)
    assert check_page(page) == "Draft: For partners"
    tab_to(page, "a:text('Read the changes and sign off')")
    press(page)
    assert check_page(page) == "Review: For partners"
    changes = page.locator("main h3").all_inner_texts()
    assert changes == ["welcome: added", "lesson-2: added", "lesson-3: added"]
    assert "+subject: A note for this week" in page.inner_text("main")
    tab_to(page, "#review_by")  # a year from now unless changed: kept
    tab_to(page, "button:text('Sign it off')")
    press(page)
    assert notice(page) == "Signed off. A reviewer or an admin can publish it now."
    assert f"signed off by {REVIEWER}" in page.inner_text("main")
    check_page(page)
    tab_to(page, "button:text('Publish')")
    press(page)
    assert notice(page).startswith("Published: new readers get this version")
    check_page(page)
    tab_to(page, "a:text('See its versions')")
    press(page)
    assert check_page(page) == "For partners"
    assert "1 (current)" in page.inner_text("table") and REVIEWER in page.inner_text("table")

    # The sign-up page offers it beside the course it had.
    tab_to(page, "nav a:text('Sign-up page')")
    press(page)
    assert check_page(page) == "What the sign-up page offers"
    tab_to(page, "input[name='offer:partners']")
    page.keyboard.press("Space")
    tab_to(page, "button:text('Save')")
    press(page)
    assert notice(page) == "Saved."
    assert page.is_checked("input[name='offer:partners']")
    assert page.is_checked("input[name='offer:mini-course']")
    check_page(page)

    tab_to(page, "nav a:text('People')")
    press(page)
    assert check_page(page) == "People and API tokens"
    assert EDITOR in page.inner_text("table")
    tab_to(page, "nav a:text('Audit log')")
    press(page)
    assert check_page(page) == "Audit log"
    log = page.inner_text("table")
    for action in ("draft.submit", "draft.sign_off", "course.publish", "offer.choose"):
        assert action in log

    # --- a reader ------------------------------------------------------------------------------
    page = new_tab(browser)
    page.goto(site.url + "/")
    courses = page.locator("#sequence option").all_inner_texts()
    assert "For partners (English)" in courses and "Mini course (English)" in courses
    page.fill("#email", READER)
    page.select_option("#relationship", "partner")
    page.select_option("#substance", "alcohol")
    page.select_option("#sequence", label="For partners (English)")
    page.click("button[type=submit]")
    assert page.inner_text("h1") == "Please check your email"
    intake()
    deliver()
    page.goto(site.url + confirm_link(smtp.to(READER)[0]))
    assert "on its way" in page.inner_text("h1")
    deliver()
    [first] = lessons_to(smtp, READER)
    assert first["Subject"] == "A note for this week"
    assert "Your partner may be using alcohol." in first.get_body(("plain",)).get_content()
    assert re.search(r"SAMHSA National Helpline", first.get_body(("plain",)).get_content())


def test_staff_help_a_reader_and_read_the_dashboard_by_keyboard(
    site, browser, smtp, settings, clock, deliver
):
    """A counsellor finds a caller by address, pauses their course and sends a lesson again;
    the dashboard shows its charts with their numbers; axe finds nothing on any of the pages."""
    from tests.support import signup

    signup(settings, clock, deliver, smtp, READER, first_name="Rosa")
    deliver()  # lesson 1
    page = new_tab(browser)
    sign_in(page, site, smtp, REVIEWER)
    tab_to(page, "header a:text('Readers')")
    press(page)
    assert check_page(page) == "Find a reader"
    type_into(page, "#email", "nobody@example.org")
    press(page)
    assert check_page(page, expect_status_errors=1) == "Find a reader"  # a 404, said plainly
    assert page.evaluate("() => document.activeElement.id") == "error-summary"
    type_into(page, "#email", READER)
    press(page)
    assert re.fullmatch(r"Reader \d+", check_page(page))
    assert READER in page.inner_text("main") and READER not in page.title()
    assert "Lesson 1: Welcome, Rosa" in page.inner_text("main")
    tab_to(page, "button:text('Pause')")
    press(page)
    assert "Paused" in notice(page) and check_page(page).startswith("Reader ")
    tab_to(page, "button:text('Send it again')")
    press(page)
    assert "on its way again" in notice(page)
    page.goto(site.url + "/staff/courses/mini-course/dashboard")
    assert check_page(page) == "How “Mini course” is doing"
    assert page.locator("svg[role=img]").count() == 2
    tab_to(page, "summary:text('The numbers')")
    page.keyboard.press("Enter")
    assert page.locator("details table").is_visible()
    page.set_viewport_size({"width": 375, "height": 667})  # a counsellor's phone
    assert axe_violations(page) == []
    page.context.close()


def test_an_admin_connects_a_system_on_a_phone_and_copies_its_secret(browser, site, smtp):
    """The Webhooks page on a counsellor's phone (320 px): a long address and the secret fit
    the screen, the table of endpoints scrolls in its own box, and every control is reachable
    by keyboard."""
    page = new_tab(browser)
    page.set_viewport_size(NARROW)
    sign_in(page, site, smtp, REVIEWER)
    tab_to(page, "header a:text('Webhooks')")
    press(page)
    assert check_page(page) == "Webhooks"
    fits_the_screen(page)
    address = "https://crm.example-treatment-centre.org/hooks/homeward/readers-and-lessons"
    type_into(page, "#url", address)
    tab_to(page, "input[name='event:enrolled']")
    page.keyboard.press("Space")
    tab_to(page, "button:text('Connect')")
    press(page)
    assert check_page(page) == "Webhooks"
    secret = page.inner_text("#new-secret").strip()
    assert secret.startswith("whsec_") and len(secret) > 30
    fits_the_screen(page)  # the secret wraps: all of it can be read and copied
    assert address in page.inner_text("table")
    tab_to(page, f"button[aria-label='Pause {address}']")
    press(page)
    assert check_page(page) == "Webhooks"
    assert "Paused" in page.inner_text("table") and page.locator("#new-secret").count() == 0
    fits_the_screen(page)
    page.context.close()


def test_every_staff_page_fits_a_phone(site, browser, smtp, settings, clock, deliver):
    """A counsellor on a phone (320 px, the width WCAG 1.4.10 asks for) reads every staff page
    without scrolling the page sideways, long addresses included: wide tables scroll in their
    own box, and axe finds nothing at that width either."""
    from sqlmodel import select

    from course.db import engine_for, session_scope
    from course.models import Subscriber
    from tests.support import signup

    add_staff(settings, clock, LONG_ADMIN, "admin")
    signup(settings, clock, deliver, smtp, LONG_READER, first_name="Siobhán")
    with session_scope(engine_for(settings.database_url)) as session:
        reader = session.exec(select(Subscriber).where(Subscriber.email == LONG_READER)).one().id
    page = new_tab(browser)
    page.set_viewport_size(NARROW)
    page.goto(site.url + "/staff/sign-in")
    fits_the_screen(page)
    sign_in(page, site, smtp, LONG_ADMIN)  # shown in the header of every page
    course = "/staff/courses/mini-course"
    for path in (
        *("/staff", course, f"{course}/dashboard", "/staff/courses/new", "/staff/import"),
        *("/staff/readers", f"/staff/readers/{reader}", "/staff/enroll", "/staff/offer"),
        *("/staff/people", "/staff/audit", "/staff/webhooks"),
    ):
        page.goto(site.url + path)
        check_page(page)
        fits_the_screen(page)
    page.goto(site.url + "/staff/people")
    type_into(page, "#token-name", "The centre's case-management system")
    tab_to(page, "button:text('Make a token')")
    press(page)
    assert check_page(page) == "People and API tokens"
    assert len(page.inner_text("#new-token").strip()) > 30
    fits_the_screen(page)  # the token, shown once, wraps
    page.goto(site.url + course)
    tab_to(page, "button:text('Edit this course')")
    press(page)
    assert check_page(page).startswith("Draft: ")
    fits_the_screen(page)
    draft = page.url
    page.click("table a >> nth=0")  # the first lesson, in the editor
    check_page(page)
    fits_the_screen(page)
    page.goto(draft + "/review")  # the changes, as a reviewer reads them
    check_page(page)
    fits_the_screen(page)
    page.context.close()
