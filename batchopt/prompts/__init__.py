"""Turning rows into requests: sandboxed templates and token counts."""
