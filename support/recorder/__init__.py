"""Recorder: every feed record to daily files; structured log lines from log and denial records."""
