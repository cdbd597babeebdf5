"""Collapsing rows that would send the same request, so each distinct request is paid once."""
