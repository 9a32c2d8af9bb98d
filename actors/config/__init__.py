"""Configuration: the one place that reads the environment, and what it builds.
"""
