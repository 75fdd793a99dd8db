"""Routing a question across several collections (indexes): which ones to search (``router``)."""
