"""Sweep side of groupsweep: sweep specs, presets, the Ray Tune launcher and the command line."""
