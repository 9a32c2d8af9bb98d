"""The ``switchboard`` command and its subcommands.
"""
