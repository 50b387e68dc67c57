"""Tests of course.cli (see the package of the same name)."""
