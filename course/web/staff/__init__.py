"""The staff side of the web app: pages under /staff and the same actions as JSON under
/api/staff. Every route needs a signed-in session (a cookie, from an emailed one-time link) or
an API token; every action lands in the audit log (course.staff.audit)."""
