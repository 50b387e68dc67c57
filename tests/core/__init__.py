"""Tests of the core modules: clock, schedule, tokens, render, message, errors, settings."""
