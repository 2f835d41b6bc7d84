"""``python -m moe_lora ...``: the ``moe-lora`` command (``moe_lora.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
