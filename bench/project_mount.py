"""Issue 13's project-mount speed in the real VM: each way an env reaches its project (the share directly in
userns mode, bindfs --map) against the same operation directly on the guest's mount of each share, one run.

usage (root; boots the VM of tests/vm/): python3 bench/project_mount.py [--files N] [--kernel stable|backports]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.vm.measure import main

if __name__ == "__main__":
    main()
