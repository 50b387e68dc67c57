"""Every public page in a real browser, on a phone-sized screen: what a frightened reader meets
from sign-up to erasing their data, with axe-core finding no WCAG 2.2 AA violation anywhere,
nothing wider than the phone (every email too), each page's title matching its heading, and no
request answered with an error along the way."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support import confirm_link, data_link, stage_token, unsubscribe_link
from tests.web.browser import PHONE, LiveServer, axe_violations, fits_the_screen, record_errors

# An address as long as some are, with no hyphen or dot late enough to break at: it must still
# fit the phone wherever a page or an email shows it.
READER = "siobhanfitzgeraldoyelaranfamily@examplemailprovider.org"


@pytest.fixture
def site(settings, clock, family_guides, queued) -> Any:
    from course.web import create_app

    app = create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def phone(browser, site) -> Any:  # noqa: F811
    # A reader in Denver: not the list's first time zone, so the page's own script must pick it.
    context = browser.new_context(
        viewport=PHONE,
        locale="en-US",
        timezone_id="America/Denver",
        is_mobile=True,
        has_touch=True,
    )
    page = context.new_page()
    page.failed = []  # every answer of 400 or more the page received, with its address
    page.policies = []  # the Content-Security-Policy of every page shown

    def answered(response: Any) -> None:
        if response.status >= 400:
            page.failed.append(f"{response.status} {response.url}")
        # A redirect has nothing to show, so no policy to carry; the page it leads to has one.
        if response.request.resource_type == "document" and not 300 <= response.status < 400:
            page.policies.append(response.headers.get("content-security-policy"))

    page.on("response", answered)
    record_errors(page)
    yield page
    context.close()


def check_page(page: Any, expect_status_errors: int = 0) -> str:
    """axe finds nothing; nothing is wider than the phone; the title is the heading; no request
    failed (one, when the page itself is an error page); the page came with its policy (no
    framing, scripts only by nonce) and the browser refused nothing. Returns the heading."""
    assert axe_violations(page) == [], page.url
    fits_the_screen(page)
    heading: str = page.inner_text("h1").strip()
    assert page.title() == f"{heading} — Homeward", page.url
    assert len(page.failed) == expect_status_errors, page.failed
    assert page.policies, "the page was loaded"
    for policy in page.policies:
        assert policy and "frame-ancestors 'none'" in policy, page.url
        assert "script-src 'nonce-" in policy and "unsafe-inline" not in policy.split(";")[1]
    assert page.errors == [], page.errors
    page.failed.clear()
    page.policies.clear()
    return heading


def check_email(page: Any, message: Any) -> None:
    """An email's HTML part, opened as a mail app would show it, is accessible too."""
    html_part = message.get_body(preferencelist=("html",)).get_content()
    page.set_content(html_part)
    assert axe_violations(page) == [], message["Subject"]
    fits_the_screen(page)
    for link in page.locator('a[href^="tel:"]').all():
        assert link.evaluate("a => getComputedStyle(a).whiteSpace") == "nowrap"


def test_a_reader_from_sign_up_to_erasing_their_data(site, phone, smtp, deliver, settings):
    page = phone
    page.goto(site.url + "/")
    assert check_page(page).startswith("You are not alone")
    assert page.locator('a[href="tel:911"]').count() >= 1
    # The page's script, allowed by its nonce, chose the phone's own time zone.
    assert page.input_value("#time_zone") == "America/Denver"

    # A mistake in the address: the summary at the top gets the focus, and names the field.
    page.fill("#email", "not-an-address")
    page.click("button[type=submit]")
    page.wait_for_selector("#error-summary")
    assert page.evaluate("document.activeElement.id") == "error-summary"
    box = page.locator("#error-summary").bounding_box()
    assert box is not None and box["y"] < PHONE["height"] / 2, "the error is on screen"
    assert page.get_attribute("#email", "aria-invalid") == "true"
    assert page.get_attribute("#email", "aria-describedby") == "email-error"
    assert "does not look right" in page.inner_text("#email-error")
    check_page(page, expect_status_errors=1)  # the form's own answer is a 422

    page.fill("#email", READER)
    page.fill("#first_name", "Siobhán")
    page.click("button[type=submit]")
    assert check_page(page) == "Please check your email"

    deliver()
    [confirmation] = smtp.to(READER)
    check_email(page, confirmation)
    html_part = confirmation.get_body(preferencelist=("html",)).get_content()
    assert re.search(r'<p class="action"[^>]*><a href="https://homeward\.test/confirm/', html_part)
    page.goto(site.url + confirm_link(confirmation))
    assert "on its way" in check_page(page)

    deliver()
    lesson = smtp.to(READER)[-1]
    check_email(page, lesson)
    page.goto(site.url + "/stage/" + str(stage_token(lesson)))
    assert check_page(page) == "Has your loved one started treatment?"
    page.click("button[type=submit]")
    assert check_page(page) == "Thank you for telling us"

    page.goto(site.url + unsubscribe_link(lesson))
    assert check_page(page) == "Stop the lessons?"
    page.click("text=Email me a link to my data")
    assert check_page(page) == "Please check your email"
    deliver()
    [data_email] = [m for m in smtp.to(READER) if "your data" in m["Subject"]]
    check_email(page, data_email)
    mine = site.url + data_link(data_email)
    page.goto(mine)
    assert check_page(page) == "What we hold about you"

    # Erasing takes two presses, the second on a red button on a page of its own.
    page.click("text=Erase my data")
    assert check_page(page) == "Erase everything we hold about you?"
    danger = page.locator("button.danger")
    assert danger.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(164, 22, 26)"
    danger.click()
    assert check_page(page) == "Your data is erased"

    page.goto(mine)
    assert check_page(page, expect_status_errors=1) == "This link has ended"


@pytest.mark.parametrize(
    ("path", "heading", "errors"),
    [
        ("/?lang=es", "No tiene que vivir esto a solas", 0),
        ("/crisis", "What to do in an overdose", 0),
        ("/crisis?lang=es", "Qué hacer en una sobredosis", 0),
        ("/no-such-page", "Something is not right", 1),
        ("/confirm/not-a-real-link", "Something is not right", 1),
    ],
)
def test_every_other_page_is_accessible_and_titled_by_its_heading(
    phone, site, path, heading, errors
):
    phone.goto(site.url + path)
    assert check_page(phone, expect_status_errors=errors).startswith(heading)


def test_the_crisis_page_covers_alcohol_stimulants_and_mixing_with_numbers_a_tap_away(phone, site):
    phone.goto(site.url + "/crisis")
    text = phone.inner_text("main")
    for words in (
        "alcohol poisoning",
        "Naloxone does not reverse alcohol",
        "Stimulants",
        "benzodiazepines",
        "1-800-799-7233",
    ):
        assert words in text
    for number in ("911", "988", "1-800-662-4357", "1-800-222-1222", "1-800-799-7233"):
        link = phone.locator(f'main a:text-is("{number}")').first
        assert link.get_attribute("href").startswith("tel:"), number
        assert link.evaluate("a => getComputedStyle(a).whiteSpace") == "nowrap"
    phone.goto(site.url + "/crisis?lang=es")
    assert "marque 2 para español" in phone.inner_text("main") and "AYUDA" in phone.inner_text(
        "main"
    )


def test_the_favicon_is_served(site):
    import httpx

    answer = httpx.get(site.url + "/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/x-icon"
    assert answer.content[:4] == b"\x00\x00\x01\x00"  # an ICO file


def _preferences_path(message: Any) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https://homeward\.test(/preferences/[\w.\-]+)", text)
    assert found, "every email links to the reader's preferences"
    return found.group(1)


def test_the_preferences_page_on_a_phone_pause_dates_and_discretion(
    site, phone, smtp, deliver, settings, intake
):
    page = phone
    page.goto(site.url + "/")
    page.fill("#email", "prefs@example.org")
    page.click("button[type=submit]")
    intake()
    deliver()
    page.goto(site.url + confirm_link(smtp.to("prefs@example.org")[0]))
    deliver()
    lesson = smtp.to("prefs@example.org")[-1]
    mine = site.url + _preferences_path(lesson)
    page.goto(mine)
    assert check_page(page) == "Your emails"
    assert "Your next email comes on" in page.inner_text("main")

    # A date in the past: the summary takes the focus and names the field.
    page.fill("#conversation_on", "2020-01-01")
    page.click("text=Save the dates")
    page.wait_for_selector("#error-summary")
    assert page.evaluate("document.activeElement.id") == "error-summary"
    assert page.get_attribute("#conversation_on", "aria-invalid") == "true"
    check_page(page, expect_status_errors=1)

    page.check("#discreet")
    page.locator("form:has(#discreet) button[type=submit]").click()
    assert check_page(page) == "Your emails"
    assert "Saved. It applies from your next email." in page.inner_text("main")
    assert page.is_checked("#discreet")

    page.check("input[name=how_long][value=resumed]")
    page.click("text=Pause my emails")
    assert "paused until you start them again" in page.inner_text("main")
    check_page(page)
    deliver()
    [paused] = [m for m in smtp.to("prefs@example.org") if "/resume" in str(m)]
    assert paused["Subject"] == "A note for you", "discreet from the next email on"
    check_email(page, paused)
    page.goto(mine + "/resume")
    assert check_page(page) == "Start your emails again?"
    page.click("text=Start my emails again")
    assert check_page(page) == "Your emails"
    assert "paused" not in page.inner_text("[role=status]")

    page.goto(mine + "?lang=es")
    assert check_page(page) == "Sus correos"

    # "Was this helpful?" from the lesson: a kind page, accessible too.
    helpful = re.search(
        r"https://homeward\.test(/helpful/\S+/yes)",
        lesson.get_body(preferencelist=("plain",)).get_content(),
    )
    assert helpful
    page.goto(site.url + helpful.group(1))
    assert "Thank you" in check_page(page)
