"""Tests that need no server: transforms, validators, config building."""
