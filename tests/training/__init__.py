"""Tests for the training-side helpers."""
