"""Tests of the data layer: the engine, sessions and migrations."""
