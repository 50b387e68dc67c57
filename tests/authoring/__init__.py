"""Tests of course.authoring (see the package of the same name)."""
