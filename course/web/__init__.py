"""The HTTP face of Homeward: public pages, the enroll API, confirm and unsubscribe links."""

from course.web.app import create_app, serving_app

__all__ = ["create_app", "serving_app"]
