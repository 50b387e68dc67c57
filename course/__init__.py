"""Homeward: an email course for families of someone who may be misusing opioids or other drugs."""
