"""Tests of course.sending (see the package of the same name)."""
