"""``llima-box serve``: an SSH server where each account lands in its own project environments.

Runs as root on the box; imports paramiko, so only the ``serve`` command loads it.
"""
