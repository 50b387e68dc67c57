"""Tests of course.web (see the package of the same name)."""
