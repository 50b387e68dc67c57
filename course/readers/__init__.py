"""Readers: signing up, confirming, their links, their preferences and their own data."""
