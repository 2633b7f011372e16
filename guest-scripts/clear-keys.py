#!/usr/bin/python3
"""Empty the calling uid's user and user-session keyrings (run by delete as the env's uid).

The kernel keeps a uid's user keyrings after its last process has ended; delete clears them
so nothing an env stored there outlives it.
"""

import ctypes
import os

SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}[os.uname().machine]
KEYCTL_GET_KEYRING_ID, KEYCTL_CLEAR = 0, 7
KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING = -4, -5

libc = ctypes.CDLL(None, use_errno=True)
for spec in (KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING):
    serial = libc.syscall(SYS_KEYCTL, KEYCTL_GET_KEYRING_ID, spec, 0)
    if serial > 0:
        libc.syscall(SYS_KEYCTL, KEYCTL_CLEAR, serial)
