"""Logs and metrics.
"""
