"""Helpers for the app's end-to-end and browser tests: serving app.py in a subprocess, driving Chromium."""
