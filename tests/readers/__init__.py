"""Tests of course.readers (see the package of the same name)."""
