"""CI: the torch here is the release asked for, ``python .ci/check_torch_version.py 2.15.0``.

The README's install must leave a supported torch that is already there as it is
(never downgrade or replace it); CI installs a release first, then the README's
install, then runs this. A local version label (``2.13.0+cpu``) counts as the same release.
"""

from __future__ import annotations

import sys

import torch


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python .ci/check_torch_version.py VERSION", file=sys.stderr)
        return 2
    wanted, found = argv[0], torch.__version__.split("+")[0]
    if found != wanted:
        print(f"torch {torch.__version__} here, {wanted} expected: the install replaced it")
        return 1
    print(f"torch {torch.__version__}: as installed before the README's install")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
